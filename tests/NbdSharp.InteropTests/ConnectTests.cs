using System;
using System.Buffers.Binary;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Connecting over TCP and Unix sockets and through every URI form, synchronously and as tasks.</summary>
public class ConnectTests
{
    private static ServerProcess NbdkitOnTcp(out int port, params string[] plugin) => Peers.NbdkitOnFreePort(out port, plugin);

    [Fact]
    public async Task Tcp_AllForms()
    {
        using ServerProcess server = NbdkitOnTcp(out int port, "pattern", "1M");
        string portText = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        byte[] buffer = new byte[8];

        using (var h = new NbdHandle())
        {
            h.ConnectTcp("127.0.0.1", portText);
            h.Pread(buffer, 4096);
            Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
        }
        await using (var h = new NbdHandle())
        {
            await h.ConnectTcpAsync("localhost", portText);
            Assert.Equal(1 << 20, h.GetSize());
        }
        using (var h = new NbdHandle())
        {
            h.ConnectUri($"nbd://127.0.0.1:{port}/");
            Assert.Equal(1 << 20, h.GetSize());
        }
        await using (var h = new NbdHandle())
        {
            await h.ConnectUriAsync($"nbd://localhost:{port}");
            Assert.Equal(1 << 20, h.GetSize());
        }
    }

    [Fact]
    public void Tcp_ConnectionRefused_IsEconnrefused()
    {
        int port = Peers.FreePort();
        using var h = new NbdHandle();
        var e = Assert.Throws<NbdConnectionException>(() => h.ConnectUri($"nbd://127.0.0.1:{port}/"));
        Assert.Equal(Errno.ECONNREFUSED, e.Errno);
        Assert.StartsWith("nbd_connect_uri: connect: 127.0.0.1:", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unix_UriForms_IncludingNbdkitsRunForm()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        foreach (string uri in new[] { "nbd+unix:///?socket=" + server.Socket, "nbd+unix://?socket=" + server.Socket, "NBD+UNIX:///?socket=" + server.Socket })
        {
            using var h = new NbdHandle();
            h.ConnectUri(uri);
            Assert.Equal(1 << 20, h.GetSize());
        }
        await using var a = new NbdHandle();
        await a.ConnectUnixAsync(server.Socket);
        Assert.Equal(1 << 20, a.GetSize());
    }

    [Fact]
    public void UriPolicy_RefusesWithEperm()
    {
        using var h = new NbdHandle();
        h.SetUriAllowTransports(AllowTransport.Tcp);
        var e = Assert.Throws<NbdException>(() => h.ConnectUri("nbd+unix:///?socket=/tmp/x"));
        Assert.Equal(Errno.EPERM, e.Errno);
        using var h2 = new NbdHandle();
        h2.SetUriAllowTls(TlsMode.Require);
        Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h2.ConnectUri("nbd://localhost/")).Errno);
        using var h3 = new NbdHandle();
        Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h3.ConnectUri("nbd+unix:///?socket=/x&tls-certificates=/etc")).Errno);
        using var h4 = new NbdHandle();
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h4.ConnectUri("nbd+unix:///export")).Errno);
        using var h5 = new NbdHandle();
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h5.ConnectUri("nbd://localhost/?socket=/x")).Errno);
    }

    [Fact]
    public void Ipv6Literal_InUriAndConnectTcp()
    {
        if (!System.Net.Sockets.Socket.OSSupportsIPv6)
            Assert.Skip("this machine has no IPv6");
        int port = Peers.FreePort();
        using ServerProcess server = Peers.NbdkitTcpOn("::1", port, "pattern", "1M");
        using (var h = new NbdHandle())
        {
            h.ConnectUri($"nbd://[::1]:{port}/");
            Assert.Equal(1 << 20, h.GetSize());
            Assert.Equal($"nbd://[::1]:{port}/", h.GetUri());
        }
        using (var h = new NbdHandle())
        {
            h.ConnectTcp("::1", port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            byte[] buffer = new byte[8];
            h.Pread(buffer, 512);
            Assert.Equal(512UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
        }
    }

    [Fact]
    public void UriQuery_ParametersActAsTheirSetters()
    {
        using ServerProcess server = NbdkitOnTcp(out int port, "pattern", "1M");
        // nbd-port overrides the authority's port; the user part and tls-* set the TLS settings even without TLS.
        using (var h = new NbdHandle())
        {
            h.ConnectUri($"nbd://bob@127.0.0.1:1/?nbd-port={port}&tls-hostname=disk.example&tls-username=carol&tls-verify-peer=no");
            Assert.Equal(1 << 20, h.GetSize());
            Assert.Equal("disk.example", h.GetTlsHostname());
            Assert.Equal("bob", h.GetTlsUsername()); // the authority's user is applied after the query, as in libnbd
            Assert.False(h.GetTlsVerifyPeer());
            Assert.Equal(TlsMode.Disable, h.GetTls());
        }
        using (var h = new NbdHandle())
        {
            NbdException e = Assert.Throws<NbdException>(() => h.ConnectUri($"nbd://127.0.0.1:{port}/?tls-verify-peer=maybe"));
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("expecting tls-verify-peer=true|false", e.Message, StringComparison.Ordinal);
        }
        using (var h = new NbdHandle())
            Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.ConnectUri($"nbd://127.0.0.1/?nbd-port=70000")).Errno);
        using (var h = new NbdHandle())
            Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h.ConnectUri($"nbd://127.0.0.1:{port}/?tls-priority=NORMAL")).Errno);
        // vsock URIs: a CID must be a number, and the transport can be refused.
        using (var h = new NbdHandle())
        {
            NbdException e = Assert.Throws<NbdException>(() => h.ConnectUri("nbd+vsock://host/"));
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("vsock CID", e.Message, StringComparison.Ordinal);
        }
        using (var h = new NbdHandle())
        {
            h.SetUriAllowTransports(AllowTransport.Tcp | AllowTransport.Unix);
            Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h.ConnectUri("nbds+vsock://1:10809/")).Errno);
        }
        using (var h = new NbdHandle())
        {
            NbdException e = Assert.Throws<NbdException>(() => h.ConnectUri("ftp://example.com/"));
            Assert.Equal(Errno.EINVAL, e.Errno);
        }
    }

    [Fact]
    public async Task AsyncForms_OfCallbackCommands()
    {
        using ServerProcess server = Peers.Nbdkit("sparse-random", "16M", "seed=7", "percent=50");
        await using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        await h.ConnectUriAsync(server.Uri);
        int contexts = 0;
        await h.BlockStatusAsync(1 << 20, 0, (string context, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
        {
            contexts++;
            Assert.Equal(MetaContext.BaseAllocation, context);
            Assert.True(entries.Length >= 2);
            return 0;
        });
        await h.BlockStatus64Async(1 << 20, 0, (string _, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            contexts++;
            Assert.NotEqual(0UL, entries[0].Length);
            return 0;
        });
        Assert.Equal(2, contexts);
        byte[] viaChunks = new byte[1 << 20], viaPread = new byte[1 << 20];
        long bytes = 0;
        await h.PreadStructuredAsync(viaChunks, 0, (ReadOnlySpan<byte> sub, ulong _, uint _, ref int _) =>
        {
            bytes += sub.Length;
            return 0;
        });
        await h.PreadAsync(viaPread, 0);
        Assert.Equal(1L << 20, bytes);
        Assert.Equal(viaPread, viaChunks);
        Task failing = h.PreadAsync(new byte[512], 16 << 20).AsTask();
        Assert.Equal(Errno.EINVAL, (await Assert.ThrowsAsync<NbdException>(() => failing)).Errno);
    }
}
