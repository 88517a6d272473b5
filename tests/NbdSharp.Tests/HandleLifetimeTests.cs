using System;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// libnbd's "callback lifetimes": once a handle is closed, nothing of it stays reachable through its callbacks or the
/// library's own static and thread-local state.
/// </summary>
public class HandleLifetimeTests
{
    /// <summary>Answers the first flush, then reads whatever else comes without answering it.</summary>
    private static ScriptedServer AnswerOneFlush() => Scripted.Serve(async c =>
    {
        ScriptedRequest flush = await c.ReadRequestAsync();
        await c.SendSimpleReplyAsync(flush.Cookie);
        await c.DrainAsync();
    });

    private sealed record Captured(WeakReference Completed, WeakReference InFlight, WeakReference Debug, WeakReference Engine);

    /// <summary>
    /// Leaves on <paramref name="h"/>: a command completed and not retired, a command in flight, a debug callback;
    /// polls on this thread. Each callback captures an object of its own, watched through a weak reference.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Captured Populate(NbdHandle h, ScriptedServer server)
    {
        object debugState = new();
        h.SetDebugCallback((_, _) =>
        {
            GC.KeepAlive(debugState);
            return 0;
        });
        h.ConnectUri(server.Uri);

        object completedState = new();
        long flush = h.AioFlush((ref int _) =>
        {
            GC.KeepAlive(completedState);
            return 0; // left for AioCommandCompleted
        });
        object inFlightState = new();
        int inFlightError = -1;
        h.AioPread(new byte[4096], 0, (ref int error) =>
        {
            GC.KeepAlive(inFlightState);
            inFlightError = error;
            return 0;
        });
        while (h.AioPeekCommandCompleted() != flush)
            Scripted.Within(() => h.Poll(1000));
        Assert.Equal(1, h.AioInFlight());
        Assert.Equal(-1, inFlightError);

        object engine = typeof(NbdHandle).GetField("_engine", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(h)!;
        return new Captured(new WeakReference(completedState), new WeakReference(inFlightState), new WeakReference(debugState),
            new WeakReference(engine));
    }

    private static void Collect()
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    [Fact]
    public async Task Dispose_ReleasesTheCallbacks_OfCommandsInFlightAndCompleted_AndTheDebugCallback()
    {
        await using ScriptedServer server = AnswerOneFlush();
        var h = new NbdHandle();
        Captured captured = Populate(h, server);
        h.Dispose();
        Collect();
        Assert.False(captured.Completed.IsAlive, "a completed, unretired command's callback outlived Dispose");
        Assert.False(captured.InFlight.IsAlive, "the callback of a command in flight outlived Dispose");
        Assert.False(captured.Debug.IsAlive, "the debug callback outlived Dispose");
        GC.KeepAlive(h); // the handle itself is still referenced: it must not hold them
    }

    [Fact]
    public async Task NothingStatic_KeepsAClosedHandlesEngineAlive()
    {
        await using ScriptedServer server = AnswerOneFlush();
        WeakReference engine = PopulateAndDispose(server);
        Collect();
        Assert.False(engine.IsAlive, "the engine of a closed handle stayed reachable (a static or thread-local field?)");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference PopulateAndDispose(ScriptedServer server)
    {
        var h = new NbdHandle();
        Captured captured = Populate(h, server);
        h.Dispose();
        return captured.Engine;
    }
}
