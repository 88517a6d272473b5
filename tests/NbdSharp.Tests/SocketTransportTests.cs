using System;
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
            using var started = new ManualResetEventSlim();
            Task<int> receive = Task.Factory.StartNew(() =>
            {
                started.Set();
                try
                {
                    return transport.Receive(new byte[8]); // waits in poll: nothing was sent
                }
                catch (TransportException e) when (e.Errno == Errno.ENOTCONN)
                {
                    return -1; // reached the descriptor only after Dispose
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            started.Wait();
            Thread.Sleep(50);
            Assert.False(receive.IsCompleted);

            // Dispose shuts the socket down, which ends the wait: the receive sees the end of the stream.
            transport.Dispose();
            int received = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(received <= 0, $"received {received}");
            Assert.True(ours.IsClosed);
        }
    }
}
