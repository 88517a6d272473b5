using System;
using System.Buffers;
using System.Collections.Generic;
using NbdSharp.Engine;

namespace NbdSharp;

/// <summary>
/// libnbd's asynchronous API: commands return a cookie and complete through a callback, <see cref="AioCommandCompleted"/>
/// and <see cref="Poll"/>; plus the state predicates and orderly shutdown.
/// </summary>
/// <remarks>
/// As in libnbd, replies to aio commands are read while somebody drives the connection: <see cref="Poll"/>, a
/// synchronous call waiting on the same handle, or (when Task-based commands are in flight) the handle's reader
/// thread. Completion callbacks run on that thread, never under a lock; they may issue more aio commands on the
/// same handle but not make synchronous calls on it (EDEADLK).
/// </remarks>
public sealed unsafe partial class NbdHandle
{
    /// <summary>Starts a read into <paramref name="buf"/>, which must stay untouched until completion (<c>nbd_aio_pread</c>).</summary>
    /// <param name="buf">Receives the data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags">No flag is valid.</param>
    /// <returns>The command's cookie (1 or more, unique on this handle).</returns>
    public long AioPread(Memory<byte> buf, ulong offset, CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_pread";
        ZeroIfInitializing(buf.Span);
        CommandEngine engine = Connected(call);
        Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, CmdFlag.None, null);
        return IssueAio(engine, cmd, call, completion, buf.Pin());
    }

    /// <summary>Starts a structured read with a chunk callback (<c>nbd_aio_pread_structured</c>).</summary>
    /// <param name="buf">Receives the data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="chunk">Called for each chunk of the reply.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.Df"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioPreadStructured(Memory<byte> buf, ulong offset, ChunkCallback chunk, CompletionCallback? completion = null,
        CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_pread_structured";
        ArgumentNullException.ThrowIfNull(chunk);
        ZeroIfInitializing(buf.Span);
        CommandEngine engine = Connected(call);
        Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, PreadStructuredFlags, null);
        cmd.Chunk = chunk;
        return IssueAio(engine, cmd, call, completion, buf.Pin());
    }

    /// <summary>Starts a write of <paramref name="buf"/>, which must stay untouched until completion (<c>nbd_aio_pwrite</c>).</summary>
    /// <param name="buf">The data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioPwrite(ReadOnlyMemory<byte> buf, ulong offset, CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_pwrite";
        CommandEngine engine = Connected(call);
        Command cmd = PrepareWrite(engine, call, (ulong)buf.Length, offset, flags, null);
        return IssueAio(engine, cmd, call, completion, buf.Pin());
    }

    /// <summary>
    /// Starts a flush (<c>nbd_aio_flush</c>). <paramref name="completion"/> is called exactly once with 0 or the
    /// server's errno; returning 1 retires the command, otherwise <see cref="AioCommandCompleted"/> does.
    /// </summary>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags">No flag is valid (EINVAL).</param>
    /// <returns>The command's cookie.</returns>
    /// <exception cref="NbdException">ENOTCONN before connecting; EINVAL in another wrong state, for any flag, or
    /// when the server does not advertise flush (nothing is sent then).</exception>
    public long AioFlush(CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_flush";
        CommandEngine engine = Connected(call);
        return IssueAio(engine, PrepareFlush(engine, call, flags), call, completion, default);
    }

    /// <summary>Starts a trim (<c>nbd_aio_trim</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioTrim(ulong count, ulong offset, CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_trim";
        CommandEngine engine = Connected(call);
        return IssueAio(engine, PrepareTrim(engine, call, count, offset, flags), call, completion, default);
    }

    /// <summary>Starts a cache (prefetch) request (<c>nbd_aio_cache</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags">No flag is valid.</param>
    /// <returns>The command's cookie.</returns>
    public long AioCache(ulong count, ulong offset, CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_cache";
        CommandEngine engine = Connected(call);
        return IssueAio(engine, PrepareCache(engine, call, count, offset, flags), call, completion, default);
    }

    /// <summary>Starts a write of zeroes (<c>nbd_aio_zero</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>, <see cref="CmdFlag.NoHole"/>, <see cref="CmdFlag.FastZero"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioZero(ulong count, ulong offset, CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_zero";
        CommandEngine engine = Connected(call);
        return IssueAio(engine, PrepareZero(engine, call, count, offset, flags), call, completion, default);
    }

    /// <summary>Starts a block status request with the 32-bit extent callback (<c>nbd_aio_block_status</c>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent">Called once per metadata context.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioBlockStatus(ulong count, ulong offset, ExtentCallback extent, CompletionCallback? completion = null,
        CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_block_status";
        ArgumentNullException.ThrowIfNull(extent);
        CommandEngine engine = Connected(call);
        Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
        cmd.Extent = extent;
        return IssueAio(engine, cmd, call, completion, default);
    }

    /// <summary>Starts a block status request with the 64-bit extent callback (<c>nbd_aio_block_status_64</c>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent64">Called once per metadata context.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioBlockStatus64(ulong count, ulong offset, Extent64Callback extent64, CompletionCallback? completion = null,
        CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_block_status_64";
        ArgumentNullException.ThrowIfNull(extent64);
        CommandEngine engine = Connected(call);
        Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
        cmd.Extent64 = extent64;
        return IssueAio(engine, cmd, call, completion, default);
    }

    /// <summary>Starts a filtered block status request (<c>nbd_aio_block_status_filter</c>); see <see cref="BlockStatusFilter"/>.</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="contexts">Negotiated context names to report.</param>
    /// <param name="extent64">Called once per reported context.</param>
    /// <param name="completion">Called once when the command completes; return 1 to retire it.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>; <see cref="CmdFlag.PayloadLen"/> as in <see cref="BlockStatusFilter"/>.</param>
    /// <returns>The command's cookie.</returns>
    public long AioBlockStatusFilter(ulong count, ulong offset, IReadOnlyList<string> contexts, Extent64Callback extent64,
        CompletionCallback? completion = null, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_block_status_filter";
        ArgumentNullException.ThrowIfNull(contexts);
        ArgumentNullException.ThrowIfNull(extent64);
        CommandEngine engine = Connected(call);
        Command cmd = PrepareBlockStatusFilter(engine, call, count, offset, contexts, flags);
        cmd.Extent64 = extent64;
        return IssueAio(engine, cmd, call, completion, default);
    }

    private static long IssueAio(CommandEngine engine, Command cmd, string call, CompletionCallback? completion, MemoryHandle pin)
    {
        engine.NoteObserved();
        cmd.Kind = CommandKind.Aio;
        cmd.CallName = call;
        cmd.Completion = completion;
        if (pin.Pointer != null)
        {
            cmd.Pin = pin;
            cmd.Data = (byte*)pin.Pointer;
        }
        try
        {
            return (long)engine.Issue(cmd, call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
        catch
        {
            pin.Dispose();
            cmd.Pin = default;
            cmd.Release();
            throw;
        }
    }

    /// <summary>
    /// Retires a completed aio command (<c>nbd_aio_command_completed</c>): true if it succeeded, false if it is
    /// still in flight. Unlike libnbd (which returns 0 and lets a polling loop spin forever) a cookie that is
    /// unknown or already retired is an error.
    /// </summary>
    /// <param name="cookie">The cookie an <c>Aio*</c> call returned.</param>
    /// <returns>True when completed successfully (and now retired), false while in flight.</returns>
    /// <exception cref="NbdException">The command's errno if it failed (it is then retired); EINVAL for an unknown cookie.</exception>
    public bool AioCommandCompleted(long cookie)
    {
        const string call = "nbd_aio_command_completed";
        ObjectDisposedException.ThrowIf(_disposed, this);
        CommandEngine? engine = _engine;
        if (engine == null)
            Throw(call, Errno.EINVAL, "invalid aio cookie " + cookie.ToString(System.Globalization.CultureInfo.InvariantCulture) + ": no command has been issued");
        try
        {
            return engine.CommandCompleted(cookie, call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// The cookie of a completed aio command not yet retired, 0 if commands are in flight but none has
    /// completed (<c>nbd_aio_peek_command_completed</c>).
    /// </summary>
    /// <returns>A cookie, or 0.</returns>
    /// <exception cref="NbdException">EINVAL when no command is in flight at all.</exception>
    public long AioPeekCommandCompleted()
    {
        const string call = "nbd_aio_peek_command_completed";
        ObjectDisposedException.ThrowIf(_disposed, this);
        CommandEngine? engine = _engine;
        if (engine == null)
            Throw(call, Errno.EINVAL, "no commands are in flight");
        try
        {
            return engine.PeekCompleted(call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>The number of commands in flight: sent and not yet answered (<c>nbd_aio_in_flight</c>).</summary>
    /// <returns>The count.</returns>
    public int AioInFlight()
    {
        CheckState("nbd_aio_in_flight", Allowed.Connected | Allowed.Closed | Allowed.Dead);
        return _engine?.AioInFlight() ?? 0;
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> milliseconds (-1 = forever) for the server and processes what
    /// arrives, running completion callbacks (<c>nbd_poll</c>).
    /// </summary>
    /// <param name="timeout">Milliseconds, or -1.</param>
    /// <returns>1 when something was processed, 0 on timeout.</returns>
    /// <exception cref="NbdException">EINVAL when there is nothing to poll (not connected, closed or dead).</exception>
    public int Poll(int timeout)
    {
        const string call = "nbd_poll";
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            PendingOperation? pending = _pending;
            if (pending != null)
                return PollPending(pending, timeout);
            CommandEngine? engine = _engine;
            if (engine == null)
                Throw(call, Errno.EINVAL, "nothing to poll for in state " + StateName(CurrentState));
            if (engine.IsReadingOnCurrentThread)
                Throw(call, Errno.EDEADLK, "cannot poll a handle from inside one of its own callbacks");
            return engine.Poll(timeout, call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// Queues NBD_CMD_DISC behind the requests issued before it (<c>nbd_aio_disconnect</c>): the server answers the
    /// commands in flight and closes the connection. Like the other aio calls it sends only what the socket takes at
    /// once; <see cref="Poll"/> sends the rest. No command may be issued afterwards (EINVAL).
    /// </summary>
    /// <param name="flags">No flag is valid.</param>
    public void AioDisconnect(CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_aio_disconnect";
        CommandEngine engine = Connected(call);
        CheckFlags(call, flags, CmdFlag.None);
        try
        {
            engine.Disconnect(call, wait: false);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// Disconnects in an orderly way and waits until the server has closed the connection (<c>nbd_shutdown</c>):
    /// the requests still queued are sent first and the commands in flight complete. With
    /// <see cref="ShutdownFlag.AbandonPending"/>, queued requests of which nothing was sent yet are dropped instead
    /// (they complete with ENOTCONN), so that NBD_CMD_DISC goes out next. As in libnbd, the call fails if
    /// the connection dies meanwhile (a malformed reply, even after NBD_CMD_DISC, a timeout, <see cref="Cancel"/>);
    /// a server that closes the connection between replies does not fail it, though the commands still in
    /// flight fail with ENOTCONN.
    /// </summary>
    /// <param name="flags"><see cref="ShutdownFlag"/> values.</param>
    public void Shutdown(ShutdownFlag flags = ShutdownFlag.None)
    {
        const string call = "nbd_shutdown";
        CheckState(call, Allowed.Negotiating | Allowed.Connected);
        if ((flags & ~ShutdownFlag.Mask) != 0)
            Throw(call, Errno.EINVAL, "flags: invalid value for flag: 0x" + ((uint)flags).ToString("x", System.Globalization.CultureInfo.InvariantCulture));
        if (CurrentState == HandleState.Negotiating)
        {
            OptAbort();
            return;
        }
        CommandEngine engine = _engine!;
        if (engine.IsReadingOnCurrentThread)
            Throw(call, Errno.EDEADLK, "cannot make a blocking call on a handle from inside one of its own callbacks");
        try
        {
            if ((flags & ShutdownFlag.AbandonPending) != 0)
                engine.AbandonUnsent();
            if (!engine.DisconnectRequested && engine.State == EngineState.Ready)
                engine.Disconnect(call, wait: true);
            engine.WaitClosed();
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
        if (engine.State == EngineState.Dead && !engine.EndedBetweenReplies)
        {
            throw ConnectionError(call, engine.End);
        }
    }

    /// <summary>Whether the handle is newly created, not yet connecting (<c>nbd_aio_is_created</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsCreated() => CurrentState == HandleState.Created;

    /// <summary>Whether the handle is connecting or in the handshake (<c>nbd_aio_is_connecting</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsConnecting() => CurrentState == HandleState.Connecting;

    /// <summary>Whether the handle is paused in option negotiation (opt mode; <c>nbd_aio_is_negotiating</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsNegotiating() => CurrentState == HandleState.Negotiating;

    /// <summary>Whether the handle is connected and idle: no request being written or reply being read (<c>nbd_aio_is_ready</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsReady() => CurrentState == HandleState.Connected && !_engine!.IsProcessing;

    /// <summary>Whether a request is being written or a reply read right now (<c>nbd_aio_is_processing</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsProcessing() => CurrentState == HandleState.Connected && _engine!.IsProcessing;

    /// <summary>Whether the connection failed; only disposing is useful now (<c>nbd_aio_is_dead</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsDead() => CurrentState == HandleState.Dead;

    /// <summary>Whether the connection was shut down cleanly (<c>nbd_aio_is_closed</c>).</summary>
    /// <returns>The state test.</returns>
    public bool AioIsClosed() => CurrentState == HandleState.Closed;

    /// <summary>A string describing the handle's state, for debugging; its format may change (<c>nbd_connection_state</c>).</summary>
    /// <returns>The description.</returns>
    public string ConnectionState()
    {
        HandleState state = CurrentState;
        string name = StateName(state);
        return state switch
        {
            HandleState.Created => name + ": handle is newly created",
            HandleState.Connecting => name + ": connecting to the server",
            HandleState.Negotiating => name + ": negotiating options with the server",
            HandleState.Connected => name + ": connection is ready to issue commands",
            HandleState.Closed => name + ": connection is closed",
            _ => name + ": connection is dead" + (_engine != null ? ": " + _engine.End.Reason : ""),
        };
    }
}
