using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Engine;
using NbdSharp.Negotiation;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp;

/// <summary>
/// Connecting: URIs, TCP, Unix, vsock, an adopted socket, a command on a socketpair and systemd socket activation,
/// each synchronous, Task-based, and as libnbd's aio call (which returns at once: <see cref="Poll"/> sees it finish).
/// </summary>
public sealed partial class NbdHandle
{
    private delegate ValueTask<OpenedTransport> Opener(bool async, CancellationToken cancellationToken);

    private Endpoint _endpoint = Endpoint.Unnamed;
    private ChildServer? _child;

    /// <summary>The connect got as far as the handshake (an aio connect's later failures are Poll's to report).</summary>
    private bool _handshakeBegun;
    private string _socketActivationName = "";

    /// <summary>
    /// Connects to the server a URI names and completes the handshake (<c>nbd_connect_uri</c>):
    /// <c>nbd[s]://host[:port]/export</c>, <c>nbd[s]+unix:///export?socket=PATH</c> (the form without the slash
    /// that nbdkit's <c>--run</c> hands out works too), <c>nbd[s]+vsock://cid[:port]/export</c>. Allowed only when
    /// newly created.
    /// </summary>
    /// <param name="uri">The NBD URI.</param>
    /// <exception cref="NbdException">EINVAL for a bad URI, EPERM for one the <c>SetUriAllow*</c> policy forbids,
    /// the connection's errno, or the server's refusal.</exception>
    public void ConnectUri(string uri) => Synchronously(ConnectUriCoreAsync("nbd_connect_uri", uri, async: false, CancellationToken.None));

    /// <inheritdoc cref="ConnectUri(string)"/>
    /// <param name="uri">The NBD URI.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected (or negotiating, in opt mode).</returns>
    public Task ConnectUriAsync(string uri, CancellationToken cancellationToken = default) =>
        ConnectUriCoreAsync("nbd_connect_uri", uri, async: true, cancellationToken).AsTask();

    /// <summary>Starts <see cref="ConnectUri(string)"/> without waiting (<c>nbd_aio_connect_uri</c>).</summary>
    /// <param name="uri">The NBD URI.</param>
    public void AioConnectUri(string uri)
    {
        const string call = "nbd_aio_connect_uri";
        CheckState(call, Allowed.Created);
        StartConnect(ConnectUriCoreAsync(call, uri, async: true, CancellationToken.None).AsTask());
    }

    /// <summary>Connects to a Unix domain socket and completes the handshake (<c>nbd_connect_unix</c>).</summary>
    /// <param name="unixSocket">The socket path.</param>
    public void ConnectUnix(string unixSocket) => Connect("nbd_connect_unix", Unix(unixSocket, "nbd_connect_unix"));

    /// <inheritdoc cref="ConnectUnix(string)"/>
    /// <param name="unixSocket">The socket path.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectUnixAsync(string unixSocket, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_unix", Unix(unixSocket, "nbd_connect_unix"), cancellationToken);

    /// <summary>Starts <see cref="ConnectUnix(string)"/> without waiting (<c>nbd_aio_connect_unix</c>).</summary>
    /// <param name="unixSocket">The socket path.</param>
    public void AioConnectUnix(string unixSocket) => AioConnect("nbd_aio_connect_unix", Unix(unixSocket, "nbd_aio_connect_unix"));

    /// <summary>
    /// Resolves <paramref name="hostname"/>, connects to <paramref name="port"/> (a number or "nbd"), trying
    /// each address in turn, and completes the handshake (<c>nbd_connect_tcp</c>).
    /// </summary>
    /// <param name="hostname">A host name or address.</param>
    /// <param name="port">A port number, or "nbd" for 10809.</param>
    public void ConnectTcp(string hostname, string port) => Connect("nbd_connect_tcp", Tcp(hostname, port, "nbd_connect_tcp"));

    /// <inheritdoc cref="ConnectTcp(string, string)"/>
    /// <param name="hostname">A host name or address.</param>
    /// <param name="port">A port number, or "nbd" for 10809.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectTcpAsync(string hostname, string port, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_tcp", Tcp(hostname, port, "nbd_connect_tcp"), cancellationToken);

    /// <summary>Starts <see cref="ConnectTcp(string, string)"/> without waiting (<c>nbd_aio_connect_tcp</c>).</summary>
    /// <param name="hostname">A host name or address.</param>
    /// <param name="port">A port number, or "nbd".</param>
    public void AioConnectTcp(string hostname, string port) => AioConnect("nbd_aio_connect_tcp", Tcp(hostname, port, "nbd_aio_connect_tcp"));

    /// <summary>Starts connecting to a raw address, a Unix or IP end point, without waiting (<c>nbd_aio_connect</c>).</summary>
    /// <param name="address">A <see cref="UnixDomainSocketEndPoint"/> or <see cref="IPEndPoint"/>.</param>
    public void AioConnect(EndPoint address)
    {
        const string call = "nbd_aio_connect";
        ArgumentNullException.ThrowIfNull(address);
        AioConnect(call, (async, ct) => Connectors.ConnectEndPointAsync(address, async, call, ct));
    }

    /// <summary>Connects over AF_VSOCK to <paramref name="cid"/>:<paramref name="port"/> and completes the handshake (<c>nbd_connect_vsock</c>).</summary>
    /// <param name="cid">The context id (1 is the local machine, 2 the host of a virtual machine).</param>
    /// <param name="port">The vsock port.</param>
    /// <exception cref="NbdException">ENOTSUP where the platform has no vsock.</exception>
    public void ConnectVsock(uint cid, uint port) => Connect("nbd_connect_vsock", Vsock(cid, port, "nbd_connect_vsock"));

    /// <inheritdoc cref="ConnectVsock(uint, uint)"/>
    /// <param name="cid">The context id.</param>
    /// <param name="port">The vsock port.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectVsockAsync(uint cid, uint port, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_vsock", Vsock(cid, port, "nbd_connect_vsock"), cancellationToken);

    /// <summary>Starts <see cref="ConnectVsock(uint, uint)"/> without waiting (<c>nbd_aio_connect_vsock</c>).</summary>
    /// <param name="cid">The context id.</param>
    /// <param name="port">The vsock port.</param>
    public void AioConnectVsock(uint cid, uint port) => AioConnect("nbd_aio_connect_vsock", Vsock(cid, port, "nbd_aio_connect_vsock"));

    /// <summary>
    /// Completes the handshake over a transport that is already connected (the fuzzing harness and tests run the
    /// whole client over an in-memory transport this way). The handle owns the transport from now on.
    /// </summary>
    internal void ConnectTransport(Transport.Transport transport) =>
        Connect("nbd_connect_socket", (_, _) => ValueTask.FromResult(new OpenedTransport(transport, new Endpoint(EndpointKind.Unnamed))));

    /// <summary>
    /// Completes the handshake over a socket that is already connected to a server (<c>nbd_connect_socket</c>).
    /// The handle owns the socket from now on.
    /// </summary>
    /// <param name="socket">A connected stream socket.</param>
    public void ConnectSocket(Socket socket) => Connect("nbd_connect_socket", Adopt(socket, "nbd_connect_socket"));

    /// <inheritdoc cref="ConnectSocket(Socket)"/>
    /// <param name="socket">A connected stream socket.</param>
    /// <param name="cancellationToken">Cancels the handshake; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectSocketAsync(Socket socket, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_socket", Adopt(socket, "nbd_connect_socket"), cancellationToken);

    /// <summary>Starts <see cref="ConnectSocket(Socket)"/> without waiting (<c>nbd_aio_connect_socket</c>).</summary>
    /// <param name="socket">A connected stream socket.</param>
    public void AioConnectSocket(Socket socket) => AioConnect("nbd_aio_connect_socket", Adopt(socket, "nbd_aio_connect_socket"));

    /// <summary>
    /// Runs a server as a child speaking NBD on its stdin and stdout, e.g. <c>["nbdkit", "-s", "memory", "1G"]</c>,
    /// and completes the handshake (<c>nbd_connect_command</c>). Disposing the handle closes the connection and
    /// reaps the child.
    /// </summary>
    /// <param name="argv">The program (found on PATH) and its arguments.</param>
    public void ConnectCommand(IReadOnlyList<string> argv) => Connect("nbd_connect_command", Command(argv, "nbd_connect_command"));

    /// <inheritdoc cref="ConnectCommand(IReadOnlyList{string})"/>
    /// <param name="argv">The program and its arguments.</param>
    /// <param name="cancellationToken">Cancels the handshake; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectCommandAsync(IReadOnlyList<string> argv, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_command", Command(argv, "nbd_connect_command"), cancellationToken);

    /// <summary>Starts <see cref="ConnectCommand(IReadOnlyList{string})"/> without waiting (<c>nbd_aio_connect_command</c>).</summary>
    /// <param name="argv">The program and its arguments.</param>
    public void AioConnectCommand(IReadOnlyList<string> argv) => AioConnect("nbd_aio_connect_command", Command(argv, "nbd_aio_connect_command"));

    /// <summary>
    /// Runs a server with systemd socket activation, e.g. <c>["nbdkit", "pattern", "1G"]</c> or qemu-nbd: it gets a
    /// listening Unix socket as fd 3 with LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES set (see
    /// <see cref="SetSocketActivationName"/>); then connects and completes the handshake
    /// (<c>nbd_connect_systemd_socket_activation</c>). Disposing the handle stops the server (SIGTERM) and reaps it.
    /// </summary>
    /// <param name="argv">The program (found on PATH) and its arguments.</param>
    public void ConnectSystemdSocketActivation(IReadOnlyList<string> argv) =>
        Connect("nbd_connect_systemd_socket_activation", SocketActivation(argv, "nbd_connect_systemd_socket_activation"));

    /// <inheritdoc cref="ConnectSystemdSocketActivation(IReadOnlyList{string})"/>
    /// <param name="argv">The program and its arguments.</param>
    /// <param name="cancellationToken">Cancels the handshake; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectSystemdSocketActivationAsync(IReadOnlyList<string> argv, CancellationToken cancellationToken = default) =>
        ConnectAsync("nbd_connect_systemd_socket_activation", SocketActivation(argv, "nbd_connect_systemd_socket_activation"), cancellationToken);

    /// <summary>Starts <see cref="ConnectSystemdSocketActivation(IReadOnlyList{string})"/> without waiting (<c>nbd_aio_connect_systemd_socket_activation</c>).</summary>
    /// <param name="argv">The program and its arguments.</param>
    public void AioConnectSystemdSocketActivation(IReadOnlyList<string> argv) =>
        AioConnect("nbd_aio_connect_systemd_socket_activation", SocketActivation(argv, "nbd_aio_connect_systemd_socket_activation"));

    /// <summary>
    /// Sets the name passed to a socket-activated server in LISTEN_FDNAMES (<c>nbd_set_socket_activation_name</c>);
    /// "" (the default) passes "unknown". At most 32 alphanumeric ASCII characters.
    /// </summary>
    /// <param name="socketName">The name.</param>
    public void SetSocketActivationName(string socketName)
    {
        const string call = "nbd_set_socket_activation_name";
        ArgumentNullException.ThrowIfNull(socketName);
        CheckState(call, Allowed.Created);
        if (socketName.Length > 32)
            Throw(call, Errno.ENAMETOOLONG, "socket activation name should be <= 32 characters");
        foreach (char c in socketName)
        {
            if (!char.IsAsciiLetterOrDigit(c))
                Throw(call, Errno.EINVAL, "socket activation name should contain only alphanumeric ASCII characters");
        }
        _socketActivationName = socketName;
    }

    /// <summary>The socket activation name (<c>nbd_get_socket_activation_name</c>).</summary>
    /// <returns>The name, or "".</returns>
    public string GetSocketActivationName() => _socketActivationName;

    /// <summary>Sends <paramref name="signum"/> (0 means SIGTERM) to the server this handle started (<c>nbd_kill_subprocess</c>).</summary>
    /// <param name="signum">A signal number, or 0.</param>
    /// <exception cref="NbdException">ESRCH when the handle started no subprocess; EINVAL for a negative signal.</exception>
    public void KillSubprocess(int signum)
    {
        const string call = "nbd_kill_subprocess";
        // Only Linux starts subprocesses (Connectors.ConnectCommand, ConnectSocketActivation).
        ChildServer child = _child ?? throw Error(call, Errno.ESRCH, "no subprocess exists");
        if (signum < 0)
            Throw(call, Errno.EINVAL, "invalid signal number: " + signum.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (!child.Signal(signum == 0 ? 15 : signum, out int errno))
            Throw(call, errno, "kill");
    }

    /// <summary>The process id of the server this handle started (<c>nbd_get_subprocess_pid</c>).</summary>
    /// <returns>The PID.</returns>
    /// <exception cref="NbdException">ESRCH when the handle started no subprocess.</exception>
    public long GetSubprocessPid() => (_child ?? throw Error("nbd_get_subprocess_pid", Errno.ESRCH, "no subprocess exists")).Pid;

    private static Opener Unix(string unixSocket, string call)
    {
        ArgumentNullException.ThrowIfNull(unixSocket);
        return (async, ct) => Connectors.ConnectUnixAsync(unixSocket, async, call, ct);
    }

    private static Opener Tcp(string hostname, string port, string call)
    {
        ArgumentNullException.ThrowIfNull(hostname);
        ArgumentNullException.ThrowIfNull(port);
        return (async, ct) => Connectors.ConnectTcpAsync(hostname, port, async, call, ct);
    }

    private static Opener Vsock(uint cid, uint port, string call) =>
        (_, _) => ValueTask.FromResult(Connectors.ConnectVsock(cid, port, call));

    private static Opener Adopt(Socket socket, string call)
    {
        ArgumentNullException.ThrowIfNull(socket);
        return (_, _) => ValueTask.FromResult(Connectors.Adopt(socket, call));
    }

    private static Opener Command(IReadOnlyList<string> argv, string call)
    {
        ArgumentNullException.ThrowIfNull(argv);
        return (_, _) => ValueTask.FromResult(Connectors.ConnectCommand(argv, call));
    }

    private Opener SocketActivation(IReadOnlyList<string> argv, string call)
    {
        ArgumentNullException.ThrowIfNull(argv);
        string name = _socketActivationName;
        return (_, _) => ValueTask.FromResult(Connectors.ConnectSocketActivation(argv, name, call));
    }

    private void Connect(string call, Opener open) => Synchronously(ConnectCoreAsync(call, async: false, open, CancellationToken.None));

    /// <summary>The end of a synchronous connect: its failure is the thread's last error.</summary>
    private static void Synchronously(ValueTask connect)
    {
        try
        {
            SyncPath.Wait(connect);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    private Task ConnectAsync(string call, Opener open, CancellationToken cancellationToken) =>
        ConnectCoreAsync(call, async: true, open, cancellationToken).AsTask();

    private void AioConnect(string call, Opener open)
    {
        CheckState(call, Allowed.Created);
        StartConnect(ConnectCoreAsync(call, async: true, open, CancellationToken.None).AsTask());
    }

    /// <summary>
    /// As libnbd, a connect that fails before it has to wait (a bad URI, a missing socket file, a refused
    /// local connection) fails the aio call itself; anything later is reported by <see cref="Poll"/>, also a
    /// handshake that failed before the call returned (a server that exits at once can close the connection
    /// that early).
    /// </summary>
    private void StartConnect(Task connect)
    {
        if (connect.IsFaulted && !_handshakeBegun)
        {
            Exception failure = connect.Exception!.InnerException!;
            if (failure is NbdException e)
                Recorded(e);
            ExceptionDispatchInfo.Throw(failure);
        }
        StartPending(connect, null);
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask ConnectUriCoreAsync(string call, string uri, bool async, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(uri);
        CheckState(call, Allowed.Created);
        if (!NbdUri.TryParse(uri, out NbdUri? parsed, out string? error))
            Throw(call, Errno.EINVAL, error);

        AllowTransport needed = parsed.Transport switch
        {
            NbdUriTransport.Tcp => AllowTransport.Tcp,
            NbdUriTransport.Unix => AllowTransport.Unix,
            NbdUriTransport.Vsock => AllowTransport.Vsock,
            _ => AllowTransport.Ssh,
        };
        if ((_uriAllowTransports & needed) == 0)
            Throw(call, Errno.EPERM, "URI transport " + parsed.Scheme + " is not permitted");
        if ((parsed.Tls && _uriAllowTls == TlsMode.Disable) || (!parsed.Tls && _uriAllowTls == TlsMode.Require))
            Throw(call, Errno.EPERM, "URI TLS setting " + parsed.Scheme + " is not permitted");

        string? socketPath = parsed.Socket;
        if (parsed.Transport == NbdUriTransport.Unix && socketPath == null)
            Throw(call, Errno.EINVAL, "cannot parse socket parameter from NBD URI (did you mean to use \"" + parsed.Scheme + ":///?socket=...\"?)");
        if (parsed.Transport is NbdUriTransport.Tcp or NbdUriTransport.Vsock && socketPath != null)
            Throw(call, Errno.EINVAL, "socket parameter is incompatible with \"" + parsed.Scheme + ":\" (did you mean to use \"" +
                                      (parsed.Tls ? "nbds" : "nbd") + "+unix:///?socket=...\"?)");
        if (parsed.Tls)
            SetTls(TlsMode.Require);
        int? nbdPort = ApplyUriQuery(call, parsed);
        if (parsed.User != null)
            SetTlsUsername(parsed.User);
        SetExportName(parsed.ExportName);

        Opener open;
        switch (parsed.Transport)
        {
            case NbdUriTransport.Tcp:
                open = Tcp(parsed.Host ?? "localhost", (nbdPort ?? parsed.Port ?? Protocol.NbdProtocol.DefaultPort).ToString(System.Globalization.CultureInfo.InvariantCulture), call);
                break;
            case NbdUriTransport.Unix:
                open = Unix(socketPath!, call);
                break;
            case NbdUriTransport.Vsock:
                uint cid = 2;
                if (parsed.Host != null && !uint.TryParse(parsed.Host, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out cid))
                    Throw(call, Errno.EINVAL, "cannot parse vsock CID from NBD URI: " + uri);
                open = Vsock(cid, (uint)(nbdPort ?? parsed.Port ?? Protocol.NbdProtocol.DefaultPort), call);
                break;
            default:
                Throw(call, Errno.ENOTSUP, "URI transport " + parsed.Scheme + " is not supported by NbdSharp");
                return;
        }
        await ConnectCoreAsync(call, async, open, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The query parameters libnbd 1.24 understands, applied as the matching setters would: <c>tls-certificates</c>
    /// and <c>tls-psk-file</c> (only with <see cref="SetUriAllowLocalFile"/>), <c>tls-hostname</c>,
    /// <c>tls-username</c>, <c>tls-verify-peer</c>, <c>tls-priority</c> (only with <see cref="SetUriAllowTlsPriority"/>)
    /// and <c>nbd-port</c>, whose value it returns. Others are ignored, as libnbd does.
    /// </summary>
    private int? ApplyUriQuery(string call, NbdUri parsed)
    {
        int? nbdPort = null;
        foreach (var parameter in parsed.Query)
        {
            string value = parameter.Value;
            switch (parameter.Key.ToLowerInvariant())
            {
                case "tls-certificates":
                    RequireLocalFileAccess(call, "tls-certificates");
                    SetTlsCertificates(value);
                    break;
                case "tls-psk-file":
                    RequireLocalFileAccess(call, "tls-psk-file");
                    SetTlsPskFile(value);
                    break;
                case "tls-hostname":
                    SetTlsHostname(value);
                    break;
                case "tls-username":
                    SetTlsUsername(value);
                    break;
                case "tls-verify-peer":
                    SetTlsVerifyPeer(ParseUriBool(call, "tls-verify-peer", value));
                    break;
                case "tls-priority":
                    if (!_uriAllowTlsPriority)
                        Throw(call, Errno.EPERM, "tls-priority parameter is not allowed, call nbd_set_uri_allow_tls_priority to enable this");
                    SetTlsPriority(value);
                    break;
                case "nbd-port":
                    if (!int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port) ||
                        port is < 1 or > 65535)
                    {
                        Throw(call, Errno.EINVAL, "could not parse nbd-port parameter: " + value);
                    }
                    nbdPort = port;
                    break;
            }
        }
        return nbdPort;
    }

    private void RequireLocalFileAccess(string call, string parameter)
    {
        if (!_uriAllowLocalFile)
            Throw(call, Errno.EPERM, "local file access (" + parameter + ") is not allowed, call nbd_set_uri_allow_local_file to enable this");
    }

    /// <summary>libnbd's spellings of a boolean URI parameter.</summary>
    private static bool ParseUriBool(string call, string parameter, string value)
    {
        switch (value.ToLowerInvariant())
        {
            case "1" or "true" or "t" or "yes" or "y" or "on":
                return true;
            case "0" or "false" or "f" or "no" or "n" or "off":
                return false;
            default:
                throw Error(call, Errno.EINVAL, "could not parse " + parameter + " parameter, expecting " + parameter + "=true|false");
        }
    }

    /// <summary>
    /// Opens a transport and runs the handshake, up to the transmission phase or, in opt mode, to the
    /// negotiating state. Any failure leaves the handle dead, as in libnbd; the transport is closed.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask ConnectCoreAsync(string call, bool async, Opener open, CancellationToken cancellationToken)
    {
        lock (_stateLock)
        {
            CheckState(call, Allowed.Created);
            _state = HandleState.Connecting;
        }
        Transport.Transport? transport = null;
        Negotiator? negotiator = null;
        bool negotiating;
        using var deadline = new ConnectDeadline(this, GetConnectTimeout(), () => _connectingTransport, cancellationToken);
        cancellationToken = deadline.Token;
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            OpenedTransport opened = await open(async, cancellationToken).ConfigureAwait(false);
            transport = opened.Transport;
            lock (_stateLock)
            {
                _endpoint = opened.Endpoint;
                _child = opened.Child;
                ObjectDisposedException.ThrowIf(_disposed, this);
                _connectingTransport = transport;
            }
            negotiator = new Negotiator(transport, CaptureSettings(), _log, call);
            _handshakeBegun = true;
            negotiating = await negotiator.RunAsync(async, _optMode, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception failure)
        {
            lock (_stateLock)
            {
                _state = HandleState.Dead;
                _connectingTransport = null;
                if (negotiator != null)
                    RecordHandshake(negotiator);
            }
            if (negotiator != null && negotiator.Transport != transport)
                negotiator.Transport.Dispose(); // the TLS layer over the connection
            negotiator?.Dispose();
            transport?.Dispose();
            _child?.Reap(ChildGrace, terminate: false);
            if (deadline.Translate(call, failure) is { } timedOut)
                throw timedOut;
            throw;
        }
        if (negotiating)
            EnterNegotiating(negotiator);
        else
            EnterTransmission(negotiator);
    }

    /// <summary>Opt mode: the handle waits in the negotiating state for the caller's <c>Opt*</c> calls.</summary>
    private void EnterNegotiating(Negotiator negotiator)
    {
        bool disposed;
        lock (_stateLock)
        {
            RecordHandshake(negotiator);
            _connectingTransport = null;
            disposed = _disposed;
            if (!disposed)
            {
                _negotiator = negotiator;
                _state = HandleState.Negotiating;
            }
        }
        if (disposed)
        {
            negotiator.Transport.Dispose();
            negotiator.Dispose();
            throw new ObjectDisposedException(nameof(NbdHandle));
        }
    }

    /// <summary>The handshake is over: the engine takes the transport and the negotiated export.</summary>
    private void EnterTransmission(Negotiator negotiator)
    {
        NegotiatedExport export = negotiator.Export;
        NegotiatedContext[] contexts = export.MetaContexts.ToArray();
        byte[] leftover = negotiator.Leftover.ToArray();
        Transport.Transport transport = negotiator.Transport;
        negotiator.Dispose();
        var engine = new CommandEngine(transport, new ConnectionInfo
        {
            ExportSize = export.ExportSize,
            StructuredReplies = export.StructuredReplies,
            ExtendedHeaders = export.ExtendedHeaders,
            MetaContexts = contexts,
            Leftover = leftover,
        }, _log);
        engine.SetRequestTimeout(GetRequestTimeout());
        bool disposed;
        lock (_stateLock)
        {
            RecordHandshake(negotiator);
            _connectingTransport = null;
            _negotiator = null;
            disposed = _disposed;
            if (!disposed)
            {
                _engine = engine;
                _state = HandleState.Connected;
            }
        }
        if (disposed)
        {
            engine.Dispose();
            throw new ObjectDisposedException(nameof(NbdHandle));
        }
    }

    private void RecordHandshake(Negotiator negotiator)
    {
        _export = negotiator.Export;
        _handshakeBytesSent = negotiator.BytesSent;
        _handshakeBytesReceived = negotiator.BytesReceived;
        _handshakeChunksSent = negotiator.ChunksSent;
        _handshakeChunksReceived = negotiator.ChunksReceived;
    }
}
