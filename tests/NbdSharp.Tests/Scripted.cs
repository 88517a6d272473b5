using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;

namespace NbdSharp.Tests;

/// <summary>Shortcuts for tests against the scripted server.</summary>
internal static class Scripted
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A server script that refuses every option (NBD_REP_ERR_UNSUP) until NBD_OPT_GO, which <paramref name="go"/>
    /// answers, then runs <paramref name="then"/> (by default: reads until the client closes). NBD_OPT_ABORT
    /// before GO is acknowledged and ends the script.
    /// </summary>
    public static Func<ScriptedConnection, Task> RefuseOptionsUntilGo(Func<ScriptedConnection, Task> go,
        Func<ScriptedConnection, Task>? then = null) => RefuseOptionsUntil(7, go, then);

    /// <summary>
    /// As <see cref="RefuseOptionsUntilGo"/>, up to <paramref name="option"/> instead of NBD_OPT_GO, acknowledging
    /// <paramref name="acknowledged"/> (e.g. NBD_OPT_STRUCTURED_REPLY) on the way.
    /// </summary>
    public static Func<ScriptedConnection, Task> RefuseOptionsUntil(uint option, Func<ScriptedConnection, Task> answer,
        Func<ScriptedConnection, Task>? then = null, uint? acknowledged = null) => async c =>
    {
        const uint optAbort = 2, ack = 1, errUnsup = 0x80000001;
        await c.SendNewstyleGreetingAsync();
        await c.ReadClientFlagsAsync();
        while (true)
        {
            (uint received, _) = await c.ReadOptionAsync();
            if (received == option)
            {
                await answer(c);
                break;
            }
            if (received == optAbort)
            {
                await c.ReplyOptionAsync(received, ack);
                return;
            }
            await c.ReplyOptionAsync(received, received == acknowledged ? ack : errUnsup);
        }
        await (then ?? (connection => connection.DrainAsync()))(c);
    };

    /// <summary>A server that negotiates <paramref name="export"/> normally, then runs <paramref name="script"/>.</summary>
    public static ScriptedServer Serve(Func<ScriptedConnection, Task> script, ScriptedExport? export = null) =>
        ScriptedServer.Start(async connection =>
        {
            if (await connection.NegotiateAsync(export ?? new ScriptedExport()))
                await script(connection);
        });

    /// <summary>A connected handle (with base:allocation requested) to <paramref name="server"/>.</summary>
    public static NbdHandle Connect(ScriptedServer server, Action<NbdHandle>? configure = null)
    {
        var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        configure?.Invoke(h);
        h.ConnectUri(server.Uri);
        return h;
    }

    /// <summary>Runs a blocking call, failing the test if it does not finish within the deadline.</summary>
    public static T Within<T>(Func<T> action)
    {
        Task<T> task = Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (!task.Wait(Deadline))
            throw new TimeoutException("the call did not complete within " + Deadline);
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Runs blocking code on its own thread, failing the test if it does not finish within the deadline.</summary>
    public static Task WithinAsync(Action action) =>
        Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).WaitAsync(Deadline);

    /// <summary>
    /// The common shape of a misbehaviour test: the server negotiates normally, answers the first request
    /// with <paramref name="reply"/> and then only listens; <paramref name="command"/> must fail within the
    /// deadline, with the connection dead (EPROTO unless <paramref name="errno"/> says otherwise) and a message
    /// containing <paramref name="expected"/>.
    /// </summary>
    public static async Task<NbdException> BadReplyKillsAsync(Func<ScriptedConnection, ScriptedRequest, Task> reply,
        Action<NbdHandle> command, string expected, int errno = Errno.EPROTO, ScriptedExport? export = null)
    {
        await using ScriptedServer server = Serve(async c =>
        {
            await reply(c, await c.ReadRequestAsync());
            await c.DrainAsync();
        }, export);
        using NbdHandle h = Connect(server);
        NbdException e = Fails(() => command(h));
        Xunit.Assert.Equal(errno, e.Errno);
        Xunit.Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Xunit.Assert.True(h.AioIsDead(), "the connection should be dead");
        return e;
    }

    /// <summary>Polls until no aio command is in flight (or the connection died), failing the test after the deadline.</summary>
    public static void PollUntilDone(NbdHandle h) =>
        Within(() =>
        {
            while (h.AioInFlight() > 0)
            {
                try
                {
                    h.Poll(-1);
                }
                catch (NbdException)
                {
                    break;
                }
            }
            return 0;
        });

    /// <summary>Runs a blocking call that must throw an <see cref="NbdException"/> within the deadline.</summary>
    public static NbdException Fails(Action action) =>
        Within(() =>
        {
            try
            {
                action();
            }
            catch (NbdException e)
            {
                return e;
            }
            throw new Xunit.Sdk.XunitException("expected an NbdException, but the call succeeded");
        });
}
