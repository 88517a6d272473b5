using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// libnbd's event-loop contract for the aio calls, shown against nbdkit stopped with SIGSTOP: an aio call queues its
/// request and sends what the socket takes, never blocks and never completes a command; the rest goes out from
/// Poll, AioNotifyWrite or a call that drives the handle, and AioGetDirection says WRITE meanwhile.
/// </summary>
public class AioContractTests
{
    private const int Writes = 64;
    private const int WriteSize = 1 << 20;

    /// <summary>A generous bound for things that happen at once, so that a blocked call fails the test instead of hanging it.</summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>The data of write <paramref name="index"/>: 1 MiB of random bytes, one seed per write.</summary>
    private static byte[] Pattern(int index)
    {
        byte[] data = new byte[WriteSize];
        new Random(index).NextBytes(data);
        return data;
    }

    /// <summary>Polls until nothing is in flight, failing the test past the deadline.</summary>
    private static void PollUntilDone(NbdHandle h)
    {
        DateTime until = DateTime.UtcNow + Deadline;
        while (h.AioInFlight() > 0)
        {
            Assert.True(DateTime.UtcNow < until, "the queued writes did not go out from Poll");
            h.Poll(1000);
        }
    }

    /// <summary>Reads every 1 MiB block back (through <paramref name="h"/>) and compares it with what was written there.</summary>
    private static void AssertWritten(NbdHandle h, List<byte[]> data)
    {
        byte[] back = new byte[WriteSize];
        for (int i = 0; i < data.Count; i++)
        {
            h.Pread(back, (ulong)i * WriteSize);
            Assert.True(back.AsSpan().SequenceEqual(data[i]), $"write {i} reads back different");
        }
    }

    [Fact]
    public void AioWrites_ToAStoppedServer_ReturnAtOnce_AndCompleteNothingUntilPolled()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "128M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);

        // A read whose reply has arrived (the socket is readable) but has not been processed.
        int readCompletions = 0;
        long read = h.AioPread(new byte[4096], 0, (ref int _) =>
        {
            Interlocked.Increment(ref readCompletions);
            return 0;
        });
        Assert.True(Native.WaitReadable(h.AioGetFd(), 10_000));
        server.Signal(Native.SIGSTOP);

        var data = new List<byte[]>();
        for (int i = 0; i < Writes; i++)
            data.Add(Pattern(i));
        var cookies = new List<long>();
        int writeCompletions = 0;
        Task issuing = Task.Run(() =>
        {
            for (int i = 0; i < Writes; i++)
            {
                cookies.Add(h.AioPwrite(data[i], (ulong)i * WriteSize, (ref int error) =>
                {
                    Assert.Equal(0, error);
                    Interlocked.Increment(ref writeCompletions);
                    return 0;
                }));
            }
        });
        Assert.True(issuing.Wait(Deadline), "an aio call blocked on a stopped server");

        // 64 MiB cannot all be in the socket: the rest waits in the queue, and nothing was read or completed.
        Assert.Equal(Writes, cookies.Count);
        Assert.Equal(Writes + 1, h.AioInFlight());
        Assert.Equal(AioDirection.Both, h.AioGetDirection());
        Assert.True(h.AioIsProcessing());
        Assert.False(h.AioIsReady());
        Assert.Equal(0, Volatile.Read(ref readCompletions));
        Assert.Equal(0, Volatile.Read(ref writeCompletions));
        Assert.False(h.AioCommandCompleted(read));
        Assert.Equal(0, h.AioPeekCommandCompleted());

        server.Signal(Native.SIGCONT);
        PollUntilDone(h);
        Assert.Equal(AioDirection.Read, h.AioGetDirection());
        Assert.True(h.AioIsReady());
        Assert.Equal(1, readCompletions);
        Assert.Equal(Writes, writeCompletions);
        Assert.True(h.AioCommandCompleted(read));
        foreach (long cookie in cookies)
            Assert.True(h.AioCommandCompleted(cookie));

        AssertWritten(h, data);
    }

    /// <summary>
    /// Over TLS a send that must not block writes one record once the socket reports room (which the kernel does only
    /// with most of its buffer free): the aio calls still return at once against a stopped server.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AioWrites_OverTls_ToAStoppedServer_ReturnAtOnce(bool psk)
    {
        using var files = new TlsFiles();
        using ServerProcess server = psk
            ? Peers.Nbdkit("--tls=require", "--tls-psk=" + files.PskFile, "memory", "128M")
            : Peers.Nbdkit("--tls=require", "--tls-certificates=" + files.ServerDirectory, "memory", "128M");
        using var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        if (psk)
        {
            h.SetTlsPskFile(files.PskFile);
            h.SetTlsUsername("alice");
        }
        else
        {
            h.SetTlsCertificates(files.TrustOnlyDirectory);
        }
        h.ConnectUnix(server.Socket);
        Assert.True(h.GetTlsNegotiated());
        server.Signal(Native.SIGSTOP);
        var data = new List<byte[]>();
        for (int i = 0; i < Writes; i++)
            data.Add(Pattern(500 + i));
        int completions = 0;
        Task issuing = Task.Run(() =>
        {
            for (int i = 0; i < Writes; i++)
            {
                h.AioPwrite(data[i], (ulong)i * WriteSize, (ref int error) =>
                {
                    Assert.Equal(0, error);
                    Interlocked.Increment(ref completions);
                    return 1;
                });
            }
        });
        Assert.True(issuing.Wait(Deadline), "an aio call blocked on a stopped server over TLS");
        Assert.Equal(Writes, h.AioInFlight());
        Assert.Equal(AioDirection.Both, h.AioGetDirection());
        Assert.Equal(0, Volatile.Read(ref completions));

        server.Signal(Native.SIGCONT);
        PollUntilDone(h);
        Assert.Equal(Writes, completions);
        AssertWritten(h, data);
    }

    [Fact]
    public void OutsideEventLoop_SendsTheQueue_WithAioNotifyWrite()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        int fd = h.AioGetFd();

        server.Signal(Native.SIGSTOP);
        var data = new List<byte[]>();
        for (int i = 0; i < 16; i++)
        {
            data.Add(Pattern(100 + i));
            h.AioPwrite(data[i], (ulong)i * WriteSize, (ref int _) => 1);
        }
        Assert.Equal(AioDirection.Both, h.AioGetDirection());
        server.Signal(Native.SIGCONT);

        // libnbd's loop: poll(2) for what AioGetDirection asks, then tell the handle what happened.
        int notifiedWrites = 0;
        DateTime until = DateTime.UtcNow + Deadline;
        while (h.AioInFlight() > 0)
        {
            Assert.True(DateTime.UtcNow < until, "the outside loop made no progress");
            AioDirection direction = h.AioGetDirection();
            short events = (short)(Native.POLLIN | ((direction & AioDirection.Write) != 0 ? Native.POLLOUT : 0));
            short revents = Native.Poll(fd, events, 1000);
            if ((revents & Native.POLLOUT) != 0 && (h.AioGetDirection() & AioDirection.Write) != 0)
            {
                h.AioNotifyWrite();
                notifiedWrites++;
            }
            if ((revents & Native.POLLIN) != 0)
                h.AioNotifyRead();
        }
        Assert.True(notifiedWrites > 0);
        AssertWritten(h, data);
    }

    [Fact]
    public void AioNotifyWrite_WithNothingQueued_IsInvalid_WhileAioNotifyReadIsNot()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using var h = new NbdHandle();
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.AioNotifyWrite()).Errno);
        h.ConnectUnix(server.Socket);
        Assert.Equal(AioDirection.Read, h.AioGetDirection());
        var e = Assert.Throws<NbdException>(() => h.AioNotifyWrite());
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("invalid in state READY", e.Message, StringComparison.Ordinal);
        h.AioNotifyRead();
        Assert.True(h.AioIsReady());
    }

    [Fact]
    public void Shutdown_AbandonPending_DropsTheUnsentRequests_AndSendsTheRest()
    {
        // One server thread: a request read before NBD_CMD_DISC is answered before it (with more threads nbdkit fails
        // such requests with ESHUTDOWN).
        using ServerProcess server = Peers.Nbdkit("-t", "1", "memory", "128M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        server.Signal(Native.SIGSTOP);
        var errors = new int[Writes];
        var completions = new int[Writes];
        var data = new List<byte[]>();
        for (int i = 0; i < Writes; i++)
        {
            int index = i;
            data.Add(Pattern(200 + i));
            h.AioPwrite(data[i], (ulong)i * WriteSize, (ref int error) =>
            {
                errors[index] = error;
                Interlocked.Increment(ref completions[index]);
                return 1;
            });
        }
        Task shutdown = Task.Run(() => h.Shutdown(ShutdownFlag.AbandonPending));
        server.Signal(Native.SIGCONT);
        Assert.True(shutdown.Wait(Deadline), "Shutdown did not finish");
        Assert.True(h.AioIsClosed());

        Assert.All(completions, count => Assert.Equal(1, count));
        int abandoned = 0;
        using var check = new NbdHandle();
        check.ConnectUnix(server.Socket);
        byte[] back = new byte[WriteSize];
        for (int i = 0; i < Writes; i++)
        {
            check.Pread(back, (ulong)i * WriteSize);
            if (errors[i] == 0)
            {
                Assert.True(back.AsSpan().SequenceEqual(data[i]), $"write {i} succeeded but reads back different");
            }
            else
            {
                Assert.Equal(Errno.ENOTCONN, errors[i]);
                Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0) < 0, $"abandoned write {i} reached the server");
                abandoned++;
            }
        }
        // The requests that were in the socket went out; the ones behind them never left.
        Assert.InRange(abandoned, 1, Writes - 1);
    }

    [Fact]
    public void Shutdown_WithoutFlags_SendsEveryQueuedRequestFirst()
    {
        using ServerProcess server = Peers.Nbdkit("-t", "1", "memory", "128M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        server.Signal(Native.SIGSTOP);
        var data = new List<byte[]>();
        int succeeded = 0;
        for (int i = 0; i < Writes; i++)
        {
            data.Add(Pattern(300 + i));
            h.AioPwrite(data[i], (ulong)i * WriteSize, (ref int error) =>
            {
                if (error == 0)
                    Interlocked.Increment(ref succeeded);
                return 1;
            });
        }
        Task shutdown = Task.Run(() => h.Shutdown());
        server.Signal(Native.SIGCONT);
        Assert.True(shutdown.Wait(Deadline), "Shutdown did not finish");
        Assert.Equal(Writes, succeeded);

        using var check = new NbdHandle();
        check.ConnectUnix(server.Socket);
        AssertWritten(check, data);
    }

    [Fact]
    public void SyncCall_SendsTheAioQueueBeforeItsOwnRequest()
    {
        // One server thread, so that requests are handled in the order they arrive.
        using ServerProcess server = Peers.Nbdkit("-t", "1", "memory", "128M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        server.Signal(Native.SIGSTOP);
        byte[] first = Pattern(400);
        int done = 0;
        for (int i = 0; i < 16; i++)
        {
            h.AioPwrite(first, (ulong)i * WriteSize, (ref int _) =>
            {
                Interlocked.Increment(ref done);
                return 1;
            });
        }
        Assert.Equal(AioDirection.Both, h.AioGetDirection());
        server.Signal(Native.SIGCONT);

        // The synchronous read of the last block is sent after the 16 writes, so it sees the last one's data.
        byte[] back = new byte[WriteSize];
        h.Pread(back, 15UL * WriteSize);
        Assert.True(back.AsSpan().SequenceEqual(first));
        Assert.Equal(AioDirection.Read, h.AioGetDirection());
        // The synchronous call drove the handle: the writes answered before its reply have completed.
        Assert.Equal(16, done);
    }
}
