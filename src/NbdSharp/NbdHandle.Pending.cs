using System;
using System.Runtime.ExceptionServices;
using System.Threading.Tasks;

namespace NbdSharp;

/// <summary>
/// libnbd's aio connect and option calls return at once and progress "in the event loop". Here the work runs
/// as a task; <see cref="Poll"/> waits for it and, on the poller's thread as in libnbd, runs what the caller
/// asked to be told (option callbacks, the completion callback) once it is over.
/// </summary>
public sealed partial class NbdHandle
{
    private PendingOperation? _pending;

    /// <summary>A connect or option in progress, and what to run on the poller's thread when it ends.</summary>
    private sealed class PendingOperation(Task task, Action<Task>? deliver)
    {
        public Task Task { get; } = task;
        public Action<Task>? Deliver { get; } = deliver;
    }

    private void StartPending(Task task, Action<Task>? deliver)
    {
        lock (_stateLock)
            _pending = new PendingOperation(task, deliver);
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> for the pending operation; when it has ended, delivers its
    /// callbacks and returns 1, or throws its failure if it killed the connection (libnbd's poll returns -1).
    /// </summary>
    private int PollPending(PendingOperation pending, int timeout)
    {
        if (Task.WaitAny([pending.Task], timeout) < 0)
            return 0;
        lock (_stateLock)
        {
            if (_pending != pending)
                return 1;
            _pending = null;
        }
        pending.Deliver?.Invoke(pending.Task);
        // A refused option is told to its completion callback and the handle negotiates on; a connect that
        // failed, even by the server's refusal of NBD_OPT_GO, left the handle dead: that is Poll's failure.
        if (pending.Task.IsFaulted && pending.Task.Exception!.InnerException is { } failure &&
            (pending.Deliver == null || failure is not NbdServerException))
            ExceptionDispatchInfo.Throw(failure);
        return 1;
    }

    /// <summary>On dispose, a pending operation fails with the closed transport; nobody will poll it now.</summary>
    private void AbandonPending()
    {
        PendingOperation? pending;
        lock (_stateLock)
        {
            pending = _pending;
            _pending = null;
        }
        pending?.Task.ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
    }
}
