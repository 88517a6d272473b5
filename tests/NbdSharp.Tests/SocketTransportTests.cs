using System;
using System.Globalization;
using System.IO;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The libc data path's own count of the calls using a descriptor (SocketTransport's _uses): a disposed transport
/// refuses new calls as a closed connection, and its descriptor is closed once, by whoever leaves last.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")] // each test skips first where the libc path is off
public sealed class SocketTransportTests
{
    private static unsafe (FileDescriptorHandle Ours, FileDescriptorHandle Peer) Pair()
    {
        int* fds = stackalloc int[2];
        Assert.Equal(0, LibC.SocketPair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, fds));
        return (new FileDescriptorHandle(fds[0]), new FileDescriptorHandle(fds[1]));
    }

    /// <summary>The calling thread's kernel id, from /proc/thread-self (a link to <c>PID/task/TID</c>).</summary>
    private static int ThreadId() =>
        int.Parse(Path.GetFileName(new FileInfo("/proc/thread-self").LinkTarget!), CultureInfo.InvariantCulture);

    /// <summary>Whether thread <paramref name="tid"/> is blocked in poll or ppoll right now.</summary>
    private static bool InPoll(int tid)
    {
        if (tid == 0)
            return false;
        string call = File.ReadAllText($"/proc/self/task/{tid}/syscall").Split(' ')[0];
        return RuntimeInformation.ProcessArchitecture == Architecture.X64
            ? call is "7" or "271" // poll, ppoll
            : call is "73"; // ppoll (arm64 has no poll)
    }

    [Fact]
    public void Disposed_RefusesEveryCall_AndClosesTheDescriptor()
    {
        Assert.SkipUnless(SocketTransport.UseLibC, "the portable path keeps its descriptor in a Socket");
        (FileDescriptorHandle ours, FileDescriptorHandle peer) = Pair();
        using (peer)
        {
            var transport = new SocketTransport(ours, unix: true);
            transport.Send("ping"u8);
            Assert.False(ours.IsClosed);

            transport.Dispose();
            Assert.True(ours.IsClosed);
            byte[] buffer = new byte[8];
            Assert.Equal(Errno.ENOTCONN, Assert.Throws<TransportException>(() => transport.Receive(buffer)).Errno);
            Assert.Equal(Errno.ENOTCONN, Assert.Throws<TransportException>(() => transport.TryReceive(buffer)).Errno);
            Assert.Equal(Errno.ENOTCONN, Assert.Throws<TransportException>(() => transport.TrySend("x"u8, default)).Errno);
            Assert.True(transport.WaitReadable(0));
            Assert.True(transport.WaitWritable(0));
            Assert.Equal((true, true), transport.WaitReadableOrWritable(0));
            Assert.Equal(-1, transport.RoomToSend());
            transport.ShutdownSend();
            transport.Abort();
            transport.Dispose();
            Assert.True(ours.IsClosed);
        }
    }

    [Fact]
    public async Task DisposeDuringAReceive_EndsIt_ThenTheLastUserCloses()
    {
        Assert.SkipUnless(SocketTransport.UseLibC, "the portable path keeps its descriptor in a Socket");
        (FileDescriptorHandle ours, FileDescriptorHandle peer) = Pair();
        using (peer)
        {
            var transport = new SocketTransport(ours, unix: true);
            int tid = 0;
            Task<int> receive = Task.Factory.StartNew(() =>
            {
                Volatile.Write(ref tid, ThreadId());
                try
                {
                    return transport.Receive(new byte[8]); // waits in poll: nothing was sent
                }
                catch (TransportException e) when (e.Errno == Errno.ENOTCONN)
                {
                    return -1; // reached the descriptor only after Dispose
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            // Dispose while the receive is inside, waiting in poll(2) (as the kernel shows the thread).
            Assert.True(SpinWait.SpinUntil(() => InPoll(Volatile.Read(ref tid)), TimeSpan.FromSeconds(10)), "the receive never waited in poll");
            Assert.False(receive.IsCompleted);

            // Dispose shuts the socket down, which ends the wait: the receive sees the end of the stream.
            transport.Dispose();
            int received = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(received <= 0, $"received {received}");
            Assert.True(ours.IsClosed);
        }
    }
}
