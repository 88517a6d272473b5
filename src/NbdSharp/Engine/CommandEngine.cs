using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;
using NbdSharp.Diagnostics;
using NbdSharp.Protocol;

namespace NbdSharp.Engine;

/// <summary>
/// The command engine of one connection: cookies, the table of commands in flight, the request queue and its
/// writer (<c>CommandEngine.Writer.cs</c>), the reader role (<c>CommandEngine.ReaderRole.cs</c>) and the reply
/// parser that moves payloads straight into the callers' buffers (<c>CommandEngine.Reader.cs</c>,
/// <c>CommandEngine.BlockStatus.cs</c>).
/// </summary>
/// <remarks>
/// <para>Commands complete exactly once: by the reply, or by the connection's end, which the reader-role holder turns
/// into a failure of every command in flight (<see cref="Break"/>, <see cref="FailAll"/>). Only the role holder touches
/// command buffers, so a failed command is never completed while its buffer is being written.</para>
/// <para>Failures here are of two kinds: a command failure (the server's error for one command, or a callback's),
/// recorded on the command; and the end of the connection, recorded once with its errno, its reason and whether the
/// server broke the protocol, and given to every command in flight.</para>
/// </remarks>
internal sealed unsafe partial class CommandEngine : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Transport.Transport _transport;
    private readonly DebugLog _log;
    private readonly Dictionary<ulong, Command> _inFlight = new();
    private readonly CompletedCommands _completed = new();
    private readonly CommandPool _pool = new();
    private readonly RequestWatchdog _watchdog;

    private ulong _lastCookie;
    private int _asyncInFlight;
    private long _completions;
    private bool _disconnectRequested;
    private bool _disposed;
    private volatile EngineState _state = EngineState.Ready;
    private ConnectionEnd _end;
    private bool _endedBetweenReplies;

    public CommandEngine(Transport.Transport transport, ConnectionInfo info, DebugLog log)
    {
        _transport = transport;
        _log = log;
        ExportSize = info.ExportSize;
        StructuredReplies = info.StructuredReplies;
        ExtendedHeaders = info.ExtendedHeaders;
        _metaContexts = info.MetaContexts;
        _input = new ReceiveBuffer(transport, info.Leftover);
        _watchdog = new RequestWatchdog(CheckTimeout);
    }

    public ulong ExportSize { get; }
    public bool StructuredReplies { get; }
    public bool ExtendedHeaders { get; }

    public EngineState State => _state;

    /// <summary>True once NBD_CMD_DISC has been queued: no more commands may be issued.</summary>
    public bool DisconnectRequested
    {
        get
        {
            lock (_lock)
                return _disconnectRequested;
        }
    }

    /// <summary>Commands issued and not yet completed, of every kind (libnbd counts queued ones too).</summary>
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

    /// <summary>How the connection ended (errno 0 while it has not).</summary>
    public ConnectionEnd End
    {
        get
        {
            lock (_lock)
                return _end;
        }
    }

    /// <summary>The transport, for callers that wait on its file descriptor.</summary>
    public Transport.Transport TransportForPolling => _transport;

    /// <summary>Roughly the bytes this engine holds (buffers, pooled commands).</summary>
    public long ApproximateSize => _input.Capacity + _headHeader.Length + _statusBuffer.Length + (_pool.Count * 256L);

    /// <summary>Takes a command from the pool, reset for a new use.</summary>
    public Command Rent() => _pool.Rent(this);

    internal void ReturnToPool(Command cmd) => _pool.Return(cmd);

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
        if (cmd.Kind != CommandKind.Aio)
            SendAllQueued();
        else if (!Defer(this))
            TrySendQueued();
        return cmd.Cookie;
    }

    /// <summary>How many <see cref="NbdHandle.BatchRequests"/> scopes this thread is in.</summary>
    [ThreadStatic]
    private static int t_batchDepth;

    /// <summary>The engines whose aio requests, issued inside the scope, wait for its end.</summary>
    [ThreadStatic]
    private static CommandEngine?[]? t_deferred;

    /// <summary>
    /// Inside a <see cref="NbdHandle.BatchRequests"/> scope, an aio request is queued and its engine noted, to be sent
    /// when the outermost scope ends. False (send now) outside one, or when too many engines wait already.
    /// </summary>
    private static bool Defer(CommandEngine engine)
    {
        if (t_batchDepth == 0)
            return false;
        CommandEngine?[] deferred = t_deferred ??= new CommandEngine?[4];
        for (int i = 0; i < deferred.Length; i++)
        {
            if (deferred[i] == engine)
                return true;
            if (deferred[i] == null)
            {
                deferred[i] = engine;
                return true;
            }
        }
        return false;
    }

    /// <summary>Enters a <see cref="NbdHandle.BatchRequests"/> scope on this thread.</summary>
    public static void BeginBatch() => t_batchDepth++;

    /// <summary>Leaves one; the outermost sends what every engine held back (as far as each socket takes it).</summary>
    public static void EndBatch()
    {
        if (t_batchDepth == 0 || --t_batchDepth > 0 || t_deferred is not { } deferred)
            return;
        for (int i = 0; i < deferred.Length && deferred[i] is { } engine; i++)
        {
            deferred[i] = null;
            engine.TrySendQueued();
        }
    }

    private NbdException NotReady(string call)
    {
        string state = _state == EngineState.Dead ? "DEAD" : "CLOSED";
        string detail = "invalid state: " + state + ": the handle must be connected with the server";
        return new NbdException(Errno.EINVAL, NbdException.Format(call, detail, Errno.EINVAL));
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
                        _completed.Add(cmd);
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
    /// fails once, as when the server disconnects.
    /// </summary>
    public void SetRequestTimeout(TimeSpan timeout)
    {
        lock (_lock)
            _watchdog.Set(_state == EngineState.Ready ? timeout : TimeSpan.Zero);
    }

    /// <summary>The watchdog's check: ends the connection when the oldest command in flight is older than the timeout.</summary>
    private void CheckTimeout()
    {
        Command? late = null;
        TimeSpan timeout = _watchdog.Timeout;
        lock (_lock)
        {
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
              late.Cookie.ToString(CultureInfo.InvariantCulture) + ") within the request timeout of " + FormatSeconds(timeout));
    }

    /// <summary>A duration as people write it in a timeout message: "5 s", "0.25 s".</summary>
    internal static string FormatSeconds(TimeSpan span) =>
        span.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + " s";

    /// <summary>
    /// Ends the connection, once: records why (<paramref name="protocolViolation"/>: the server broke the protocol),
    /// stops the transport (waking a blocked reader or sender) and, unless a reader holds the role (it will do it),
    /// fails every command in flight.
    /// </summary>
    public void Break(int errno, string reason, bool protocolViolation = false)
    {
        bool failNow;
        lock (_lock)
        {
            // Dead already, or closed cleanly with nothing in flight: nothing left to kill.
            if (_state != EngineState.Ready)
                return;
            _state = EngineState.Dead;
            _end = new ConnectionEnd(errno, reason, protocolViolation);
            _watchdog.Dispose();
            failNow = !_readerActive;
            if (failNow)
                _readerActive = true;
        }
        if (_log.Enabled)
            _log.Write("nbd_internal", "connection failed: " + reason);
        _transport.Abort();
        if (failNow)
        {
            using var role = new ReaderScope(this);
            FailAll();
        }
        else
        {
            PulseProgress();
        }
    }

    /// <summary>
    /// Fails every command in flight with the recorded end of the connection (called by the role holder). The write
    /// lock is taken first, so that no request is being sent from memory that a completion releases: a sender on
    /// another thread leaves at once, its transport having been aborted.
    /// </summary>
    private void FailAll()
    {
        Command[] victims;
        var disconnects = new List<Command>();
        ConnectionEnd end;
        lock (_writeLock)
        {
            lock (_lock)
            {
                DropQueueLocked(disconnects);
                victims = new Command[_inFlight.Count];
                _inFlight.Values.CopyTo(victims, 0);
                end = _end.Errno == 0 ? new ConnectionEnd(Errno.ENOTCONN, "the connection was closed", false) : _end;
            }
        }
        foreach (Command disc in disconnects)
            disc.Release();
        FailureKind kind = end.ProtocolViolation ? FailureKind.Protocol : FailureKind.Connection;
        foreach (Command victim in victims)
        {
            victim.SetError(end.Errno, kind, NbdProtocol.CommandName(victim.Type) + ": " + end.Reason);
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
            if (cookie < 1 || !_completed.TryRetire((ulong)cookie, out cmd))
            {
                if (cookie >= 1 && _inFlight.TryGetValue((ulong)cookie, out Command? pending) && pending.Kind == CommandKind.Aio)
                    return false;
                throw new NbdException(Errno.EINVAL, NbdException.Format(call,
                    "invalid aio cookie " + cookie.ToString(CultureInfo.InvariantCulture) +
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
            ulong cookie = _completed.Peek();
            if (cookie != 0)
                return (long)cookie;
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

    /// <summary>
    /// Closes the connection at once (the handle is being disposed): commands in flight complete with ENOTCONN, the
    /// reader thread ends, and no command's callbacks stay referenced (libnbd's callback lifetimes): completed commands
    /// nobody retired are released now, those in flight as they complete.
    /// </summary>
    public void Close()
    {
        Command[] unretired;
        lock (_lock)
        {
            _disposed = true;
            unretired = _completed.TakeAll();
        }
        foreach (Command cmd in unretired)
            cmd.Release();
        Break(Errno.ENOTCONN, "the handle was closed");
        SignalPump();
    }

    public void Dispose()
    {
        Close();
        _watchdog.Dispose();
        _transport.Dispose();
        // The receive buffer goes back to the pool unless a thread still holds the reader role (it is being woken by
        // the aborted transport): then the garbage collector takes it, as nothing may reuse memory still in use.
        bool reading;
        lock (_lock)
            reading = _readerActive;
        if (!reading)
            _input.Release();
    }
}

/// <summary>How a connection ended: its errno, why, and whether the server broke the protocol.</summary>
internal readonly record struct ConnectionEnd(int Errno, string Reason, bool ProtocolViolation);
