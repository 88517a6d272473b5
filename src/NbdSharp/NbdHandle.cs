using System;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Diagnostics;
using NbdSharp.Engine;
using NbdSharp.Negotiation;

namespace NbdSharp;

/// <summary>
/// An NBD client handle: libnbd's <c>struct nbd_handle</c>. Create it, adjust settings, connect, issue
/// commands (synchronously, with libnbd's aio calls and cookies, or as tasks), and dispose of it.
/// Every libnbd call <c>nbd_foo_bar(h, ...)</c> is the method <c>FooBar(...)</c> here. The handle is
/// thread-safe: any number of threads may issue commands on one connection at once.
/// </summary>
public sealed partial class NbdHandle : IDisposable, IAsyncDisposable
{
    private static int s_handleCount;

    private readonly Lock _stateLock = new();
    private readonly DebugLog _log;
    private HandleState _state = HandleState.Created;
    private CommandEngine? _engine;
    private NegotiatedExport? _export;
    private Transport.Transport? _connectingTransport;
    private long _handshakeBytesSent;
    private long _handshakeBytesReceived;
    private long _handshakeChunksSent;
    private long _handshakeChunksReceived;
    private bool _disposed;

    /// <summary>Creates a handle (<c>nbd_create</c>) with libnbd's defaults, not yet connected.</summary>
    public NbdHandle()
    {
        int number = Interlocked.Increment(ref s_handleCount);
        _log = new DebugLog("nbd" + number.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>The coarse life cycle of a handle; once connected the engine refines ready/closed/dead.</summary>
    private enum HandleState
    {
        Created,
        Connecting,
        Negotiating,
        Connected,
        Closed,
        Dead,
    }

    /// <summary>The states a call may be made in (libnbd's permitted_states).</summary>
    [Flags]
    private enum Allowed
    {
        Created = 1,
        Connecting = 2,
        Negotiating = 4,
        Connected = 8,
        Closed = 16,
        Dead = 32,
    }

    /// <summary>The public state, with the engine's view folded in.</summary>
    private HandleState CurrentState
    {
        get
        {
            HandleState state = _state;
            // An aio connect or option that ended on its own thread is still "connecting" until Poll reports it, as
            // in libnbd, whose state machine moves only when polled: a `while (AioIsConnecting()) Poll(-1)` loop
            // must see it, and its callbacks run in that Poll.
            if (_pending != null)
                return HandleState.Connecting;
            if (state != HandleState.Connected)
                return state;
            return _engine!.State switch
            {
                EngineState.Ready => HandleState.Connected,
                EngineState.Closed => HandleState.Closed,
                _ => HandleState.Dead,
            };
        }
    }

    /// <summary>libnbd's short state names, used in error messages.</summary>
    private string StateName(HandleState state) => state switch
    {
        HandleState.Created => "START",
        HandleState.Connecting => "CONNECTING",
        HandleState.Negotiating => "NEGOTIATING",
        HandleState.Connected => _engine!.IsProcessing ? "PROCESSING" : "READY",
        HandleState.Closed => "CLOSED",
        _ => "DEAD",
    };

    /// <summary>Throws libnbd's "invalid state" error unless the handle is in one of <paramref name="allowed"/>.</summary>
    private void CheckState(string call, Allowed allowed)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        HandleState state = CurrentState;
        Allowed current = state switch
        {
            HandleState.Created => Allowed.Created,
            HandleState.Connecting => Allowed.Connecting,
            HandleState.Negotiating => Allowed.Negotiating,
            HandleState.Connected => Allowed.Connected,
            HandleState.Closed => Allowed.Closed,
            _ => Allowed.Dead,
        };
        if ((allowed & current) != 0)
            return;
        var text = new System.Text.StringBuilder();
        foreach (Allowed flag in new[] { Allowed.Created, Allowed.Connecting, Allowed.Negotiating, Allowed.Connected, Allowed.Closed, Allowed.Dead })
        {
            if ((allowed & flag) == 0)
                continue;
            if (text.Length > 0)
                text.Append(", or ");
            text.Append(flag switch
            {
                Allowed.Created => "newly created",
                Allowed.Connecting => "connecting",
                Allowed.Negotiating => "negotiating",
                Allowed.Connected => "connected with the server",
                Allowed.Closed => "shut down",
                _ => "dead",
            });
        }
        int errno = state == HandleState.Created ? Errno.ENOTCONN : Errno.EINVAL;
        throw Error(call, errno, "invalid state: " + StateName(state) + ": the handle must be " + text);
    }

    /// <summary>The engine of a connected handle, or libnbd's invalid-state error.</summary>
    private CommandEngine Connected(string call)
    {
        CheckState(call, Allowed.Connected);
        return _engine!;
    }

    /// <summary>
    /// libnbd's error for <paramref name="call"/> (<c>call: detail: strerror(errno)</c>), recorded as the thread's last
    /// error: the facade's checks run on the calling thread, before a call does anything, so this is where such a
    /// failure leaves the call.
    /// </summary>
    private static NbdException Error(string call, int errno, string detail)
    {
        var error = new NbdException(errno, NbdException.Format(call, detail, errno));
        Recorded(error);
        return error;
    }

    /// <summary>The error of <paramref name="call"/> on a connection that ended as <paramref name="end"/> says, recorded as <see cref="Error"/>.</summary>
    private static NbdConnectionException ConnectionError(string call, ConnectionEnd end)
    {
        string message = NbdException.Format(call, end.Reason, end.Errno);
        NbdConnectionException error = end.ProtocolViolation
            ? new NbdProtocolException(end.Errno, message)
            : new NbdConnectionException(end.Errno, message);
        Recorded(error);
        return error;
    }

    [DoesNotReturn]
    private static void Throw(string call, int errno, string detail) => throw Error(call, errno, detail);

    /// <summary>
    /// Closes the handle (<c>nbd_close</c>). A connected handle queues NBD_CMD_DISC and sends what the socket takes
    /// without waiting; commands still in flight complete with ENOTCONN (libnbd drops them silently: here every
    /// command completes once). Afterwards the handle holds no callback: those of commands in flight, the debug
    /// callback and the logger are released, as libnbd frees them.
    /// </summary>
    public void Dispose() => SyncPath.Wait(CloseAsync(async: false));

    /// <inheritdoc cref="Dispose"/>
    /// <remarks>Nothing here blocks the calling thread: leaving negotiation and waiting for a child server to exit are awaited.</remarks>
    /// <returns>A task that completes when the handle is closed and its child server, if any, has exited.</returns>
    public ValueTask DisposeAsync() => CloseAsync(async: true);

    /// <summary>Closes the handle, once; with <paramref name="async"/> false it completes synchronously.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask CloseAsync(bool async)
    {
        CommandEngine? engine;
        Transport.Transport? transport;
        Negotiation.Negotiator? negotiator;
        lock (_stateLock)
        {
            if (_disposed)
                return;
            if (_log.Enabled)
                _log.Write("nbd_close", "closing handle");
            _log.Close();
            _disposed = true;
            engine = _engine;
            transport = _connectingTransport;
            _connectingTransport = null;
            negotiator = _negotiator;
            _negotiator = null;
        }
        AbandonPending();
        if (negotiator != null)
        {
            // Leaving negotiation politely, as libnbd's close does not (it just closes): NBD_OPT_ABORT.
            if (CurrentState == HandleState.Negotiating)
                await negotiator.AbortAsync(async, System.Threading.CancellationToken.None).ConfigureAwait(false);
            negotiator.Transport.Dispose();
            negotiator.Dispose();
        }
        if (engine != null)
        {
            if (engine.State == EngineState.Ready && !engine.DisconnectRequested)
            {
                try
                {
                    engine.Disconnect("nbd_close", wait: false);
                }
                catch (NbdException)
                {
                    // Closing anyway.
                }
            }
            engine.Dispose();
        }
        transport?.Dispose();
        // Socket activation children run until told; a command child ends when its connection closes.
        if (_child != null)
            await _child.ReapAsync(ChildGrace, _child.TerminateOnClose, async).ConfigureAwait(false);
    }

    /// <summary>How long a closing handle waits for its child server to exit before terminating it.</summary>
    private static readonly TimeSpan ChildGrace = TimeSpan.FromSeconds(5);

    /// <summary>A thread-safe snapshot of the negotiated export, or null before the server sent it.</summary>
    private NegotiatedExport? Export => _export;
}
