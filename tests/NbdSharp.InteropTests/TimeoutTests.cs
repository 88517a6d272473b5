using System;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// Beyond libnbd: request and connect timeouts and <see cref="NbdHandle.Cancel"/>. A stalled server (nbdkit's
/// delay filter holding every read for a minute, or a scripted server that never answers) must end in ETIMEDOUT
/// or ECANCELED within about the timeout, with every command in flight completed exactly once, in all three
/// API forms. (nbdkit 1.32.5 may abort when the connection drops under its delayed reads: each test has its own.)
/// </summary>
public class TimeoutTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(1);

    private static ServerProcess StalledReads() =>
        Peers.Nbdkit("--filter=delay", "memory", "1M", "delay-read=60");

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(64)]
    public void RequestTimeout_EndsStalledAioReads_EachOnce(int depth)
    {
        using ServerProcess server = StalledReads();
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        h.SetRequestTimeout(Timeout);
        var calls = new int[depth];
        var errors = new int[depth];
        var buffers = new byte[depth][];
        for (int i = 0; i < depth; i++)
        {
            int index = i;
            buffers[i] = new byte[4096];
            h.AioPread(buffers[i], (ulong)i * 4096, (ref int error) =>
            {
                Interlocked.Increment(ref calls[index]);
                errors[index] = error;
                return 1;
            });
        }
        var clock = Stopwatch.StartNew();
        while (h.AioInFlight() > 0 && clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            try
            {
                h.Poll(-1);
            }
            catch (NbdException)
            {
            }
        }
        Assert.Equal(0, h.AioInFlight());
        Assert.All(calls, c => Assert.Equal(1, c));
        Assert.All(errors, e => Assert.Equal(Errno.ETIMEDOUT, e));
        Assert.True(h.AioIsDead());
        Assert.InRange(clock.Elapsed, Timeout * 0.9, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public void RequestTimeout_EndsAStalledSyncRead_WithAClearMessage()
    {
        using ServerProcess server = StalledReads();
        using var h = new NbdHandle();
        h.SetRequestTimeout(Timeout);
        h.ConnectUri(server.Uri);
        Assert.Equal(Timeout, h.GetRequestTimeout());
        var e = Assert.ThrowsAny<NbdException>(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.ETIMEDOUT, e.Errno);
        Assert.Contains("the server did not reply to read (cookie 1)", e.Message, StringComparison.Ordinal);
        Assert.Contains("request timeout of 1 s", e.Message, StringComparison.Ordinal);
        var after = Assert.Throws<NbdException>(() => h.Flush());
        Assert.Equal(Errno.EINVAL, after.Errno); // dead: new commands fail at once
    }

    [Fact]
    public async Task RequestTimeout_EndsStalledTaskReads_EachOnce()
    {
        using ServerProcess server = StalledReads();
        using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri);
        h.SetRequestTimeout(Timeout);
        var reads = new Task[16];
        for (int i = 0; i < reads.Length; i++)
            reads[i] = h.PreadAsync(new byte[4096], (ulong)i * 4096).AsTask();
        foreach (Task read in reads)
        {
            var e = await Assert.ThrowsAnyAsync<NbdException>(() => read.WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.Equal(Errno.ETIMEDOUT, e.Errno);
        }
    }

    [Fact]
    public async Task RequestTimeout_LeavesAHealthyServerAlone()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=delay", "memory", "1M", "delay-read=200ms");
        using var h = new NbdHandle();
        h.SetRequestTimeout(TimeSpan.FromSeconds(5));
        h.ConnectUri(server.Uri);
        var reads = new Task[32];
        for (int i = 0; i < reads.Length; i++)
            reads[i] = h.PreadAsync(new byte[4096], (ulong)i * 4096).AsTask();
        await Task.WhenAll(reads).WaitAsync(TimeSpan.FromSeconds(30));
        h.Pread(new byte[512], 0);
        Assert.False(h.AioIsDead());
        h.SetRequestTimeout(TimeSpan.Zero);
        Assert.Equal(TimeSpan.Zero, h.GetRequestTimeout());
    }

    [Fact]
    public void Cancel_FromAnotherThread_EndsABlockedSyncReadAndEveryAioCommandOnce()
    {
        using ServerProcess server = StalledReads();
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        int calls = 0, error = 0;
        h.AioPread(new byte[4096], 4096, (ref int e) =>
        {
            Interlocked.Increment(ref calls);
            error = e;
            return 1;
        });
        using var timer = new Timer(_ => h.Cancel(), null, 300, System.Threading.Timeout.Infinite);
        var clock = Stopwatch.StartNew();
        var e = Assert.ThrowsAny<NbdException>(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.ECANCELED, e.Errno);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.Equal(0, h.AioInFlight());
        Assert.Equal((1, Errno.ECANCELED), (calls, error));
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public async Task ConnectTimeout_EndsAHandshakeTheServerNeverAnswers()
    {
        await using var server = ScriptedServer.Start(c => c.DrainAsync());
        using var h = new NbdHandle();
        h.SetConnectTimeout(TimeSpan.FromMilliseconds(500));
        Assert.Equal(TimeSpan.FromMilliseconds(500), h.GetConnectTimeout());
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<NbdConnectionException>(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.ETIMEDOUT, e.Errno);
        Assert.Contains("connect timeout of 0.5 s", e.Message, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public async Task ConnectTimeout_EndsAnAsyncAndAnAioConnect()
    {
        await using var server = ScriptedServer.Start(c => c.DrainAsync(), connections: 2);
        using var a = new NbdHandle();
        a.SetConnectTimeout(TimeSpan.FromMilliseconds(500));
        var e = await Assert.ThrowsAnyAsync<NbdException>(() => a.ConnectUriAsync(server.Uri).WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(Errno.ETIMEDOUT, e.Errno);

        using var b = new NbdHandle();
        b.SetConnectTimeout(TimeSpan.FromMilliseconds(500));
        b.AioConnectUri(server.Uri);
        var clock = Stopwatch.StartNew();
        var polled = Assert.Throws<NbdConnectionException>(() =>
        {
            while (b.AioIsConnecting() && clock.Elapsed < TimeSpan.FromSeconds(10))
                b.Poll(100);
        });
        Assert.Equal(Errno.ETIMEDOUT, polled.Errno);
        Assert.True(b.AioIsDead());
    }

    [Fact]
    public async Task ConnectTimeout_EndsAnOptCallTheServerNeverAnswers()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetRequestExtendedHeaders(false);
        h.SetRequestStructuredReplies(false);
        // Long enough for the scripted server's greeting to arrive even when the test process's thread pool, which
        // runs that server, is slow to give it a thread (0.5 s was not, once, in CI); each option gets it anew.
        h.SetConnectTimeout(TimeSpan.FromSeconds(2));
        h.ConnectUri(server.Uri);
        Assert.True(h.AioIsNegotiating());
        var e = Assert.Throws<NbdConnectionException>(() => h.OptList((_, _) => 0));
        Assert.Equal(Errno.ETIMEDOUT, e.Errno);
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public void NegativeTimeouts_AreEinval()
    {
        using var h = new NbdHandle();
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetRequestTimeout(TimeSpan.FromSeconds(-2))).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetConnectTimeout(TimeSpan.FromSeconds(-2))).Errno);
        h.SetConnectTimeout(System.Threading.Timeout.InfiniteTimeSpan);
        Assert.Equal(TimeSpan.Zero, h.GetConnectTimeout());
    }
}
