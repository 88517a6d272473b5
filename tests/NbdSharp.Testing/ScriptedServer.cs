using System;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Testing;

/// <summary>
/// A test-only NBD server that speaks the protocol under a script, so tests can make it misbehave in ways
/// no real server does (bad magic, unknown cookies, absurd lengths, chunks outside the request...). It listens
/// on a Unix socket in a private folder and serves one connection with the script.
/// </summary>
public sealed class ScriptedServer : IAsyncDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();

    private ScriptedServer(Func<ScriptedConnection, Task> script, int connections)
    {
        Socket = _dir.File("scripted.sock");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(Socket));
        _listener.Listen(connections);
        Completion = ServeAsync(script, connections);
    }

    /// <summary>Starts a server running <paramref name="script"/> for each of <paramref name="connections"/> connections.</summary>
    public static ScriptedServer Start(Func<ScriptedConnection, Task> script, int connections = 1) => new(script, connections);

    public string Socket { get; }

    public string Uri => "nbd+unix:///?socket=" + Socket;

    /// <summary>Completes when the script has finished (faulted if the script threw).</summary>
    public Task Completion { get; }

    private async Task ServeAsync(Func<ScriptedConnection, Task> script, int connections)
    {
        for (int i = 0; i < connections; i++)
        {
            Socket client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
            await using var connection = new ScriptedConnection(client);
            try
            {
                await script(connection).ConfigureAwait(false);
            }
            catch (Exception e) when (e is System.IO.IOException or SocketException or ObjectDisposedException or OperationCanceledException)
            {
                // The client went away while the script was still talking: the test looks at the client's side.
            }
        }
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (System.Threading.Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        try
        {
            await Completion.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        catch (TimeoutException)
        {
        }
        catch (SocketException)
        {
        }
        _stop.Dispose();
        _dir.Dispose();
    }
}
