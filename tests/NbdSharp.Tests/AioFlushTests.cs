using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>The seed contract: <c>AioFlush</c> exactly as nbd_aio_flush(3) and API.md describe it.</summary>
[Collection(nameof(SerialCollection))]
public class AioFlushTests
{
    private const ushort FlagsWithoutFlush = 0x0001 | 0x0008 | 0x0020 | 0x0040;

    /// <summary>A server that answers each flush with <paramref name="errors"/>[i] (an NBD error value) and reports the requests it saw.</summary>
    private static ScriptedServer FlushServer(uint[] errors, System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest> seen, ScriptedExport? export = null) =>
        Scripted.Serve(async c =>
        {
            int i = 0;
            while (true)
            {
                ScriptedRequest request = await c.ReadRequestAsync();
                seen.Enqueue(request);
                if (request.IsDisconnect)
                    break;
                await c.SendSimpleReplyAsync(request.Cookie, errors[i++ % errors.Length]);
            }
            c.Close();
        }, export);

    [Fact]
    public void BeforeConnecting_IsEnotconn()
    {
        using var h = new NbdHandle();
        var e = Assert.Throws<NbdException>(() => h.AioFlush());
        Assert.Equal(Errno.ENOTCONN, e.Errno);
        Assert.Equal("nbd_aio_flush: invalid state: START: the handle must be connected with the server: Transport endpoint is not connected", e.Message);
        Assert.Equal(Errno.ENOTCONN, NbdHandle.GetErrno());
        Assert.Equal(e.Message, NbdHandle.GetError());
    }

    [Fact]
    public async Task Success_CallbackRunsOnceWithZero_AndReturning1Retires()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0], seen);
        using NbdHandle h = Scripted.Connect(server);
        int calls = 0, observed = -1;
        long cookie = h.AioFlush((ref int error) =>
        {
            calls++;
            observed = error;
            return 1;
        });
        Assert.True(cookie >= 1);
        Scripted.Within(() =>
        {
            while (h.AioInFlight() > 0)
                h.Poll(-1);
            return 0;
        });
        Assert.Equal(1, calls);
        Assert.Equal(0, observed);
        // Auto-retired: the cookie is no longer known.
        var e = Assert.Throws<NbdException>(() => h.AioCommandCompleted(cookie));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Equal(1, calls);
    }

    [Fact]
    public async Task Success_CallbackReturning0_LeavesItForAioCommandCompleted()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0], seen);
        using NbdHandle h = Scripted.Connect(server);
        int calls = 0;
        long cookie = h.AioFlush((ref int error) =>
        {
            calls++;
            return 0;
        });
        bool done = Scripted.Within(() =>
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
            return true;
        });
        Assert.True(done);
        Assert.Equal(1, calls);
        Assert.Throws<NbdException>(() => h.AioCommandCompleted(cookie));
    }

    [Fact]
    public async Task ServerError_CallbackSeesErrno_AndAioCommandCompletedThrowsIt()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([5], seen);
        using NbdHandle h = Scripted.Connect(server);
        int observed = 0;
        long cookie = h.AioFlush((ref int error) =>
        {
            observed = error;
            return 0;
        });
        NbdException e = Scripted.Fails(() =>
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
        });
        Assert.Equal(Errno.EIO, observed);
        Assert.Equal(Errno.EIO, e.Errno);
        Assert.IsType<NbdServerException>(e);
        Assert.Equal("nbd_aio_command_completed: flush: command failed: Input/output error", e.Message);
        // Retired by the throw: the connection is still usable.
        Assert.Throws<NbdException>(() => h.AioCommandCompleted(cookie));
        Assert.True(h.AioIsReady());
    }

    [Fact]
    public async Task NoCallback_StillCompletesThroughAioCommandCompleted()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0], seen);
        using NbdHandle h = Scripted.Connect(server);
        long cookie = h.AioFlush();
        Assert.Equal(cookie, Scripted.Within(() =>
        {
            long peeked;
            while ((peeked = h.AioPeekCommandCompleted()) == 0)
                h.Poll(-1);
            return peeked;
        }));
        Assert.True(h.AioCommandCompleted(cookie));
        var e = Assert.Throws<NbdException>(() => h.AioPeekCommandCompleted());
        Assert.Equal(Errno.EINVAL, e.Errno);
    }

    [Fact]
    public async Task AnyFlag_IsEinval_AndNothingIsSent()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0], seen);
        using NbdHandle h = Scripted.Connect(server);
        var e = Assert.Throws<NbdException>(() => h.AioFlush(flags: CmdFlag.Fua));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Equal("nbd_aio_flush: flags: invalid value for flag: 0x1: Invalid argument", e.Message);
        Scripted.Within(() =>
        {
            h.Shutdown();
            return 0;
        });
        await server.Completion.WaitAsync(Scripted.Deadline);
        ScriptedRequest only = Assert.Single(seen);
        Assert.True(only.IsDisconnect);
    }

    [Fact]
    public async Task ServerWithoutFlush_IsEinval_AndNothingIsSent()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0], seen, new ScriptedExport { Flags = FlagsWithoutFlush });
        using NbdHandle h = Scripted.Connect(server);
        Assert.False(h.CanFlush());
        int calls = 0;
        var e = Assert.Throws<NbdException>(() => h.AioFlush((ref int _) =>
        {
            calls++;
            return 1;
        }));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("server does not support flush operations", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, calls);
        Scripted.Within(() =>
        {
            h.Shutdown();
            return 0;
        });
        await server.Completion.WaitAsync(Scripted.Deadline);
        Assert.True(Assert.Single(seen).IsDisconnect);
    }

    [Fact]
    public async Task Cookies_AreUniqueAndPositive_AcrossManyFlushes()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<ScriptedRequest>();
        await using var server = FlushServer([0, 5], seen);
        using NbdHandle h = Scripted.Connect(server);
        var cookies = new System.Collections.Generic.HashSet<long>();
        int completions = 0, failures = 0;
        for (int i = 0; i < 200; i++)
        {
            long cookie = h.AioFlush((ref int error) =>
            {
                Interlocked.Increment(ref completions);
                if (error == Errno.EIO)
                    Interlocked.Increment(ref failures);
                return 1;
            });
            Assert.True(cookie >= 1);
            Assert.True(cookies.Add(cookie));
        }
        Scripted.Within(() =>
        {
            while (h.AioInFlight() > 0)
                h.Poll(-1);
            return 0;
        });
        Assert.Equal(200, completions);
        Assert.Equal(100, failures);
    }

    [Fact]
    public async Task ConnectionDeath_CompletesEveryPendingFlushOnce_WithAnErrno()
    {
        await using var server = Scripted.Serve(async c =>
        {
            for (int i = 0; i < 8; i++)
                await c.ReadRequestAsync();
            c.Close();
        });
        using NbdHandle h = Scripted.Connect(server);
        int[] calls = new int[8];
        int[] errors = new int[8];
        for (int i = 0; i < 8; i++)
        {
            int slot = i;
            h.AioFlush((ref int error) =>
            {
                calls[slot]++;
                errors[slot] = error;
                return 1;
            });
        }
        Scripted.Within(() =>
        {
            try
            {
                while (h.AioInFlight() > 0)
                    h.Poll(-1);
            }
            catch (NbdException)
            {
            }
            return 0;
        });
        Assert.All(calls, c => Assert.Equal(1, c));
        Assert.All(errors, e => Assert.Equal(Errno.ENOTCONN, e));
    }
}
