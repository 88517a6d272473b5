using System;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The method builders of the library's shared sync/async code (SyncPathBuilder): they must behave as .NET's own
/// ValueTask builders, whose first step they replace.
/// </summary>
[Trait("Tier", "Unit")]
public class SyncPathBuilderTests
{
    private static readonly AsyncLocal<string?> Ambient = new();

    [Fact]
    public void SynchronousMethod_CompletesWithItsResult()
    {
        // SyncPath fails if the task has not completed when it is returned.
        Assert.Equal(42, SyncPath.Result(Twice(21, suspend: null)));
        SyncPath.Wait(Nothing(suspend: null));
    }

    [Fact]
    public void SynchronousMethod_FaultsWithItsException()
    {
        Assert.Equal("failed", Assert.Throws<InvalidOperationException>(() => SyncPath.Result(Fail(suspend: null))).Message);
    }

    [Fact]
    public async Task SuspendedMethod_CompletesAndFaultsAsDotNetBuilders()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ValueTask<int> task = Twice(5, gate.Task);
        ValueTask done = Nothing(gate.Task);
        ValueTask<int> failing = Fail(gate.Task);
        Assert.False(task.IsCompleted);
        Assert.False(done.IsCompleted);
        Assert.False(failing.IsCompleted);
        gate.SetResult();
        Assert.Equal(10, await task);
        await done;
        Assert.Equal("failed", (await Assert.ThrowsAsync<InvalidOperationException>(async () => await failing)).Message);
    }

    [Fact]
    public void FirstStep_ChangesToTheContextsDoNotLeakToTheCaller()
    {
        // As with .NET's builders: an AsyncLocal value or synchronization context set in the synchronous part of the
        // method (a user callback run inside a synchronous call, say) is put back when the call returns.
        Ambient.Value = "caller";
        SynchronizationContext? before = SynchronizationContext.Current;
        try
        {
            Assert.Equal("callee", SyncPath.Result(ChangeContexts()));
            Assert.Equal("caller", Ambient.Value);
            Assert.Same(before, SynchronizationContext.Current);
        }
        finally
        {
            Ambient.Value = null;
            SynchronizationContext.SetSynchronizationContext(before);
        }
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<int> Twice(int value, Task? suspend)
    {
        if (suspend != null)
            await suspend.ConfigureAwait(false);
        return value * 2;
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private static async ValueTask Nothing(Task? suspend)
    {
        if (suspend != null)
            await suspend.ConfigureAwait(false);
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<int> Fail(Task? suspend)
    {
        if (suspend != null)
            await suspend.ConfigureAwait(false);
        throw new InvalidOperationException("failed");
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
#pragma warning disable CS1998 // the point is the synchronous first step
    private static async ValueTask<string?> ChangeContexts()
#pragma warning restore CS1998
    {
        Ambient.Value = "callee";
        SynchronizationContext.SetSynchronizationContext(new SynchronizationContext());
        return Ambient.Value;
    }
}
