using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Server-side errors from nbdkit (eval scripts and the error filter) and replies out of order (delays).</summary>
public class ErrorInjectionTests
{
    private const string ZeroRead = "dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null";

    [Fact]
    public async Task FailingFlush_IsReportedByEveryForm()
    {
        using ServerProcess server = Peers.Nbdkit("eval", "get_size=echo 1M", "pread=" + ZeroRead,
            "can_write=exit 0", "pwrite=cat >/dev/null", "can_flush=exit 0", "flush=echo 'EIO flush failed' >&2; exit 1");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.True(h.CanFlush());

        var sync = Assert.Throws<NbdServerException>(() => h.Flush());
        Assert.Equal(Errno.EIO, sync.Errno);
        Assert.Equal("nbd_flush: flush: command failed: Input/output error", sync.Message);

        int callbackError = -1, calls = 0;
        long cookie = h.AioFlush((ref int error) =>
        {
            calls++;
            callbackError = error;
            return 0;
        });
        var aio = Assert.Throws<NbdServerException>(() =>
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
        });
        Assert.Equal(1, calls);
        Assert.Equal(Errno.EIO, callbackError);
        Assert.Equal(Errno.EIO, aio.Errno);

        var async = await Assert.ThrowsAsync<NbdServerException>(async () => await h.FlushAsync());
        Assert.Equal(Errno.EIO, async.Errno);

        // The connection survives server errors.
        h.Pread(new byte[512], 0);
        Assert.True(h.AioIsReady());
    }

    [Fact]
    public void ErrorsFromEval_MapToTheirErrno()
    {
        using ServerProcess server = Peers.Nbdkit("eval", "get_size=echo 4M",
            "pread=if [ $4 -ge 1048576 ]; then echo 'EIO bad sector' >&2; exit 1; fi; " + ZeroRead,
            "can_write=exit 0", "pwrite=echo 'ENOSPC disk full' >&2; exit 1",
            "can_trim=exit 0", "trim=echo 'EPERM no trimming' >&2; exit 1",
            "can_zero=exit 0", "zero=echo 'EIO cannot zero' >&2; exit 1");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        h.Pread(new byte[4096], 0);
        Assert.Equal(Errno.EIO, Assert.Throws<NbdServerException>(() => h.Pread(new byte[4096], 1 << 20)).Errno);
        Assert.Equal(Errno.ENOSPC, Assert.Throws<NbdServerException>(() => h.Pwrite(new byte[4096], 0)).Errno);
        Assert.Equal(Errno.EPERM, Assert.Throws<NbdServerException>(() => h.Trim(4096, 0)).Errno);
        Assert.Equal(Errno.EIO, Assert.Throws<NbdServerException>(() => h.Zero(4096, 0)).Errno);
        h.Pread(new byte[4096], 4096);
    }

    [Fact]
    public void ErrorFilter_EveryAioReadCompletesExactlyOnce_EitherRightOrFailed()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=error", "pattern", "64M", "error=EIO", "error-pread-rate=30%");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        const int count = 300;
        int[] calls = new int[count];
        int[] errors = new int[count];
        byte[][] buffers = Enumerable.Range(0, count).Select(_ => new byte[4096]).ToArray();
        for (int i = 0; i < count; i++)
        {
            int slot = i;
            h.AioPread(buffers[i], (ulong)i * 65536, (ref int error) =>
            {
                calls[slot]++;
                errors[slot] = error;
                return 1;
            });
            if (h.AioInFlight() >= 32)
                h.Poll(-1);
        }
        while (h.AioInFlight() > 0)
            h.Poll(-1);
        Assert.All(calls, c => Assert.Equal(1, c));
        int failed = errors.Count(e => e == Errno.EIO);
        Assert.InRange(failed, 1, count - 1);
        Assert.All(errors, e => Assert.True(e == 0 || e == Errno.EIO));
        for (int i = 0; i < count; i++)
        {
            if (errors[i] == 0)
                Assert.Equal((ulong)i * 65536, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(buffers[i]));
        }
    }

    [Theory]
    [InlineData("pwrite")]
    [InlineData("zero")]
    [InlineData("trim")]
    [InlineData("cache")]
    [InlineData("extents")]
    public void ErrorFilter_OnEachCommand_GivesTheInjectedErrno(string command)
    {
        using ServerProcess server = Peers.Nbdkit("--filter=error", "memory", "1M", "error=ENOSPC", $"error-{command}-rate=100%");
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Action act = command switch
        {
            "pwrite" => () => h.Pwrite(new byte[4096], 0),
            "zero" => () => h.Zero(4096, 0),
            "trim" => () => h.Trim(4096, 0),
            "cache" => () => h.Cache(4096, 0),
            _ => () => h.BlockStatus(4096, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0),
        };
        Assert.Equal(Errno.ENOSPC, Assert.Throws<NbdServerException>(act).Errno);
        h.Pread(new byte[4096], 0);
    }

    [Fact]
    public void RepliesOutOfOrder_CompleteTheRightCommands()
    {
        using var dir = new TempDirectory();
        string file = dir.File("data.bin");
        byte[] content = new byte[1 << 20];
        new Random(77).NextBytes(content);
        File.WriteAllBytes(file, content);
        // The read at offset 0 is slow, so its reply comes last.
        using ServerProcess server = Peers.Nbdkit("eval", "thread_model=echo parallel", "get_size=echo 1M",
            $"pread=if [ $4 -eq 0 ]; then sleep 0.5; fi; dd if={file} skip=$4 count=$3 iflag=skip_bytes,count_bytes 2>/dev/null");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        const int count = 8;
        byte[][] buffers = Enumerable.Range(0, count).Select(_ => new byte[65536]).ToArray();
        var order = new List<int>();
        for (int i = 0; i < count; i++)
        {
            int slot = i;
            h.AioPread(buffers[i], (ulong)i * 65536, (ref int error) =>
            {
                Assert.Equal(0, error);
                order.Add(slot);
                return 1;
            });
        }
        while (h.AioInFlight() > 0)
            h.Poll(-1);
        Assert.Equal(count, order.Count);
        Assert.Equal(0, order[^1]);
        for (int i = 0; i < count; i++)
            Assert.Equal(content.AsSpan(i * 65536, 65536).ToArray(), buffers[i]);
    }

    [Fact]
    public async Task DelayFilter_ManyTasksInFlight_AllComplete()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=delay", "memory", "16M", "rdelay=20ms", "wdelay=10ms");
        await using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri);
        byte[][] blocks = Enumerable.Range(0, 64).Select(i =>
        {
            byte[] b = new byte[4096];
            new Random(i).NextBytes(b);
            return b;
        }).ToArray();
        await Task.WhenAll(blocks.Select((b, i) => h.PwriteAsync(b, (ulong)i * 4096).AsTask()));
        byte[][] reads = Enumerable.Range(0, 64).Select(_ => new byte[4096]).ToArray();
        await Task.WhenAll(reads.Select((b, i) => h.PreadAsync(b, (ulong)i * 4096).AsTask()));
        for (int i = 0; i < 64; i++)
            Assert.Equal(blocks[i], reads[i]);
    }

    [Fact]
    public async Task ServerKilled_CommandsInFlightFailWithEnotconn()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=delay", "memory", "1M", "rdelay=10");
        await using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri);
        var reads = Enumerable.Range(0, 4).Select(i => h.PreadAsync(new byte[512], (ulong)i * 512).AsTask()).ToArray();
        int aioCalls = 0, aioError = 0;
        h.AioPread(new byte[512], 4096, (ref int error) =>
        {
            aioCalls++;
            aioError = error;
            return 1;
        });
        // Every request has gone out and nbdkit has read it (a server killed with unread requests resets the
        // connection: ECONNRESET); the delay filter holds the replies back.
        Assert.Equal(AioDirection.Read, h.AioGetDirection());
        Assert.True(SpinWait.SpinUntil(() => Native.UnreadByPeer(h.AioGetFd()) == 0, TimeSpan.FromSeconds(10)));
        server.Signal(Native.SIGKILL);
        foreach (Task read in reads)
        {
            var e = await Assert.ThrowsAsync<NbdConnectionException>(() => read.WaitAsync(TimeSpan.FromSeconds(10)));
            Assert.Equal(Errno.ENOTCONN, e.Errno);
        }
        // The reader fails the commands one after the other: the aio one may still be on its way.
        Assert.True(SpinWait.SpinUntil(() => h.AioInFlight() == 0, TimeSpan.FromSeconds(10)));
        Assert.Equal(1, aioCalls);
        Assert.Equal(Errno.ENOTCONN, aioError);
        Assert.True(h.AioIsDead());
    }
}
