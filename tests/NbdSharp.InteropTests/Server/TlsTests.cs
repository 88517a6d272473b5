using System;
using System.Text.Json;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>
/// TLS between NbdSharp's server and clients nobody here wrote: libnbd's nbdinfo and nbdcopy (GnuTLS) with X.509
/// certificates, client certificates and PSK, in the modes nbdkit's <c>--tls</c> takes; and NbdSharp's own client.
/// The URIs use TCP on 127.0.0.1 where a client must refuse an unverified server: libnbd 1.14 trusts any server over a
/// Unix socket (CVE-2024-7383).
/// </summary>
public sealed class TlsTests : IDisposable
{
    private const int MiB = 1024 * 1024;
    private readonly TlsFiles _tls = new();

    public void Dispose() => _tls.Dispose();

    private NbdServerOptions X509(ServerTlsMode mode, bool verifyClients = false) => new()
    {
        Tls = mode,
        Certificate = ServerTlsFiles.LoadCertificate(_tls.ServerDirectory),
        ClientCertificateAuthorities = verifyClients ? ServerTlsFiles.LoadAuthorities(_tls.ServerDirectory) : null,
    };

    private NbdServerOptions Psk(ServerTlsMode mode) => new() { Tls = mode, PskKeys = ServerTlsFiles.LoadPskFile(_tls.PskFile) };

    private static string Tls(TestServer server, string query) =>
        "nbds+unix:///?socket=" + server.Socket + "&" + query;

    /// <summary>libnbd 1.14 takes the PSK username from the URI's user part only (not a tls-username parameter).</summary>
    private static string PskUri(TestServer server, string user, string pskFile) =>
        "nbds+unix://" + user + "@/?socket=" + server.Socket + "&tls-psk-file=" + pskFile;

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement;

    [Theory]
    [InlineData(ServerTlsMode.On)]
    [InlineData(ServerTlsMode.Require)]
    public void Nbdinfo_X509_NegotiatesTls(ServerTlsMode mode)
    {
        using var server = TestServer.Start(new MemoryExport(4 * MiB), X509(mode));
        JsonElement info = Json(Clients.Ok("/usr/bin/nbdinfo", "--json", Tls(server, "tls-certificates=" + _tls.ClientDirectory)));
        Assert.True(info.GetProperty("TLS").GetBoolean());
        Assert.Equal(4 * MiB, info.GetProperty("exports")[0].GetProperty("export-size").GetInt64());
        Assert.True(server.Log.WaitFor("TLS", TimeSpan.FromSeconds(10)), server.Log.ToString());
    }

    [Fact]
    public void Nbdinfo_TlsOn_StillServesAPlainClient_AndRequireRefusesIt()
    {
        using (var on = TestServer.Start(new MemoryExport(MiB), X509(ServerTlsMode.On)))
        {
            JsonElement info = Json(Clients.Ok("/usr/bin/nbdinfo", "--json", on.Uri));
            Assert.False(info.GetProperty("TLS").GetBoolean());
        }
        using var require = TestServer.Start(new MemoryExport(MiB), X509(ServerTlsMode.Require));
        RunResult plain = Clients.Libnbd("nbdinfo", require.Uri);
        Assert.NotEqual(0, plain.ExitCode);
        // libnbd 1.14 words NBD_REP_ERR_TLS_REQD so, against nbdkit --tls=require too.
        Assert.Contains("nbd_opt_go: server replied with error to opt_go request", plain.Stderr, StringComparison.Ordinal);
        Assert.True(require.Log.WaitFor("TLS", TimeSpan.FromSeconds(10)), require.Log.ToString());
    }

    [Fact]
    public void Nbdinfo_List_OverTls_ShowsEveryExport()
    {
        using var server = TestServer.Start(X509(ServerTlsMode.Require),
            new ExportSpec("a", new MemoryExport(MiB), "first"), new ExportSpec("b", new MemoryExport(2 * MiB), "second"));
        JsonElement list = Json(Clients.Ok("/usr/bin/nbdinfo", "--list", "--json", Tls(server, "tls-certificates=" + _tls.ClientDirectory)));
        JsonElement exports = list.GetProperty("exports");
        Assert.Equal(2, exports.GetArrayLength());
        Assert.Equal("a", exports[0].GetProperty("export-name").GetString());
        Assert.Equal("second", exports[1].GetProperty("description").GetString());
    }

    [Fact]
    public void Nbdcopy_OverTls_CopiesInAndOutByteForByte()
    {
        using var server = TestServer.Start(new MemoryExport(8 * MiB), X509(ServerTlsMode.Require));
        string uri = Tls(server, "tls-certificates=" + _tls.ClientDirectory);
        byte[] data = new byte[8 * MiB];
        new Random(15).NextBytes(data);
        string input = server.Directory.File("in.img");
        string output = server.Directory.File("out.img");
        System.IO.File.WriteAllBytes(input, data);
        Clients.Ok("/usr/bin/nbdcopy", input, uri);
        Clients.Ok("/usr/bin/nbdcopy", uri, output);
        Assert.Equal(data, System.IO.File.ReadAllBytes(output));
    }

    [Fact]
    public void ClientCertificates_AreRequiredWhenVerified()
    {
        using var server = TestServer.Start(new MemoryExport(MiB), X509(ServerTlsMode.Require, verifyClients: true));
        JsonElement info = Json(Clients.Ok("/usr/bin/nbdinfo", "--json", Tls(server, "tls-certificates=" + _tls.ClientDirectory)));
        Assert.True(info.GetProperty("TLS").GetBoolean());
        // The same authority's trust, but no client certificate: the server turns the client away.
        RunResult anonymous = Clients.Libnbd("nbdinfo", Tls(server, "tls-certificates=" + _tls.TrustOnlyDirectory));
        Assert.NotEqual(0, anonymous.ExitCode);
        Assert.True(server.Log.WaitFor("certificate", TimeSpan.FromSeconds(10)), server.Log.ToString());
    }

    [Fact]
    public void NbdinfoOverTcp_RefusesAServerSignedByAnotherAuthority()
    {
        var log = new RecordingLogger();
        using var server = new NbdServer(X509(ServerTlsMode.Require), log);
        using var export = new MemoryExport(MiB);
        server.AddExport("", export);
        int port = server.ListenTcp(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0)).Port;
        string uri = $"nbds://127.0.0.1:{port}/?tls-certificates={_tls.WrongAuthorityDirectory}";
        RunResult wrong = Clients.Libnbd("nbdinfo", uri);
        Assert.NotEqual(0, wrong.ExitCode);
        JsonElement right = Json(Clients.Ok("/usr/bin/nbdinfo", "--json", $"nbds://127.0.0.1:{port}/?tls-certificates={_tls.ClientDirectory}"));
        Assert.True(right.GetProperty("TLS").GetBoolean());
    }

    [Fact]
    public void Nbdinfo_Psk_WithTheRightKey_AndNotWithAnother()
    {
        using var server = TestServer.Start(new MemoryExport(3 * MiB), Psk(ServerTlsMode.Require));
        JsonElement info = Json(Clients.Ok("/usr/bin/nbdinfo", "--json", PskUri(server, "alice", _tls.PskFile)));
        Assert.True(info.GetProperty("TLS").GetBoolean());
        Assert.Equal(3 * MiB, info.GetProperty("exports")[0].GetProperty("export-size").GetInt64());

        string mallory = server.Directory.File("mallory.psk");
        System.IO.File.WriteAllText(mallory, "alice:" + new string('0', 64) + "\n");
        RunResult wrong = Clients.Libnbd("nbdinfo", PskUri(server, "alice", mallory));
        Assert.NotEqual(0, wrong.ExitCode);
        RunResult unknown = Clients.Libnbd("nbdinfo", PskUri(server, "someone-else", _tls.PskFile));
        Assert.NotEqual(0, unknown.ExitCode);
    }

    [Fact]
    public void Python_Psk_EveryCommandOverTls()
    {
        using var server = TestServer.Start(new MemoryExport(MiB), Psk(ServerTlsMode.Require));
        const string Script = """
import nbd, sys
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(sys.argv[2])
h.set_tls_username("alice")
h.connect_unix(sys.argv[1])
assert h.get_tls_negotiated()
h.pwrite(b"\x5a" * 65536, 4096)
assert h.pread(65536, 4096) == b"\x5a" * 65536
h.zero(8192, 4096)
assert h.pread(8192, 4096) == b"\0" * 8192
assert h.pread(4096, 12288) == b"\x5a" * 4096
h.trim(65536, 4096)
h.flush()
h.cache(4096, 0)
h.shutdown()
print("ok")
""";
        Assert.Equal("ok", Clients.Python(Script, server.Socket, _tls.PskFile).Trim());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NbdSharpClient_X509AndPsk(bool psk)
    {
        using var server = TestServer.Start(new MemoryExport(MiB), psk ? Psk(ServerTlsMode.Require) : X509(ServerTlsMode.Require));
        using NbdHandle h = ConnectNbdSharp(server, psk);
        Assert.True(h.GetTlsNegotiated());
        Assert.True(h.GetExtendedHeadersNegotiated());
        byte[] data = new byte[256 * 1024];
        new Random(3).NextBytes(data);
        h.Pwrite(data, 65536);
        byte[] back = new byte[data.Length];
        h.Pread(back, 65536);
        Assert.Equal(data, back);
        h.Shutdown();
    }

    /// <summary>The NbdSharp client over TLS, required: with the PSK file as alice, or trusting the test CA.</summary>
    private NbdHandle ConnectNbdSharp(TestServer server, bool psk)
    {
        var h = new NbdHandle();
        try
        {
            h.SetTls(TlsMode.Require);
            if (psk)
            {
                h.SetTlsPskFile(_tls.PskFile);
                h.SetTlsUsername("alice");
            }
            else
            {
                h.SetTlsCertificates(_tls.ClientDirectory);
            }
            h.ConnectUnix(server.Socket);
            return h;
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    /// <summary>
    /// After NBD_CMD_DISC the client sends its close_notify and waits for the server's close. A server that closed its
    /// socket with that record unread would reset the connection, and Shutdown would fail with ECONNRESET now and
    /// then: over many sessions, every Shutdown must end cleanly.
    /// </summary>
    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public void NbdSharpClient_ShutdownOverTls_EndsCleanlyEveryTime(bool psk, bool threadPerConnection)
    {
        NbdServerOptions options = psk ? Psk(ServerTlsMode.Require) : X509(ServerTlsMode.Require);
        options.ThreadPerConnection = threadPerConnection;
        using var server = TestServer.Start(new MemoryExport(MiB), options);
        for (int i = 0; i < 40; i++)
        {
            using NbdHandle h = ConnectNbdSharp(server, psk);
            h.Pread(new byte[512], 0);
            h.Shutdown();
        }
    }
}
