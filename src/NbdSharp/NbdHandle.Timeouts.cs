using System;
using System.Threading;
using NbdSharp.Engine;

namespace NbdSharp;

/// <summary>Beyond libnbd: timeouts and cancellation, so that a stalled server cannot hang a caller.</summary>
public sealed partial class NbdHandle
{
    // Ticks rather than TimeSpan: a field of a struct from another assembly leaves ReadyToRun code looking up every
    // field offset of the class at run time (docs/benchmarks.md).
    private long _requestTimeoutTicks;
    private long _connectTimeoutTicks;
    private volatile bool _cancelled;

    /// <summary>
    /// Beyond libnbd: how long a command may wait for its reply. When any command in flight has waited longer,
    /// the server is taken as stalled and the connection is ended: every command in flight then fails, once,
    /// with ETIMEDOUT (an NBD server cannot be asked to forget one request, so the connection cannot be kept).
    /// It may be changed at any time; <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/>
    /// (the default) waits forever, as libnbd does.
    /// </summary>
    /// <param name="timeout">The longest wait for a reply.</param>
    public void SetRequestTimeout(TimeSpan timeout)
    {
        TimeSpan value = CheckTimeout(timeout, "SetRequestTimeout");
        CommandEngine? engine;
        lock (_stateLock)
        {
            _requestTimeoutTicks = value.Ticks;
            engine = _engine;
        }
        if (engine != null)
            engine.SetRequestTimeout(value);
    }

    /// <summary>Beyond libnbd: the request timeout (<see cref="TimeSpan.Zero"/> when there is none).</summary>
    /// <returns>The timeout.</returns>
    public TimeSpan GetRequestTimeout()
    {
        lock (_stateLock)
            return TimeSpan.FromTicks(_requestTimeoutTicks);
    }

    /// <summary>
    /// Beyond libnbd: how long a connect call may take, from opening the connection to the end of the handshake
    /// (TLS included), and, in opt mode, each <c>Opt*</c> call. A connect that takes longer fails with ETIMEDOUT
    /// and leaves the handle dead. <see cref="TimeSpan.Zero"/> or <see cref="Timeout.InfiniteTimeSpan"/> (the
    /// default) waits forever, as libnbd does.
    /// </summary>
    /// <param name="timeout">The longest a connect may take.</param>
    public void SetConnectTimeout(TimeSpan timeout)
    {
        TimeSpan value = CheckTimeout(timeout, "SetConnectTimeout");
        lock (_stateLock)
            _connectTimeoutTicks = value.Ticks;
    }

    /// <summary>Beyond libnbd: the connect timeout (<see cref="TimeSpan.Zero"/> when there is none).</summary>
    /// <returns>The timeout.</returns>
    public TimeSpan GetConnectTimeout()
    {
        lock (_stateLock)
            return TimeSpan.FromTicks(_connectTimeoutTicks);
    }

    /// <summary>
    /// Beyond libnbd: cancels whatever the handle is doing, from any thread. A connect in progress fails with
    /// ECANCELED; on a connected handle every command in flight completes once with ECANCELED and every call
    /// blocked on the server returns. The handle is dead afterwards (only <see cref="Dispose"/> is left to do).
    /// </summary>
    public void Cancel()
    {
        CommandEngine? engine;
        Transport.Transport? connecting;
        Negotiation.Negotiator? negotiator;
        lock (_stateLock)
        {
            _cancelled = true;
            engine = _engine;
            connecting = _connectingTransport;
            negotiator = _negotiator;
            if (_state is HandleState.Negotiating)
                _state = HandleState.Dead;
        }
        connecting?.Abort();
        negotiator?.Transport.Abort();
        engine?.Break(Errno.ECANCELED, "the handle was cancelled");
    }

    private static TimeSpan CheckTimeout(TimeSpan timeout, string call)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
            return TimeSpan.Zero;
        if (timeout < TimeSpan.Zero)
            throw new NbdException(Errno.EINVAL, NbdException.Format(call, "the timeout must not be negative", Errno.EINVAL));
        return timeout;
    }

    /// <summary>
    /// Aborts a transport when the connect timeout passes (waking a blocked receive or send) and cancels a token
    /// for the parts that wait asynchronously (connecting a socket); then says it fired.
    /// </summary>
    private sealed class ConnectDeadline : IDisposable
    {
        private readonly NbdHandle _handle;
        private readonly CancellationTokenSource? _source;
        private readonly Func<Transport.Transport?> _target;
        private readonly CancellationToken _outer;

        public ConnectDeadline(NbdHandle handle, TimeSpan timeout, Func<Transport.Transport?> target, CancellationToken outer)
        {
            _handle = handle;
            _target = target;
            _outer = outer;
            Timeout = timeout;
            if (timeout <= TimeSpan.Zero)
            {
                Token = outer;
                return;
            }
            _source = CancellationTokenSource.CreateLinkedTokenSource(outer);
            _source.Token.Register(static state => ((ConnectDeadline)state!).Fire(), this);
            _source.CancelAfter(timeout);
            Token = _source.Token;
        }

        public TimeSpan Timeout { get; }

        /// <summary>Cancelled by the deadline or by the caller's token.</summary>
        public CancellationToken Token { get; }

        /// <summary>
        /// Whether the deadline (not the caller's token, nor <see cref="Cancel"/>) ended the connect. Read from the
        /// token itself, not from <see cref="Fire"/>: an asynchronous receive registered on the token later is told
        /// first, so its failure can reach <see cref="Translate"/> before <see cref="Fire"/> has run.
        /// </summary>
        public bool Fired => _source is { IsCancellationRequested: true } && !_outer.IsCancellationRequested && !_handle._cancelled;

        private void Fire()
        {
            Transport.Transport? transport;
            lock (_handle._stateLock)
                transport = _target();
            transport?.Abort();
        }

        /// <summary>The error a failure becomes: ETIMEDOUT after the deadline, ECANCELED after <see cref="Cancel"/>.</summary>
        public NbdConnectionException? Translate(string call, Exception failure)
        {
            if (Fired)
            {
                string detail = "connection timed out: the server did not complete the handshake within the connect timeout of " +
                                CommandEngine.FormatSeconds(Timeout);
                return new NbdConnectionException(Errno.ETIMEDOUT, NbdException.Format(call, detail, Errno.ETIMEDOUT), failure);
            }
            if (_handle._cancelled)
                return new NbdConnectionException(Errno.ECANCELED, NbdException.Format(call, "the handle was cancelled", Errno.ECANCELED), failure);
            return null;
        }

        public void Dispose() => _source?.Dispose();
    }
}
