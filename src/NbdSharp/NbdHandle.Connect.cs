using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Engine;
using NbdSharp.Negotiation;
using NbdSharp.Transport;

namespace NbdSharp;

/// <summary>Connecting: URIs, Unix and TCP sockets, each synchronous and Task-based.</summary>
public sealed partial class NbdHandle
{
    /// <summary>
    /// Connects to the server a URI names and completes the handshake (<c>nbd_connect_uri</c>):
    /// <c>nbd://host[:port]/export</c>, <c>nbd+unix:///export?socket=PATH</c> (the form without the slash that
    /// nbdkit's <c>--run</c> hands out, <c>nbd+unix://?socket=PATH</c>, works too). Allowed only when newly created.
    /// </summary>
    /// <param name="uri">The NBD URI.</param>
    /// <exception cref="NbdException">EINVAL for a bad URI, EPERM for one the <c>SetUriAllow*</c> policy forbids,
    /// the connection's errno, or the server's refusal.</exception>
    public void ConnectUri(string uri) =>
        SyncPath.Wait(ConnectUriCoreAsync(uri, async: false, CancellationToken.None));

    /// <inheritdoc cref="ConnectUri(string)"/>
    /// <param name="uri">The NBD URI.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectUriAsync(string uri, CancellationToken cancellationToken = default) =>
        ConnectUriCoreAsync(uri, async: true, cancellationToken).AsTask();

    /// <summary>Connects to a Unix domain socket and completes the handshake (<c>nbd_connect_unix</c>).</summary>
    /// <param name="unixSocket">The socket path.</param>
    /// <exception cref="NbdException">The connection's errno, or the server's refusal.</exception>
    public void ConnectUnix(string unixSocket)
    {
        ArgumentNullException.ThrowIfNull(unixSocket);
        SyncPath.Wait(ConnectCoreAsync("nbd_connect_unix", async: false,
            (async, ct) => Connectors.ConnectUnixAsync(unixSocket, async, "nbd_connect_unix", ct), CancellationToken.None));
    }

    /// <inheritdoc cref="ConnectUnix(string)"/>
    /// <param name="unixSocket">The socket path.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectUnixAsync(string unixSocket, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(unixSocket);
        return ConnectCoreAsync("nbd_connect_unix", async: true,
            (async, ct) => Connectors.ConnectUnixAsync(unixSocket, async, "nbd_connect_unix", ct), cancellationToken).AsTask();
    }

    /// <summary>
    /// Resolves <paramref name="hostname"/>, connects to <paramref name="port"/> (a number or "nbd"), trying
    /// each address in turn, and completes the handshake (<c>nbd_connect_tcp</c>).
    /// </summary>
    /// <param name="hostname">A host name or address.</param>
    /// <param name="port">A port number, or "nbd" for 10809.</param>
    /// <exception cref="NbdException">The connection's errno, or the server's refusal.</exception>
    public void ConnectTcp(string hostname, string port)
    {
        ArgumentNullException.ThrowIfNull(hostname);
        ArgumentNullException.ThrowIfNull(port);
        SyncPath.Wait(ConnectCoreAsync("nbd_connect_tcp", async: false,
            (async, ct) => Connectors.ConnectTcpAsync(hostname, port, async, "nbd_connect_tcp", ct), CancellationToken.None));
    }

    /// <inheritdoc cref="ConnectTcp(string, string)"/>
    /// <param name="hostname">A host name or address.</param>
    /// <param name="port">A port number, or "nbd" for 10809.</param>
    /// <param name="cancellationToken">Cancels connecting; the handle is then dead.</param>
    /// <returns>A task that completes when the handle is connected.</returns>
    public Task ConnectTcpAsync(string hostname, string port, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(hostname);
        ArgumentNullException.ThrowIfNull(port);
        return ConnectCoreAsync("nbd_connect_tcp", async: true,
            (async, ct) => Connectors.ConnectTcpAsync(hostname, port, async, "nbd_connect_tcp", ct), cancellationToken).AsTask();
    }

    private async ValueTask ConnectUriCoreAsync(string uri, bool async, CancellationToken cancellationToken)
    {
        const string call = "nbd_connect_uri";
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
        foreach (var parameter in parsed.Query)
        {
            if (parameter.Key.Equals("tls-certificates", StringComparison.OrdinalIgnoreCase) ||
                parameter.Key.Equals("tls-psk-file", StringComparison.OrdinalIgnoreCase))
            {
                if (!_uriAllowLocalFile)
                    Throw(call, Errno.EPERM, "local file access (" + parameter.Key + ") is not allowed, call nbd_set_uri_allow_local_file to enable this");
            }
        }
        if (parsed.Tls)
            SetTls(TlsMode.Require);
        SetExportName(parsed.ExportName);

        switch (parsed.Transport)
        {
            case NbdUriTransport.Tcp:
                string host = parsed.Host ?? "localhost";
                string port = (parsed.Port ?? Protocol.NbdProtocol.DefaultPort).ToString(System.Globalization.CultureInfo.InvariantCulture);
                await ConnectCoreAsync(call, async, (a, ct) => Connectors.ConnectTcpAsync(host, port, a, call, ct), cancellationToken).ConfigureAwait(false);
                break;
            case NbdUriTransport.Unix:
                await ConnectCoreAsync(call, async, (a, ct) => Connectors.ConnectUnixAsync(socketPath!, a, call, ct), cancellationToken).ConfigureAwait(false);
                break;
            default:
                Throw(call, Errno.ENOTSUP, "URI transport " + parsed.Scheme + " is not supported by this build of NbdSharp");
                break;
        }
    }

    /// <summary>
    /// Opens a transport and runs the handshake. Any failure leaves the handle dead, as in libnbd; the
    /// transport is closed.
    /// </summary>
    private async ValueTask ConnectCoreAsync(string call, bool async,
        Func<bool, CancellationToken, ValueTask<Transport.Transport>> open, CancellationToken cancellationToken)
    {
        lock (_stateLock)
        {
            CheckState(call, Allowed.Created);
            _state = HandleState.Connecting;
        }
        Transport.Transport? transport = null;
        Negotiator? negotiator = null;
        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            transport = await open(async, cancellationToken).ConfigureAwait(false);
            lock (_stateLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                _connectingTransport = transport;
            }
            negotiator = new Negotiator(transport, CaptureSettings(), _log, call);
            await negotiator.RunAsync(async, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            lock (_stateLock)
            {
                _state = HandleState.Dead;
                _connectingTransport = null;
                if (negotiator != null)
                    RecordHandshake(negotiator);
            }
            negotiator?.Dispose();
            transport?.Dispose();
            throw;
        }
        byte[] leftover = negotiator.Leftover.ToArray();
        negotiator.Dispose();

        NegotiatedExport export = negotiator.Export;
        var contexts = new System.Collections.Generic.Dictionary<uint, string>();
        foreach (var context in export.MetaContexts)
            contexts[context.Key] = context.Value;
        var engine = new CommandEngine(transport, new ConnectionInfo
        {
            ExportSize = export.ExportSize,
            StructuredReplies = export.StructuredReplies,
            ExtendedHeaders = export.ExtendedHeaders,
            MetaContexts = contexts,
            Leftover = leftover,
        }, _log);
        bool disposed;
        lock (_stateLock)
        {
            RecordHandshake(negotiator);
            _connectingTransport = null;
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
