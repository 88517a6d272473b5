using System;
using System.Buffers;
using System.Collections.Generic;
using System.Threading;
using NbdSharp.Diagnostics;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>
/// The command engine of one connection: cookies, the table of commands in flight, one serialised writer
/// and one reader that parses replies straight into the callers' buffers.
/// </summary>
/// <remarks>
/// <para>Reading is a role that one thread holds at a time. A thread blocked in a synchronous call, or in
/// <see cref="Poll"/>, takes the role itself when it is free and reads replies on its own stack, completing
/// whatever commands they answer (libnbd's model: the waiting caller drives the socket, so a synchronous call
/// never needs the thread pool and pays no thread hand-off). When the holder leaves with commands still in
/// flight it hands the role to another waiting caller, or, if only Task-based commands (or a blocked sender)
/// need progress, to a dedicated reader thread ("the pump"). Replies to libnbd-style aio commands are read
/// only when somebody polls or waits, as in libnbd.</para>
/// <para>Commands complete exactly once: by the reply, or by the connection's death, which the role holder
/// turns into a failure of every command in flight. Only the role holder touches command buffers, so a
/// failed command is never completed while its buffer is being written.</para>
/// </remarks>
internal sealed unsafe partial class CommandEngine : IDisposable
{
    private const int MaxPooledCommands = 1024;

    private readonly Lock _lock = new();
    private readonly Transport.Transport _transport;
    private readonly DebugLog _log;
    private readonly Dictionary<ulong, Command> _inFlight = new();
    private readonly Dictionary<ulong, Command> _done = new();
    private readonly Queue<ulong> _doneOrder = new();
    private readonly Queue<Command> _volunteers = new();
    private readonly Stack<Command> _pool = new();
    private readonly object _progressGate = new();
    private readonly object _pumpGate = new();
    private bool _pumpSignaled;
    private Thread? _pump;

    private ulong _lastCookie;
    private int _asyncInFlight;
    private int _pollWaiters;
    private int _blockedSenders;
    private long _progressGeneration;
    private long _completions;
    private bool _readerActive;
    private bool _disconnectRequested;
    private bool _disposed;
    private volatile EngineState _state = EngineState.Ready;
    private int _deadErrno;
    private bool _endedBetweenReplies;
    private string _deadReason = "";

    /// <summary>Engines are told apart by number in thread-local state, which must not keep one alive.</summary>
    private static long s_lastId;
    private readonly long _id = Interlocked.Increment(ref s_lastId);

    [ThreadStatic]
    private static CommandEngine? t_reading;

    [ThreadStatic]
    private static long t_observedEngine;

    [ThreadStatic]
    private static long t_observedCompletions;

    public CommandEngine(Transport.Transport transport, ConnectionInfo info, DebugLog log)
    {
        _transport = transport;
        _log = log;
        ExportSize = info.ExportSize;
        StructuredReplies = info.StructuredReplies;
        ExtendedHeaders = info.ExtendedHeaders;
        _metaContexts = info.MetaContexts;
        info.Leftover.CopyTo(_receiveBuffer, 0);
        _receiveEnd = info.Leftover.Length;
    }

    public ulong ExportSize { get; }
    public bool StructuredReplies { get; }
    public bool ExtendedHeaders { get; }

    public EngineState State => _state;

    /// <summary>True once NBD_CMD_DISC has been sent: no more commands may be issued.</summary>
    public bool DisconnectRequested
    {
        get
        {
            lock (_lock)
                return _disconnectRequested;
        }
    }

    /// <summary>Commands issued and not yet completed, of every kind.</summary>
    public int InFlightCount
    {
        get
        {
            lock (_lock)
                return _inFlight.Count;
        }
    }

    /// <summary>A reply is being read or requests wait to be written (libnbd's "processing").</summary>
    public bool IsProcessing => _midReply || _queued > 0;

    /// <summary>
    /// Whether the connection ended because the server closed it cleanly between replies while commands were in
    /// flight: libnbd counts that as closed (the commands fail with ENOTCONN), not as a failure of nbd_shutdown.
    /// </summary>
    public bool EndedBetweenReplies
    {
        get
        {
            lock (_lock)
                return _endedBetweenReplies;
        }
    }

    /// <summary>The errno and reason the connection died with.</summary>
    public (int Errno, string Reason) DeathCause
    {
        get
        {
            lock (_lock)
                return (_deadErrno, _deadReason);
        }
    }

    /// <summary>The transport, for callers that wait on its file descriptor.</summary>
    public Transport.Transport TransportForPolling => _transport;

    /// <summary>Roughly the bytes this engine holds (buffers, pooled commands).</summary>
    public long ApproximateSize => _receiveBuffer.Length + _headHeader.Length + _statusBuffer.Length + (_pool.Count * 256L);

    /// <summary>Whether the current thread is reading for this engine (inside one of its callbacks).</summary>
    public bool IsReadingOnCurrentThread => t_reading == this;

    /// <summary>Takes a command from the pool, reset for a new use.</summary>
    public Command Rent()
    {
        Command? cmd = null;
        lock (_lock)
        {
            _pool.TryPop(out cmd);
        }
        cmd ??= new Command(this);
        cmd.Reset();
        return cmd;
    }

    internal void ReturnToPool(Command cmd)
    {
        cmd.Completion = null;
        cmd.Chunk = null;
        cmd.Extent = null;
        cmd.Extent64 = null;
        lock (_lock)
        {
            if (_pool.Count < MaxPooledCommands)
                _pool.Push(cmd);
        }
    }

    /// <summary>
    /// Assigns a cookie, publishes the command in the in-flight table and queues its request. Throws (without
    /// publishing) if the connection cannot take commands. An aio command is sent only as far as the socket takes
    /// it at once; a synchronous or Task-based one is sent whole (with everything queued before it) before this
    /// returns. A send failure kills the connection, which completes the command with the failure; the cookie is
    /// still returned.
    /// </summary>
    public ulong Issue(Command cmd, string call)
    {
        bool wakePump = false;
        lock (_lock)
        {
            if (_state != EngineState.Ready)
                throw NotReady(call);
            if (_disconnectRequested)
                throw DisconnectRequestedError(call);
            cmd.Cookie = ++_lastCookie;
            cmd.IssuedAt = System.Diagnostics.Stopwatch.GetTimestamp();
            _inFlight.Add(cmd.Cookie, cmd);
            if (cmd.Kind == CommandKind.Async)
            {
                _asyncInFlight++;
                wakePump = !_readerActive;
            }
            EnqueueLocked(cmd);
        }
        if (wakePump)
            WakePump();
        if (cmd.Kind == CommandKind.Aio)
            TrySendQueued();
        else
            SendAllQueued();
        return cmd.Cookie;
    }

    private NbdException NotReady(string call)
    {
        string state = _state == EngineState.Dead ? "DEAD" : "CLOSED";
        string detail = "invalid state: " + state + ": the handle must be connected with the server";
        return new NbdException(Errno.EINVAL, NbdException.Format(call, detail, Errno.EINVAL));
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
                    return;
                drive = !_readerActive;
                if (drive)
                {
                    _readerActive = true;
                }
                else if (!cmd.QueuedAsVolunteer)
                {
                    cmd.QueuedAsVolunteer = true;
                    _volunteers.Enqueue(cmd);
                }
            }
            if (drive)
            {
                Drive(cmd);
            }
            else
            {
                cmd.Signal.Wait();
                cmd.Signal.Reset();
            }
        }
    }

    /// <summary>
    /// Publishes and sends a Task-based command and returns the task the caller awaits. The caller has set
    /// <see cref="Command.CancellationToken"/>; cancellation stops the wait, not the command on the wire.
    /// </summary>
    public System.Threading.Tasks.ValueTask IssueAsync(Command cmd, string call)
    {
        cmd.Kind = CommandKind.Async;
        cmd.CallName = call;
        cmd.AddReference();
        if (cmd.CancellationToken.CanBeCanceled)
            cmd.Registration = cmd.CancellationToken.UnsafeRegister(static state => ((Command)state!).Owner.OnCancel((Command)state), cmd);
        try
        {
            Issue(cmd, call);
        }
        catch (NbdException e)
        {
            cmd.Registration.Dispose();
            cmd.Unpin();
            cmd.Release();
            cmd.Release();
            return System.Threading.Tasks.ValueTask.FromException(e);
        }
        return new System.Threading.Tasks.ValueTask(cmd, cmd.Version);
    }

    /// <summary>The awaiter of <paramref name="cmd"/> was cancelled: stop the wait; the reply will be drained.</summary>
    private void OnCancel(Command cmd)
    {
        lock (_lock)
        {
            if (cmd.Done || cmd.Abandoned)
                return;
            if (cmd.ReaderBusy)
            {
                cmd.CancelPending = true;
                return;
            }
            cmd.Abandoned = true;
        }
        cmd.SetAsyncResult(new OperationCanceledException(cmd.CancellationToken));
    }

    /// <summary>Holds the reader role until <paramref name="until"/> completes or the connection ends.</summary>
    private void Drive(Command until)
    {
        CommandEngine? outerReading = t_reading; // a callback of another handle may be reading
        t_reading = this;
        try
        {
            while (!until.Done && Step())
            {
            }
        }
        finally
        {
            t_reading = outerReading;
            ReleaseReader();
        }
    }

    /// <summary>
    /// libnbd's <c>nbd_poll</c>: waits up to <paramref name="timeoutMs"/> (-1 = forever) for the server to send
    /// something or to take more of the queued requests, handles it and returns 1, or returns 0 on timeout.
    /// </summary>
    public int Poll(int timeoutMs, string call)
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
            return PollCore(timeoutMs, deadline, completions, call);
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

    private int PollCore(int timeoutMs, long deadline, long completions, string call)
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
                if (!_readerActive)
                {
                    _readerActive = true;
                    break;
                }
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

        CommandEngine? outerReading = t_reading; // a callback of another handle may be reading
        t_reading = this;
        try
        {
            if (HasBufferedMessage)
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
            if (remaining < 0 && !wantWrite && !HasBufferedData)
            {
                // Nothing to wait for separately: the receive itself blocks (and over TLS a readiness wait would
                // cost a look-ahead read on another thread).
                StepBatch();
                return 1;
            }
            bool readable = HasBufferedData, writable = false;
            if (!readable)
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
            Break(failure.Errno, failure.Message);
            return 1;
        }
        finally
        {
            t_reading = outerReading;
            ReleaseReader();
        }
    }

    /// <summary>One reply (or chunk) at least, then whatever else has already arrived.</summary>
    private void StepBatch()
    {
        if (Step())
        {
            while (HasBufferedMessage && Step())
            {
            }
        }
    }

    /// <summary>
    /// <c>nbd_aio_notify_write</c>: the socket has room; sends what it takes of the queued requests. EINVAL when
    /// nothing waits to be written, as libnbd's state machine refuses the event in a state that does not write.
    /// </summary>
    public void NotifyWrite(string call, string stateName)
    {
        if (_queued == 0)
        {
            throw new NbdException(Errno.EINVAL, NbdException.Format(call,
                "external event 1 (notify write) is invalid in state " + stateName + ": nothing is waiting to be written", Errno.EINVAL));
        }
        TrySendQueued();
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
                    if (_readerActive || _state != EngineState.Ready || _inFlight.Count == 0)
                        break;
                    _readerActive = true;
                }
                CommandEngine? outerReading = t_reading; // a callback of another handle may be reading
                t_reading = this;
                try
                {
                    while (Step())
                    {
                        lock (_lock)
                        {
                            if (_inFlight.Count == 0)
                                break;
                        }
                    }
                }
                finally
                {
                    t_reading = outerReading;
                    ReleaseReader();
                }
            }
        }
    }

    /// <summary>
    /// Completes a command exactly once. It leaves the in-flight table only here, in the same locked step that
    /// makes it done, so a cookie is never in neither place: during an aio completion callback it still
    /// counts as in flight, as in libnbd.
    /// </summary>
    private void Complete(Command cmd)
    {
        if (!cmd.TryMarkCompleted())
            return;
        switch (cmd.Kind)
        {
            case CommandKind.Sync:
                lock (_lock)
                {
                    _inFlight.Remove(cmd.Cookie);
                    cmd.Done = true;
                }
                cmd.Signal.Set();
                break;

            case CommandKind.Aio:
                cmd.Unpin();
                int result = 0;
                if (cmd.Completion != null)
                {
                    int error = cmd.Error;
                    result = Callbacks.InvokeCompletion(cmd.Completion, ref error);
                    if (result == -1 && error != 0 && error != cmd.Error)
                    {
                        cmd.Error = error;
                        cmd.Failure = FailureKind.Callback;
                        cmd.ErrorDetail = null;
                    }
                }
                bool retire = result == 1;
                lock (_lock)
                {
                    _inFlight.Remove(cmd.Cookie);
                    cmd.Done = true;
                    // Once the handle is closed nobody can retire it: it is released now, with its callbacks.
                    retire |= _disposed;
                    if (!retire)
                    {
                        _done.Add(cmd.Cookie, cmd);
                        _doneOrder.Enqueue(cmd.Cookie);
                    }
                }
                if (retire)
                    cmd.Release();
                break;

            case CommandKind.Async:
                // Dispose waits for a cancellation callback that is running, so it cannot see this command
                // after it went back to the pool.
                cmd.Registration.Dispose();
                cmd.Unpin();
                bool abandoned;
                lock (_lock)
                {
                    _inFlight.Remove(cmd.Cookie);
                    cmd.Done = true;
                    _asyncInFlight--;
                    abandoned = cmd.Abandoned;
                }
                if (!abandoned)
                    cmd.SetAsyncResult(cmd.Error == 0 ? null : cmd.ToException(cmd.CallName));
                cmd.Release();
                break;
        }
        Interlocked.Increment(ref _completions);
        PulseProgress();
    }

    /// <summary>
    /// How long a command may stay in flight before the connection is given up with ETIMEDOUT (zero: forever).
    /// A command cannot be withdrawn from a server, so a timeout ends the connection: every command in flight
    /// fails once, as when the server disconnects. A watchdog timer checks the oldest command a few times per
    /// timeout period; it runs only while a timeout is set.
    /// </summary>
    public TimeSpan RequestTimeout
    {
        get
        {
            lock (_lock)
                return _requestTimeout;
        }
        set
        {
            lock (_lock)
            {
                _requestTimeout = value;
                if (value <= TimeSpan.Zero || _state != EngineState.Ready)
                {
                    _watchdog?.Dispose();
                    _watchdog = null;
                    return;
                }
                TimeSpan period = TimeSpan.FromTicks(Math.Clamp(value.Ticks / 4, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));
                if (_watchdog == null)
                    _watchdog = new Timer(static state => ((CommandEngine)state!).CheckTimeout(), this, period, period);
                else
                    _watchdog.Change(period, period);
            }
        }
    }

    private TimeSpan _requestTimeout;
    private Timer? _watchdog;

    private void CheckTimeout()
    {
        Command? late = null;
        TimeSpan timeout;
        lock (_lock)
        {
            timeout = _requestTimeout;
            if (_state != EngineState.Ready || timeout <= TimeSpan.Zero)
                return;
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            foreach (Command cmd in _inFlight.Values)
            {
                if (System.Diagnostics.Stopwatch.GetElapsedTime(cmd.IssuedAt, now) > timeout && (late == null || cmd.IssuedAt < late.IssuedAt))
                    late = cmd;
            }
            if (late == null)
                return;
        }
        Break(Errno.ETIMEDOUT, "the server did not reply to " + NbdProtocol.CommandName(late.Type) + " (cookie " +
              late.Cookie.ToString(System.Globalization.CultureInfo.InvariantCulture) + ") within the request timeout of " +
              FormatSeconds(timeout));
    }

    /// <summary>A duration as people write it in a timeout message: "5 s", "0.25 s".</summary>
    internal static string FormatSeconds(TimeSpan span) =>
        span.TotalSeconds.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + " s";

    /// <summary>
    /// Kills the connection: records why, stops the transport (waking a blocked reader) and, unless a reader
    /// holds the role (it will do it), fails every command in flight.
    /// </summary>
    public void Break(int errno, string reason)
    {
        bool failNow;
        lock (_lock)
        {
            // Dead already, or closed cleanly with nothing in flight: nothing left to kill.
            if (_state != EngineState.Ready)
                return;
            _state = EngineState.Dead;
            _deadErrno = errno;
            _deadReason = reason;
            _watchdog?.Dispose();
            _watchdog = null;
            failNow = !_readerActive;
            if (failNow)
                _readerActive = true;
        }
        if (_log.Enabled)
            _log.Write("nbd_internal", "connection failed: " + reason);
        _transport.Abort();
        if (failNow)
        {
            try
            {
                FailAll();
            }
            finally
            {
                ReleaseReader();
            }
        }
        else
        {
            PulseProgress();
        }
    }

    /// <summary>
    /// Fails every command in flight with the recorded cause of death (called by the role holder). The write lock
    /// is taken first, so that no request is being sent from memory that a completion releases: a sender on another
    /// thread leaves at once, its transport having been aborted.
    /// </summary>
    private void FailAll()
    {
        Command[] victims;
        var disconnects = new List<Command>();
        int errno;
        string reason;
        lock (_writeLock)
        {
            lock (_lock)
            {
                DropQueueLocked(disconnects);
                victims = new Command[_inFlight.Count];
                _inFlight.Values.CopyTo(victims, 0);
                errno = _deadErrno == 0 ? Errno.ENOTCONN : _deadErrno;
                reason = _deadErrno == 0 ? "the connection was closed" : _deadReason;
            }
        }
        foreach (Command disc in disconnects)
            disc.Release();
        foreach (Command victim in victims)
        {
            victim.SetError(errno, FailureKind.Connection, NbdProtocol.CommandName(victim.Type) + ": " + reason);
            Complete(victim);
        }
    }

    /// <summary>
    /// Retires a completed aio command: true if it succeeded, false if still in flight; throws its error if it
    /// failed, and EINVAL for a cookie that is unknown or already retired.
    /// </summary>
    public bool CommandCompleted(long cookie, string call)
    {
        NoteObserved();
        Command? cmd;
        lock (_lock)
        {
            if (cookie >= 1 && _done.Remove((ulong)cookie, out cmd))
            {
                // Leave the order queue entry; PeekCompleted skips retired cookies.
            }
            else if (cookie >= 1 && _inFlight.TryGetValue((ulong)cookie, out Command? pending) && pending.Kind == CommandKind.Aio)
            {
                return false;
            }
            else
            {
                throw new NbdException(Errno.EINVAL, NbdException.Format(call,
                    "invalid aio cookie " + cookie.ToString(System.Globalization.CultureInfo.InvariantCulture) +
                    ": no such command in flight or completed (it may have been retired already)", Errno.EINVAL));
            }
        }
        try
        {
            if (cmd.Error != 0)
                throw cmd.ToException(call);
            return true;
        }
        finally
        {
            cmd.Release();
        }
    }

    /// <summary>The cookie of the oldest completed, unretired aio command; 0 if none yet; EINVAL if none at all.</summary>
    public long PeekCompleted(string call)
    {
        NoteObserved();
        lock (_lock)
        {
            while (_doneOrder.TryPeek(out ulong cookie))
            {
                if (_done.ContainsKey(cookie))
                    return (long)cookie;
                _doneOrder.Dequeue();
            }
            if (_inFlight.Count > 0)
                return 0;
        }
        throw new NbdException(Errno.EINVAL, NbdException.Format(call, "no commands are in flight", Errno.EINVAL));
    }

    /// <summary>Commands in flight, as libnbd counts them (commands of every kind).</summary>
    public int AioInFlight()
    {
        NoteObserved();
        return InFlightCount;
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
                if (!_readerActive)
                {
                    _readerActive = true;
                    break;
                }
                Interlocked.Increment(ref _pollWaiters);
                generation = Interlocked.Read(ref _progressGeneration);
            }
            WaitForProgress(generation, long.MaxValue);
            Interlocked.Decrement(ref _pollWaiters);
        }
        CommandEngine? outerReading = t_reading; // a callback of another handle may be reading
        t_reading = this;
        try
        {
            while (Step())
            {
            }
        }
        finally
        {
            t_reading = outerReading;
            ReleaseReader();
        }
    }

    /// <summary>
    /// Closes the connection at once (the handle is being disposed): commands in flight complete with
    /// ENOTCONN, the reader thread ends, and no command's callbacks stay referenced.
    /// </summary>
    public void Close()
    {
        Command[] unretired;
        lock (_lock)
        {
            _disposed = true;
            unretired = new Command[_done.Count];
            _done.Values.CopyTo(unretired, 0);
            _done.Clear();
            _doneOrder.Clear();
        }
        // libnbd's callback lifetimes: a closed handle holds no callback. Completed commands nobody retired are
        // released now; those still in flight complete (with ENOTCONN) and are released as they do.
        foreach (Command cmd in unretired)
            cmd.Release();
        Break(Errno.ENOTCONN, "the handle was closed");
        SignalPump();
    }

    public void Dispose()
    {
        RequestTimeout = TimeSpan.Zero;
        Close();
        _transport.Dispose();
        ReturnBuffers();
    }

    /// <summary>
    /// Gives the receive buffer back to the pool, unless a thread still holds the reader role (it is being woken by
    /// the aborted transport): then the garbage collector takes it, as nothing may reuse memory still in use.
    /// </summary>
    private void ReturnBuffers()
    {
        byte[] receive;
        lock (_lock)
        {
            if (_readerActive || _receiveBuffer.Length == 0)
                return;
            receive = _receiveBuffer;
            _receiveBuffer = [];
        }
        ArrayPool<byte>.Shared.Return(receive);
    }
}
