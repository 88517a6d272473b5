using System;
using System.Collections.Generic;
using System.Threading;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>
/// Reading replies is a role that one thread holds at a time. A thread blocked in a synchronous call, in <c>Poll</c>
/// or in a sender waiting for room takes the role itself when it is free and reads replies on its own stack,
/// completing whatever commands they answer (libnbd's model: the waiting caller drives the socket, so a synchronous
/// call never needs the thread pool and pays no thread hand-off). When the holder leaves with commands still in
/// flight it hands the role to a waiting synchronous caller, or, if only Task-based commands (or a blocked sender)
/// need progress, to a dedicated reader thread ("the pump"). Replies to aio commands are read only when somebody
/// polls or waits, as in libnbd.
/// </summary>
internal sealed unsafe partial class CommandEngine
{
    /// <summary>Engines are told apart by number in thread-local state, which must not keep one alive.</summary>
    private static long s_lastId;

    [ThreadStatic]
    private static CommandEngine? t_reading;

    [ThreadStatic]
    private static long t_observedEngine;

    [ThreadStatic]
    private static long t_observedCompletions;

    private readonly long _id = Interlocked.Increment(ref s_lastId);

    /// <summary>Synchronous callers waiting for their command, to whom the role is handed first.</summary>
    private readonly Queue<Command> _volunteers = new();
    private readonly object _progressGate = new();
    private readonly object _pumpGate = new();
    private bool _pumpSignaled;
    private Thread? _pump;
    private bool _readerActive;
    private int _pollWaiters;
    private int _blockedSenders;
    private long _progressGeneration;

    /// <summary>Whether a thread holds the reader role, and how many synchronous callers queue for it (tests).</summary>
    public (bool Taken, int Volunteers) ReaderRoleForTests
    {
        get
        {
            lock (_lock)
                return (_readerActive, _volunteers.Count);
        }
    }

    /// <summary>Whether the current thread is reading for this engine (inside one of its callbacks).</summary>
    public bool IsReadingOnCurrentThread => t_reading == this;

    /// <summary>
    /// The reader role held by this thread: marks the thread as reading for the engine (restoring what it read before,
    /// as a callback of another handle may be reading) and, when disposed, hands the role on. Taking the role (setting
    /// <c>_readerActive</c> under the lock) comes first; <c>default</c> holds nothing.
    /// </summary>
    private readonly struct ReaderScope : IDisposable
    {
        private readonly CommandEngine? _engine;
        private readonly CommandEngine? _outer;

        public ReaderScope(CommandEngine engine)
        {
            _engine = engine;
            _outer = t_reading;
            t_reading = engine;
        }

        public void Dispose()
        {
            if (_engine == null)
                return;
            t_reading = _outer;
            _engine.ReleaseReader();
        }
    }

    /// <summary>Takes the reader role if it is free (under the lock).</summary>
    private bool TryTakeReaderLocked()
    {
        if (_readerActive)
            return false;
        _readerActive = true;
        return true;
    }

    /// <summary>Blocks until a synchronous command completes, reading replies while nobody else does.</summary>
    public void WaitSync(Command cmd)
    {
        while (true)
        {
            bool drive;
            lock (_lock)
            {
                if (cmd.Done)
                {
                    // Completed by another reader while queued: the entry must go now, before the command returns to the
                    // pool and is reused (a later hand-off to it would wake nobody, and a Task-based command would wait forever).
                    if (cmd.QueuedAsVolunteer)
                        RemoveVolunteerLocked(cmd);
                    return;
                }
                drive = TryTakeReaderLocked();
                if (!drive && !cmd.QueuedAsVolunteer)
                {
                    cmd.QueuedAsVolunteer = true;
                    _volunteers.Enqueue(cmd);
                }
            }
            if (drive)
            {
                using var role = new ReaderScope(this);
                while (!cmd.Done && Step())
                {
                }
            }
            else
            {
                cmd.Signal.Wait();
                cmd.Signal.Reset();
            }
        }
    }

    /// <summary>Takes <paramref name="cmd"/> out of the volunteers' queue (under the lock; the queue is as long as the waiting threads).</summary>
    private void RemoveVolunteerLocked(Command cmd)
    {
        for (int i = _volunteers.Count; i > 0; i--)
        {
            Command waiter = _volunteers.Dequeue();
            if (waiter != cmd)
                _volunteers.Enqueue(waiter);
        }
        cmd.QueuedAsVolunteer = false;
    }

    /// <summary>
    /// libnbd's <c>nbd_poll</c>: waits up to <paramref name="timeoutMs"/> (-1 = forever) for the server to send
    /// something or to take more of the queued requests, handles it and returns 1, or returns 0 on timeout.
    /// </summary>
    /// <param name="timeoutMs">How long to wait.</param>
    /// <param name="call">The libnbd call, for errors.</param>
    /// <param name="notified">The caller was told the socket is readable (<c>nbd_aio_notify_read</c>): no separate
    /// readiness check, a receive that does not wait tells.</param>
    public int Poll(int timeoutMs, string call, bool notified = false)
    {
        long deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        long completions = Interlocked.Read(ref _completions);
        // A command may have completed on another thread (the pump, a synchronous caller) after this thread
        // last looked: that is progress, and waiting now could wait for a reply that already came.
        if (t_observedEngine == _id && completions != t_observedCompletions)
        {
            t_observedCompletions = completions;
            return 1;
        }
        try
        {
            return PollCore(timeoutMs, deadline, completions, call, notified);
        }
        finally
        {
            NoteObserved();
        }
    }

    /// <summary>
    /// Records that the calling thread has looked at completions as of now (aio calls do this before they
    /// read any state), so that a later <see cref="Poll"/> on this thread knows what counts as news.
    /// </summary>
    public void NoteObserved()
    {
        t_observedEngine = _id;
        t_observedCompletions = Interlocked.Read(ref _completions);
    }

    private int PollCore(int timeoutMs, long deadline, long completions, string call, bool notified)
    {
        while (true)
        {
            long generation;
            lock (_lock)
            {
                if (_state != EngineState.Ready)
                {
                    string state = _state == EngineState.Dead ? "DEAD" : "CLOSED";
                    throw new NbdException(Errno.EINVAL, NbdException.Format(call, "nothing to poll for in state " + state, Errno.EINVAL));
                }
                if (TryTakeReaderLocked())
                    break;
                Interlocked.Increment(ref _pollWaiters);
                generation = Interlocked.Read(ref _progressGeneration);
            }
            // Another thread reads; writing needs no reader role.
            bool sent = TrySendQueued();
            bool woken = sent || WaitForProgress(generation, deadline);
            Interlocked.Decrement(ref _pollWaiters);
            if (sent || Interlocked.Read(ref _completions) != completions)
                return 1;
            if (!woken)
                return 0;
        }

        using var role = new ReaderScope(this);
        try
        {
            if (_input.HasWholeHeader)
            {
                StepBatch();
                return 1;
            }
            if (TrySendQueued())
                return 1;
            // Requests still queued: the socket is full, so wait for room as well as for replies (unless another
            // thread is sending the queue and waits for room itself).
            bool wantWrite = _queued > 0 && !_blockingSender;
            int remaining = timeoutMs < 0 ? -1 : (int)Math.Max(0, deadline - Environment.TickCount64);
            bool readable = _input.HasData, writable = false;
            if (!readable && remaining < 0 && !wantWrite)
            {
                // Nothing to wait for separately: the receive itself blocks (and over TLS a readiness wait would
                // cost a look-ahead read on another thread).
                readable = true;
            }
            else if (!readable && notified && !wantWrite && _transport.CanTryReceive)
            {
                // One recv instead of a poll(2) with no wait and then the recv.
                readable = _input.TryFill();
            }
            else if (!readable)
            {
                if (wantWrite)
                    (readable, writable) = _transport.WaitReadableOrWritable(remaining);
                else
                    readable = _transport.WaitReadable(remaining);
            }
            if (!readable && !writable)
                return 0;
            if (writable)
                TrySendQueued();
            if (readable)
                StepBatch();
            return 1;
        }
        catch (TransportException failure)
        {
            // As Step does: this thread holds the reader role, so the commands in flight fail here.
            Break(failure.Errno, failure.Message);
            FailAll();
            return 1;
        }
    }

    /// <summary>One reply (or chunk) at least, then whatever else has already arrived.</summary>
    private void StepBatch()
    {
        if (Step())
        {
            while (_input.HasWholeHeader && Step())
            {
            }
        }
    }

    /// <summary>Reads until the server closes the connection (after <see cref="Disconnect"/>).</summary>
    public void WaitClosed()
    {
        while (true)
        {
            long generation;
            lock (_lock)
            {
                if (_state != EngineState.Ready)
                    return;
                if (TryTakeReaderLocked())
                    break;
                Interlocked.Increment(ref _pollWaiters);
                generation = Interlocked.Read(ref _progressGeneration);
            }
            WaitForProgress(generation, long.MaxValue);
            Interlocked.Decrement(ref _pollWaiters);
        }
        using var role = new ReaderScope(this);
        while (Step())
        {
        }
    }

    /// <summary>Waits until the progress generation moves on; false on timeout.</summary>
    private bool WaitForProgress(long generation, long deadline)
    {
        lock (_progressGate)
        {
            while (Interlocked.Read(ref _progressGeneration) == generation)
            {
                long now = Environment.TickCount64;
                if (deadline != long.MaxValue && now >= deadline)
                    return false;
                int wait = deadline == long.MaxValue ? Timeout.Infinite : (int)Math.Min(int.MaxValue, deadline - now);
                Monitor.Wait(_progressGate, wait);
            }
        }
        return true;
    }

    /// <summary>
    /// Moves the progress generation on (a completion, a free reader role, a change of state) and wakes
    /// waiting pollers. The increment comes before the check for waiters, which register before reading the
    /// generation, so a waiter either sees the new generation or is woken.
    /// </summary>
    private void PulseProgress()
    {
        Interlocked.Increment(ref _progressGeneration);
        if (Interlocked.CompareExchange(ref _pollWaiters, 0, 0) == 0)
            return;
        lock (_progressGate)
            Monitor.PulseAll(_progressGate);
    }

    /// <summary>
    /// Gives up the reader role and, if commands still need a reader, hands it on: to a synchronous waiter
    /// first, otherwise to the pump when Task-based commands or a blocked sender need progress; waiting
    /// pollers are woken to take it as well.
    /// </summary>
    private void ReleaseReader()
    {
        Command? next = null;
        bool pump = false;
        lock (_lock)
        {
            _readerActive = false;
            if (_state == EngineState.Ready && _inFlight.Count > 0)
            {
                while (_volunteers.TryDequeue(out Command? waiter))
                {
                    waiter.QueuedAsVolunteer = false;
                    if (!waiter.Done)
                    {
                        next = waiter;
                        break;
                    }
                }
                // Pollers may take the role too, but one may also return on a completion without reading,
                // so Task-based commands and blocked senders never depend on them.
                pump = next == null && (_asyncInFlight > 0 || _blockedSenders > 0);
            }
        }
        next?.Signal.Set();
        if (pump)
            WakePump();
        PulseProgress();
    }

    /// <summary>Called by a sender that cannot make progress: make sure somebody reads replies meanwhile.</summary>
    private void OnSendBlocked()
    {
        bool pump;
        lock (_lock)
        {
            _blockedSenders++;
            pump = !_readerActive && _inFlight.Count > 0;
        }
        if (pump)
            WakePump();
    }

    private void OnSendUnblocked()
    {
        lock (_lock)
            _blockedSenders--;
    }

    private void WakePump()
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            if (_pump == null)
            {
                _pump = new Thread(PumpLoop) { IsBackground = true, Name = "nbd-reader " + _log.HandleName };
                _pump.Start();
            }
        }
        SignalPump();
    }

    private void SignalPump()
    {
        lock (_pumpGate)
        {
            _pumpSignaled = true;
            Monitor.Pulse(_pumpGate);
        }
    }

    /// <summary>The dedicated reader: reads while commands that nobody else waits for are in flight.</summary>
    private void PumpLoop()
    {
        while (true)
        {
            lock (_pumpGate)
            {
                while (!_pumpSignaled)
                    Monitor.Wait(_pumpGate);
                _pumpSignaled = false;
            }
            while (true)
            {
                lock (_lock)
                {
                    if (_disposed)
                        return;
                    if (_state != EngineState.Ready || _inFlight.Count == 0 || !TryTakeReaderLocked())
                        break;
                }
                using var role = new ReaderScope(this);
                while (Step())
                {
                    lock (_lock)
                    {
                        if (_inFlight.Count == 0)
                            break;
                    }
                }
            }
        }
    }
}
