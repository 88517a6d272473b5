using System;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Async;

// The method builders of the code that SyncPath runs (the handshake, connecting, closing: written once with
// `bool async`). They are .NET's own ValueTask builders with one difference: the first step of the method runs
// through a generic method of this assembly rather than .NET's AsyncMethodBuilderCore.Start<TStateMachine>.
//
// Why: precompiled (ReadyToRun) code cannot hold .NET's generic methods instantiated over this assembly's types, so
// every async method costs two methods compiled at run time on its first call (Start<TStateMachine> of the builder
// and of AsyncMethodBuilderCore), and a synchronous connect called about thirty of them. Here the first step is
// this assembly's code and is precompiled with it. Everything else (suspending, completing, faulting) is .NET's
// builder, unchanged; the synchronous path never suspends.

/// <summary>
/// The builder of a <see cref="ValueTask"/>-returning async method of the library's shared sync/async code (see
/// SyncPath): .NET's <see cref="AsyncValueTaskMethodBuilder"/>, whose first step runs through
/// <see cref="SyncPathStart.Run"/>.
/// </summary>
internal struct SyncPathBuilder
{
    private AsyncValueTaskMethodBuilder _builder;

    public static SyncPathBuilder Create() => new() { _builder = AsyncValueTaskMethodBuilder.Create() };

    public readonly ValueTask Task => _builder.Task;

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "The builder pattern calls Start on the instance.")]
    public readonly void Start<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine => SyncPathStart.Run(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine) => _builder.SetStateMachine(stateMachine);

    public void SetResult() => _builder.SetResult();

    public void SetException(Exception exception) => _builder.SetException(exception);

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitOnCompleted(ref awaiter, ref stateMachine);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitUnsafeOnCompleted(ref awaiter, ref stateMachine);
}

/// <summary>
/// The builder of a <see cref="ValueTask{TResult}"/>-returning async method of the library's shared sync/async code:
/// .NET's <see cref="AsyncValueTaskMethodBuilder{TResult}"/>, whose first step runs through
/// <see cref="SyncPathStart.Run"/>. Results should be primitives or classes: a struct result would bring back
/// run-time compiled instantiations of .NET's generic types.
/// </summary>
/// <typeparam name="TResult">The result.</typeparam>
internal struct SyncPathBuilder<TResult>
{
    private AsyncValueTaskMethodBuilder<TResult> _builder;

    public static SyncPathBuilder<TResult> Create() => new() { _builder = AsyncValueTaskMethodBuilder<TResult>.Create() };

    public readonly ValueTask<TResult> Task => _builder.Task;

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "The builder pattern calls Start on the instance.")]
    public readonly void Start<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine => SyncPathStart.Run(ref stateMachine);

    public void SetStateMachine(IAsyncStateMachine stateMachine) => _builder.SetStateMachine(stateMachine);

    public void SetResult(TResult result) => _builder.SetResult(result);

    public void SetException(Exception exception) => _builder.SetException(exception);

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitOnCompleted(ref awaiter, ref stateMachine);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion
        where TStateMachine : IAsyncStateMachine => _builder.AwaitUnsafeOnCompleted(ref awaiter, ref stateMachine);
}

/// <summary>The first step of an async method, as .NET's builders run it.</summary>
internal static class SyncPathStart
{
    /// <summary>
    /// Runs the state machine up to its first suspension or its end. As .NET's builders do, a synchronization context
    /// or execution context (AsyncLocal values) changed by that step, by a user callback for example, is put back
    /// before returning to the caller, so that it does not leak out of the call. (Under suppressed flow the
    /// execution context cannot be captured, so it cannot be put back either.)
    /// </summary>
    /// <typeparam name="TStateMachine">The compiler's state machine.</typeparam>
    /// <param name="stateMachine">The state machine.</param>
    public static void Run<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine
    {
        SynchronizationContext? synchronization = SynchronizationContext.Current;
        ExecutionContext? execution = ExecutionContext.Capture();
        try
        {
            stateMachine.MoveNext();
        }
        finally
        {
            if (!ReferenceEquals(SynchronizationContext.Current, synchronization))
                SynchronizationContext.SetSynchronizationContext(synchronization);
            if (execution != null && !ReferenceEquals(ExecutionContext.Capture(), execution))
                ExecutionContext.Restore(execution);
        }
    }
}
