using System;
using System.Globalization;
using NbdSharp.InteropTests.Server;
using NbdSharp.Server;
using NbdSharp.Testing;

namespace NbdSharp.InteropTests;

/// <summary>Which server a test that needs only a well-behaved one runs against.</summary>
public enum Peer
{
    /// <summary>nbdkit, started by the test (Linux with Debian's nbdkit).</summary>
    Nbdkit,

    /// <summary>NbdSharp's own server in this process: needs nothing but .NET, so these tests run wherever .NET does.</summary>
    Embedded,
}

/// <summary>
/// A memory, pattern or null disk served by nbdkit or by the embedded <see cref="NbdServer"/>, on a Unix socket in a
/// private folder, for the client tests that do not depend on one server's particular answers: each runs against both.
/// </summary>
internal sealed class WellBehavedServer : IDisposable
{
    private readonly ServerProcess? _nbdkit;
    private readonly TestServer? _embedded;

    private WellBehavedServer(ServerProcess? nbdkit, TestServer? embedded)
    {
        _nbdkit = nbdkit;
        _embedded = embedded;
    }

    /// <summary>The Unix socket.</summary>
    public string Socket => _nbdkit?.Socket ?? _embedded!.Socket;

    /// <summary>An <c>nbd+unix</c> URI of the default export.</summary>
    public string Uri => _nbdkit?.Uri ?? _embedded!.Uri;

    /// <summary>Serves nbdkit's <paramref name="plugin"/> (memory, pattern or null) of <paramref name="size"/> (as nbdkit writes it: 16M, 1G).</summary>
    public static WellBehavedServer Start(Peer peer, string plugin, string size)
    {
        if (peer == Peer.Nbdkit)
            return new WellBehavedServer(Peers.Nbdkit(plugin, size), null);
        long bytes = ParseSize(size);
        NbdExport export = plugin switch
        {
            "memory" => new MemoryExport(bytes),
            "pattern" => new PatternExport(bytes),
            "null" => new NullExport(bytes),
            _ => throw new ArgumentException("no embedded counterpart of nbdkit's " + plugin + " plugin", nameof(plugin)),
        };
        return new WellBehavedServer(null, TestServer.Start(export));
    }

    private static long ParseSize(string size)
    {
        long unit = char.ToUpperInvariant(size[^1]) switch
        {
            'K' => 1L << 10,
            'M' => 1L << 20,
            'G' => 1L << 30,
            _ => 1,
        };
        string digits = unit == 1 ? size : size[..^1];
        return long.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture) * unit;
    }

    public void Dispose()
    {
        _nbdkit?.Dispose();
        _embedded?.Dispose();
    }
}
