using System;
using System.Globalization;
using System.Collections.Generic;

namespace NbdSharp;

/// <summary>
/// libnbd's event-loop integration and handle introspection. NbdSharp reads replies on the threads that wait (see
/// <see cref="Poll"/>), so an external event loop needs no more than the socket to wait on: when
/// <see cref="AioGetFd"/> is readable, <see cref="AioNotifyRead"/> processes what arrived.
/// </summary>
public sealed partial class NbdHandle
{
    /// <summary>
    /// The file descriptor of the connection's socket, for an external event loop (<c>nbd_aio_get_fd</c>). For TLS it
    /// is the socket under the encryption: readable then means TLS records have arrived, not necessarily a reply.
    /// </summary>
    /// <returns>The descriptor.</returns>
    /// <exception cref="NbdException">EINVAL when there is no connection, or none with a socket: a command's server
    /// reached over two pipes (<see cref="ConnectCommand"/> where libc is not called, as on macOS and Windows).</exception>
    public int AioGetFd()
    {
        Transport.Transport? transport = _engine?.TransportForPolling ?? _negotiator?.Transport;
        int fd = transport?.FileDescriptor ?? -1;
        if (fd < 0)
            Throw("nbd_aio_get_fd", Errno.EINVAL, "connection is not in a connected state");
        return fd;
    }

    /// <summary>
    /// What the connection waits for (<c>nbd_aio_get_direction</c>): <see cref="AioDirection.Read"/> while connected
    /// (a reply may arrive), <see cref="AioDirection.Both"/> while requests wait to be written (an event loop then
    /// watches the descriptor for writing too and calls <see cref="AioNotifyWrite"/>), nothing otherwise.
    /// </summary>
    /// <returns>The direction.</returns>
    public AioDirection AioGetDirection() => CurrentState switch
    {
        HandleState.Connected => _engine!.HasQueuedRequests ? AioDirection.Both : AioDirection.Read,
        HandleState.Connecting => AioDirection.Read,
        _ => AioDirection.None,
    };

    /// <summary>
    /// Tells the handle its socket is readable (<c>nbd_aio_notify_read</c>): processes the replies that arrived,
    /// running completion callbacks, without waiting.
    /// </summary>
    public void AioNotifyRead()
    {
        const string call = "nbd_aio_notify_read";
        if (_pending != null || _engine == null)
        {
            Poll(0);
            return;
        }
        if (_engine.IsReadingOnCurrentThread)
            Throw(call, Errno.EDEADLK, "cannot make a blocking call on a handle from inside one of its own callbacks");
        try
        {
            _engine.Poll(0, call, notified: true);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// Holds back the aio requests this thread issues, on any handle, until the returned scope is disposed, and then
    /// sends them together: those without a payload (reads, zeroes, block status) go out up to 16 in one send, and
    /// the server is woken once for them all. An event loop wraps its notify calls in one, so that the requests its
    /// completion callbacks issue (a copy's next reads) leave in one go. This is NbdSharp's, not libnbd's: libnbd's aio
    /// calls always send at once, and so do ours outside a scope.
    /// </summary>
    /// <remarks>
    /// Nothing issued in the scope reaches the server before the scope ends, so nothing in it may wait for the reply
    /// to such a request (a callback that blocks until another handle's command completes, say). Synchronous and
    /// Task-based calls are not held back, and they send what their handle holds before them. Scopes nest: the
    /// outermost sends.
    /// </remarks>
    /// <returns>The scope, to dispose on the same thread (<c>using var batch = NbdHandle.BatchRequests();</c>).</returns>
    public static RequestBatch BatchRequests()
    {
        Engine.CommandEngine.BeginBatch();
        return new RequestBatch(true);
    }

    /// <summary>
    /// Tells the handle its socket is writable (<c>nbd_aio_notify_write</c>): sends what the socket takes of the
    /// requests waiting to be written, without blocking.
    /// </summary>
    /// <exception cref="NbdException">EINVAL when nothing waits to be written (<see cref="AioGetDirection"/> does not
    /// include <see cref="AioDirection.Write"/>), as libnbd refuses the event in that state.</exception>
    public void AioNotifyWrite()
    {
        const string call = "nbd_aio_notify_write";
        ObjectDisposedException.ThrowIf(_disposed, this);
        HandleState state = CurrentState;
        if (state != HandleState.Connected)
            Throw(call, Errno.EINVAL, "external event 1 (notify write) is invalid in state " + StateName(state));
        try
        {
            _engine!.NotifyWrite(call, StateName(state));
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// As <see cref="Poll"/>, and also returns when <paramref name="fd"/> becomes readable (<c>nbd_poll2</c>), e.g. an
    /// eventfd another thread uses to wake the loop.
    /// </summary>
    /// <param name="fd">A file descriptor to watch for reading, or -1.</param>
    /// <param name="timeout">Milliseconds, or -1.</param>
    /// <returns>1 when something was processed or <paramref name="fd"/> is readable, 0 on timeout.</returns>
    public int Poll2(int fd, int timeout)
    {
        if (fd < 0)
            return Poll(timeout);
        long deadline = timeout < 0 ? long.MaxValue : Environment.TickCount64 + timeout;
        while (true)
        {
            // Alternate between the handle and the extra descriptor in short slices, so neither waits long for the other.
            int slice = timeout < 0 ? 10 : (int)Math.Clamp(deadline - Environment.TickCount64, 0, 10);
            if (Poll(0) == 1 || Transport.Connectors.FdReadable(fd, slice) || Poll(0) == 1)
                return 1;
            if (timeout >= 0 && Environment.TickCount64 >= deadline)
                return 0;
        }
    }

    /// <summary>The first unexpected exception the reader turned into a dead connection (a bug of ours), for the fuzzing harness.</summary>
    internal Exception? InternalError => _engine?.InternalError;

    /// <summary>Who reads replies right now: whether a thread holds the role, and how many synchronous callers queue for it (tests).</summary>
    internal (bool Taken, int Volunteers) ReaderRoleForTests => _engine?.ReaderRoleForTests ?? default;

    /// <summary>A rough count of the bytes this handle holds (<c>nbd_get_handle_size</c>), for garbage-collected bindings.</summary>
    /// <returns>The estimate.</returns>
    public long GetHandleSize() => 1024 + (_engine?.ApproximateSize ?? 0) + (_negotiator != null ? 32 * 1024 : 0);

    /// <summary>
    /// An NBD URI that would connect to the same server and export (<c>nbd_get_uri</c>). For socket activation it names
    /// the socket the handle made (kept until the handle is closed). Unknown for an adopted socket or a command.
    /// </summary>
    /// <returns>The URI.</returns>
    /// <exception cref="NbdException">EINVAL when no URI can describe the connection.</exception>
    public string GetUri()
    {
        const string call = "nbd_get_uri";
        CheckState(call, Allowed.Connecting | Allowed.Negotiating | Allowed.Connected | Allowed.Closed | Allowed.Dead);
        Transport.Endpoint endpoint = _endpoint;
        // libnbd: nbds when TLS is required or was negotiated.
        bool tls = _tls == TlsMode.Require || _export is { TlsNegotiated: true };
        var query = new List<KeyValuePair<string, string>>();
        (NbdUriTransport transport, string? host, int? port) = endpoint.Kind switch
        {
            Transport.EndpointKind.Tcp => (NbdUriTransport.Tcp, endpoint.Host, (int?)NumericPort(endpoint.Port)),
            Transport.EndpointKind.Unix => (NbdUriTransport.Unix, (string?)null, (int?)null),
            Transport.EndpointKind.Vsock => (NbdUriTransport.Vsock, endpoint.Cid.ToString(CultureInfo.InvariantCulture), (int?)(int)endpoint.VsockPort),
            _ => throw Error(call, Errno.EINVAL, "cannot construct a URI for this connection type"),
        };
        if (transport == NbdUriTransport.Unix)
            query.Add(new("socket", endpoint.Host));
        if (_tlsCertificates != null)
            query.Add(new("tls-certificates", _tlsCertificates));
        if (_tlsPskFile != null)
            query.Add(new("tls-psk-file", _tlsPskFile));
        if (_tlsHostname != null)
            query.Add(new("tls-hostname", _tlsHostname));
        if (!_tlsVerifyPeer)
            query.Add(new("tls-verify-peer", "false"));
        return NbdUri.Describe(transport, tls, _tlsUsername, host, port, _exportName, query).ToString();
    }

    /// <summary>A TCP port as the URI prints it: the number, or the NBD port for the service name "nbd".</summary>
    private static int NumericPort(string port) =>
        int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int number) ? number : Protocol.NbdProtocol.DefaultPort;

}
