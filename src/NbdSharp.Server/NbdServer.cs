using System;
using System.Buffers;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using NbdSharp.Server.Hosting;
using NbdSharp.Server.Negotiation;
using NbdSharp.Server.Tls;
using NbdSharp.Server.Transmission;

namespace NbdSharp.Server;

/// <summary>
/// An NBD server to embed: it serves one or more named <see cref="NbdExport"/>s to any NBD client (libnbd, qemu,
/// the Linux kernel's nbd-client, NbdSharp) over Unix sockets, TCP, sockets and streams you accepted yourself,
/// systemd socket activation, or standard input and output, with many clients at once and many requests in flight
/// per client.
/// </summary>
/// <example>
/// <code>
/// await using var server = new NbdServer();
/// server.AddExport("", new MemoryExport(1L &lt;&lt; 30));
/// string uri = server.ListenUnix("/tmp/disk.sock");   // nbd+unix:///?socket=/tmp/disk.sock
/// await server.RunAsync(cancellationToken);
/// </code>
/// </example>
public sealed class NbdServer : IAsyncDisposable, IDisposable
{
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly ExportRegistry _exports = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly object _lock = new();
    private readonly List<Socket> _listeners = [];
    private readonly List<string> _socketFiles = [];
    private readonly HashSet<Task> _tasks = [];
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _nextConnection;
    private int _connections;
    private Task? _stopTask;

    /// <summary>Creates a server with <paramref name="options"/> (defaults when null) that logs to <paramref name="logger"/>.</summary>
    public NbdServer(NbdServerOptions? options = null, ILogger? logger = null)
    {
        _options = options ?? new NbdServerOptions();
        _options.Validate();
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The options the server was created with.</summary>
    public NbdServerOptions Options => _options;

    /// <summary>How many clients are connected now.</summary>
    public int ConnectionCount => Volatile.Read(ref _connections);

    /// <summary>Completes once the server has stopped (after <see cref="StopAsync"/> or disposal).</summary>
    public Task Completion => _stopped.Task;

    /// <summary>
    /// Adds an export that clients select by <paramref name="name"/>. The first export added (or the one added with
    /// <paramref name="isDefault"/>) is also served to clients that ask for the empty name. The caller keeps
    /// ownership of <paramref name="export"/>: disposing the server does not dispose it.
    /// </summary>
    /// <param name="name">The export's name, at most 4096 bytes of UTF-8.</param>
    /// <param name="export">The disk.</param>
    /// <param name="description">A description shown by <c>nbdinfo</c> and <c>--list</c>, or null.</param>
    /// <param name="isDefault">Whether the empty name selects this export.</param>
    public void AddExport(string name, NbdExport export, string? description = null, bool isDefault = false)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(export);
        if (System.Text.Encoding.UTF8.GetByteCount(name) > Protocol.NbdProtocol.MaxString)
            throw new ArgumentException("an export name is at most 4096 bytes", nameof(name));
        if (export.Size < 0)
            throw new ArgumentException("the export's size is negative", nameof(export));
        if (!export.BlockSize.IsValid)
            throw new ArgumentException("the export's block sizes break proto.md's rules: " + export.BlockSize, nameof(export));
        _exports.Add(new ServedExport(name, description, export), isDefault);
    }

    /// <summary>The names of the exports, in the order they were added.</summary>
    public IReadOnlyList<string> ExportNames
    {
        get
        {
            ServedExport[] all = _exports.Snapshot();
            var names = new string[all.Length];
            for (int i = 0; i < all.Length; i++)
                names[i] = all[i].Name;
            return names;
        }
    }

    /// <summary>
    /// Listens on a new Unix domain socket at <paramref name="path"/> (which must not exist; it is removed when the
    /// server stops) and returns the NBD URI of the default export there.
    /// </summary>
    public string ListenUnix(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ThrowIfStopping();
        if (File.Exists(path) || Directory.Exists(path))
            throw new IOException("cannot listen on " + path + ": the file exists");
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            socket.Listen(512);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        lock (_lock)
            _socketFiles.Add(path);
        Start(socket, tcp: false);
        return "nbd+unix:///?socket=" + Uri.EscapeDataString(path).Replace("%2F", "/", StringComparison.Ordinal);
    }

    /// <summary>
    /// Listens on TCP at <paramref name="endpoint"/> (port 0 picks a free port; <see cref="IPAddress.IPv6Any"/> also
    /// accepts IPv4) and returns the endpoint bound.
    /// </summary>
    public IPEndPoint ListenTcp(IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ThrowIfStopping();
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6 && endpoint.Address.Equals(IPAddress.IPv6Any))
                socket.DualMode = true;
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endpoint);
            socket.Listen(512);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        Start(socket, tcp: true);
        return (IPEndPoint)socket.LocalEndPoint!;
    }

    /// <summary>Accepts clients on <paramref name="listener"/>, a socket already bound and listening; the server closes it when it stops.</summary>
    public void Listen(Socket listener)
    {
        ArgumentNullException.ThrowIfNull(listener);
        ThrowIfStopping();
        Start(listener, tcp: listener.ProtocolType == ProtocolType.Tcp);
    }

    /// <summary>
    /// Accepts clients on the sockets systemd (or a client's <c>[ CMD ]</c> / <c>ConnectSystemdSocketActivation</c>)
    /// passed to this process: when <c>LISTEN_PID</c> is this process and <c>LISTEN_FDS</c> is set, takes
    /// descriptors 3 onwards and unsets both variables. Returns how many sockets it took (0 when not activated).
    /// </summary>
    public int ListenSystemdActivation()
    {
        ThrowIfStopping();
        string? pid = Environment.GetEnvironmentVariable("LISTEN_PID");
        string? fds = Environment.GetEnvironmentVariable("LISTEN_FDS");
        if (pid == null || fds == null ||
            !int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out int listenPid) || listenPid != Environment.ProcessId ||
            !int.TryParse(fds, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count < 1 || count > 64)
            return 0;
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        Environment.SetEnvironmentVariable("LISTEN_FDNAMES", null);
        for (int i = 0; i < count; i++)
        {
            var socket = new Socket(new SafeSocketHandle(3 + i, ownsHandle: true));
            Start(socket, tcp: socket.ProtocolType == ProtocolType.Tcp);
        }
        return count;
    }

    /// <summary>Serves one client on a connected <paramref name="socket"/>; completes when that client is done.</summary>
    public Task ServeAsync(Socket socket, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(socket);
        return _options.ThreadPerConnection
            ? ServeAsync(new BlockingSocketStream(socket), Describe(socket), ownThread: true, cancellationToken)
            : ServeAsync(new NetworkStream(socket, ownsSocket: true), Describe(socket), ownThread: false, cancellationToken);
    }

    /// <summary>Serves one client on <paramref name="stream"/> (the server disposes it); completes when that client is done.</summary>
    public Task ServeStreamAsync(Stream stream, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return ServeAsync(stream, "a stream", ownThread: false, cancellationToken);
    }

    /// <summary>
    /// Serves one client on standard input and output (nbdkit's <c>-s</c>, what libnbd's <c>ConnectCommand</c>
    /// runs); completes when that client is done. Nothing else may use the console streams meanwhile.
    /// </summary>
    public Task ServeStdioAsync(CancellationToken cancellationToken = default)
    {
        var stream = new StdioStream(Console.OpenStandardInput(), Console.OpenStandardOutput());
        // The console streams block: the connection gets a thread of its own rather than holding a pool thread.
        return ServeAsync(stream, "standard input", ownThread: true, cancellationToken);
    }

    /// <summary>Runs until <paramref name="cancellationToken"/> fires or <see cref="StopAsync"/> is called, then stops gracefully.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using (cancellationToken.Register(static s => ((NbdServer)s!).StopAsync(), this))
            await _stopped.Task.ConfigureAwait(false);
    }

    /// <summary>
    /// Stops gracefully: closes the listeners, stops reading new requests, lets the requests in flight finish and
    /// their replies go out, then closes every connection. When <paramref name="cancellationToken"/> fires first,
    /// the remaining connections are cut at once.
    /// </summary>
    public Task StopAsync(CancellationToken cancellationToken = default)
    {
        lock (_lock)
            _stopTask ??= StopCoreAsync();
        return cancellationToken.CanBeCanceled ? WaitOrAbortAsync(_stopTask, cancellationToken) : _stopTask;
    }

    private async Task WaitOrAbortAsync(Task stop, CancellationToken cancellationToken)
    {
        try
        {
            await stop.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await _abort.CancelAsync().ConfigureAwait(false);
            await stop.ConfigureAwait(false);
        }
    }

    private async Task StopCoreAsync()
    {
        Socket[] listeners;
        string[] files;
        lock (_lock)
        {
            listeners = [.. _listeners];
            files = [.. _socketFiles];
            _listeners.Clear();
        }
        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (Socket listener in listeners)
            listener.Dispose();
        foreach (string file in files)
        {
            try
            {
                File.Delete(file);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        // Wait on what is unfinished; finished tasks leave the set from their continuations, which must not be
        // starved by a loop spinning on the lock.
        while (true)
        {
            var pending = new List<Task>();
            lock (_lock)
            {
                foreach (Task task in _tasks)
                {
                    if (!task.IsCompleted)
                        pending.Add(task);
                }
            }
            if (pending.Count == 0)
                break;
            await Task.WhenAll(pending).ConfigureAwait(false);
        }
        _stopped.TrySetResult();
    }

    /// <summary>Stops gracefully (see <see cref="StopAsync"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _abort.Dispose();
    }

    /// <summary>Stops, cutting the connections still open after the requests in flight have finished.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private void ThrowIfStopping() => ObjectDisposedException.ThrowIf(_stopping.IsCancellationRequested, this);

    private void Start(Socket listener, bool tcp)
    {
        lock (_lock)
        {
            if (_stopping.IsCancellationRequested)
            {
                listener.Dispose();
                throw new ObjectDisposedException(nameof(NbdServer));
            }
            _listeners.Add(listener);
        }
        Track(AcceptLoopAsync(listener, tcp));
    }

    private void Track(Task task)
    {
        lock (_lock)
            _tasks.Add(task);
        task.ContinueWith(static (t, s) =>
        {
            var server = (NbdServer)s!;
            lock (server._lock)
                server._tasks.Remove(t);
        }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task AcceptLoopAsync(Socket listener, bool tcp)
    {
        await Task.Yield();
        CancellationToken stopping = _stopping.Token;
        while (!stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException || stopping.IsCancellationRequested)
            {
                break;
            }
            catch (SocketException e)
            {
                // Out of descriptors or a client that gave up before being accepted: keep serving the others.
                new ServerLog(_logger, 0).Failed(e);
                try
                {
                    await Task.Delay(50, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                continue;
            }
            if (tcp)
                client.NoDelay = true;
            else
                NbdSharp.Transport.SocketTransport.WidenSendBuffer(client); // read replies leave whole, as a client's writes do
            string peer = Describe(client);
            if (_options.ThreadPerConnection)
                Track(RunOnOwnThread(new BlockingSocketStream(client), peer, CancellationToken.None));
            else
                Track(HandleAsync(new NetworkStream(client, ownsSocket: true), peer, CancellationToken.None));
        }
    }

    private Task ServeAsync(Stream stream, string peer, bool ownThread, CancellationToken cancellationToken)
    {
        if (_stopping.IsCancellationRequested)
        {
            stream.Dispose();
            throw new ObjectDisposedException(nameof(NbdServer));
        }
        Task task = ownThread ? RunOnOwnThread(stream, peer, cancellationToken) : HandleAsync(stream, peer, cancellationToken);
        Track(task);
        return task;
    }

    /// <summary>
    /// Serves a connection whose stream blocks on a thread of its own, as nbdkit does: with a
    /// <see cref="BlockingSocketStream"/> every await completes at once, so the whole connection runs on this thread.
    /// </summary>
    private Task RunOnOwnThread(Stream stream, string peer, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(static state =>
        {
            var (server, stream, peer, token, done) = ((NbdServer, Stream, string, CancellationToken, TaskCompletionSource))state!;
            try
            {
                server.HandleCoreAsync(stream, peer, token).GetAwaiter().GetResult();
            }
            finally
            {
                done.SetResult();
            }
        })
        {
            IsBackground = true,
            Name = "nbd connection",
        };
        thread.Start((this, stream, peer, cancellationToken, done));
        return done.Task;
    }

    private async Task HandleAsync(Stream stream, string peer, CancellationToken cancellationToken)
    {
        await Task.Yield();
        await HandleCoreAsync(stream, peer, cancellationToken).ConfigureAwait(false);
    }

    private async Task HandleCoreAsync(Stream stream, string peer, CancellationToken cancellationToken)
    {
        long id = Interlocked.Increment(ref _nextConnection);
        var log = new ServerLog(_logger, id);
        int count = Interlocked.Increment(ref _connections);
        CancellationTokenSource? linked = null;
        try
        {
            if (count > _options.MaxConnections)
            {
                log.Refused("too many connections (" + _options.MaxConnections + ")");
                return;
            }
            log.Accepted(peer);
            CancellationToken stop = _stopping.Token;
            if (cancellationToken.CanBeCanceled)
            {
                linked = CancellationTokenSource.CreateLinkedTokenSource(stop, cancellationToken);
                stop = linked.Token;
            }
            using CancellationTokenRegistration interrupt = InterruptOn(stream, stop);
            // StopAsync's token fired: whatever the connection waits for (a client that reads no replies, an export
            // that ignores its token), it ends now.
            using CancellationTokenRegistration cut = _abort.Token.Register(static s => Linger.Cut((Stream)s!), stream);
            string reason = await ServeConnectionAsync(stream, log, stop).ConfigureAwait(false);
            log.Closed(reason);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException
            or System.Security.Authentication.AuthenticationException)
        {
            log.Closed(e.Message);
        }
        catch (Exception e)
        {
            log.Failed(e);
        }
        finally
        {
            stream.Dispose();
            linked?.Dispose();
            Interlocked.Decrement(ref _connections);
        }
    }

    private async Task<string> ServeConnectionAsync(Stream stream, ServerLog log, CancellationToken stop)
    {
        var input = new InputBuffer(stream);
        var handshake = new ServerHandshake(stream, input, _exports, _options, log);
        Negotiated? negotiated;
        if (_options.HandshakeTimeout == Timeout.InfiniteTimeSpan)
        {
            negotiated = await handshake.RunAsync(stop).ConfigureAwait(false);
        }
        else
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
            timeout.CancelAfter(_options.HandshakeTimeout);
            // No request is in flight yet: at the timeout the connection is cut both ways, so a handshake blocked
            // sending replies to a client that reads none ends too.
            using CancellationTokenRegistration interrupt = timeout.Token.Register(static s => Linger.Cut((Stream)s!), stream);
            try
            {
                negotiated = await handshake.RunAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (timeout.IsCancellationRequested && e is OperationCanceledException or IOException or ObjectDisposedException)
            {
                return Cutoff(stop);
            }
            // A cut connection reads as end of stream: say why it ended.
            if (negotiated == null && timeout.IsCancellationRequested)
                return Cutoff(stop);
        }
        Stream transport = handshake.Stream;
        try
        {
            if (negotiated == null)
                return "the handshake ended";
            log.Transmission(negotiated.Export.Name, negotiated.Structured, negotiated.Extended);
            var loop = new TransmissionLoop(transport, input, negotiated, _options, log, _abort.Token);
            string reason = await loop.RunAsync(stop).ConfigureAwait(false);
            if (loop.Disconnected && !ReferenceEquals(transport, stream))
                await SayGoodbyeAsync(transport, stream, stop).ConfigureAwait(false);
            return reason;
        }
        finally
        {
            if (!ReferenceEquals(transport, stream))
                transport.Dispose();
        }
    }

    /// <summary>
    /// After NBD_CMD_DISC over TLS: sends close_notify and half-closes the socket, then reads and drops what the client
    /// still sends (its own close_notify) until it closes (<see cref="Linger.DrainAsync"/>). A client still waiting for
    /// the server's close (as libnbd's and NbdSharp's are after NBD_CMD_DISC) would see ECONNRESET instead of a clean end.
    /// </summary>
    private static async Task SayGoodbyeAsync(Stream transport, Stream stream, CancellationToken stop)
    {
        try
        {
            if (transport is SslStream ssl)
                await ssl.ShutdownAsync().ConfigureAwait(false);
            else if (transport is PskServerStream psk)
                await psk.CloseWritesAsync(stop).ConfigureAwait(false);
            Socket? socket = stream switch
            {
                BlockingSocketStream blocking => blocking.Socket,
                NetworkStream network => network.Socket,
                _ => null,
            };
            if (socket == null)
                return;
            socket.Shutdown(SocketShutdown.Send);
            byte[] scratch = ArrayPool<byte>.Shared.Rent(16 * 1024);
            try
            {
                await Linger.DrainAsync(stream, scratch, stop).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(scratch);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException
            or NotSupportedException or InvalidOperationException)
        {
            // The client left first, or too slowly: the connection ends either way.
        }
    }

    /// <summary>A blocked read does not see a cancellation token: shutting the socket's receive side ends it.</summary>
    private static CancellationTokenRegistration InterruptOn(Stream stream, CancellationToken token) =>
        stream is BlockingSocketStream blocking ? token.Register(static s => ((BlockingSocketStream)s!).Interrupt(), blocking) : default;

    private string Cutoff(CancellationToken stop) =>
        stop.IsCancellationRequested ? "the server is stopping" : "the handshake took longer than " + _options.HandshakeTimeout;


    private static string Describe(Socket socket)
    {
        try
        {
            return socket.RemoteEndPoint?.ToString() ?? "a socket";
        }
        catch (SocketException)
        {
            return "a socket";
        }
    }
}
