using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// TLS against nbdkit: X.509 (certificates made by openssl for the test) and TLS-PSK, over TCP and Unix sockets;
/// verification failures, fallbacks, client certificates and opt mode.
/// </summary>
public sealed class TlsTests : IDisposable
{
    private readonly TlsFiles _files = new();

    public void Dispose() => _files.Dispose();

    private ServerProcess X509Server(params string[] more)
    {
        var args = new List<string> { "--tls=require", "--tls-certificates=" + _files.ServerDirectory };
        args.AddRange(more);
        args.AddRange(["memory", "8M"]);
        return Peers.Nbdkit([.. args]);
    }

    private ServerProcess PskServer() => Peers.Nbdkit("--tls=require", "--tls-psk=" + _files.PskFile, "memory", "8M");

    private static void RoundTrip(NbdHandle h) => Exercise.WriteReadBack(h, 65536, 256 * 1024, seed: 9);

    /// <summary>A handle that requires TLS-PSK with <paramref name="user"/>'s key from <paramref name="file"/>.</summary>
    private static NbdHandle PskClient(string file, string user = "alice")
    {
        var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        h.SetTlsPskFile(file);
        h.SetTlsUsername(user);
        return h;
    }

    /// <summary>A handle that requires TLS and trusts (or presents) the certificates of <paramref name="dir"/>.</summary>
    private static NbdHandle X509Client(string dir)
    {
        var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        h.SetTlsCertificates(dir);
        return h;
    }

    [Fact]
    public void X509_OverUnixSocket_WithUri_VerifiesTheServer()
    {
        using ServerProcess server = X509Server();
        using var h = new NbdHandle();
        string uri = $"nbds+unix:///?socket={server.Socket}&tls-certificates={_files.TrustOnlyDirectory}";
        // Reading local files from a URI needs the caller's consent, as in libnbd.
        Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h.ConnectUri(uri)).Errno);
        Assert.True(h.AioIsCreated());
        h.SetUriAllowLocalFile(true);
        h.ConnectUri(uri);
        Assert.True(h.GetTlsNegotiated());
        Assert.Equal(TlsMode.Require, h.GetTls());
        Assert.Equal(8 << 20, h.GetSize());
        RoundTrip(h);
    }

    [Fact]
    public async Task X509_OverTcp_ChecksTheHostname()
    {
        using ServerProcess server = Peers.NbdkitOnFreePort(out int port, "--tls=require", "--tls-certificates=" + _files.ServerDirectory, "memory", "8M");
        string portText = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (string host in new[] { "127.0.0.1", "localhost" })
        {
            await using NbdHandle h = X509Client(_files.TrustOnlyDirectory);
            await h.ConnectTcpAsync(host, portText);
            Assert.True(h.GetTlsNegotiated());
            Assert.Equal(host, h.GetTlsHostname());
            byte[] data = [1, 2, 3, 4];
            await h.PwriteAsync(data, 0);
            byte[] back = new byte[4];
            await h.PreadAsync(back, 0);
            Assert.Equal(data, back);
        }

        // The certificate is for localhost and 127.0.0.1: any other expected name is refused.
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            h.SetTlsHostname("nbd.example.com");
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectTcp("127.0.0.1", portText));
            Assert.Equal(Errno.EACCES, e.Errno);
            Assert.Contains("nbd.example.com", e.Message, StringComparison.Ordinal);
            Assert.True(h.AioIsDead());
        }
    }

    [Fact]
    public void X509_UnknownAuthority_IsRefused_EvenOverUnixSockets()
    {
        using ServerProcess server = X509Server();
        // libnbd 1.14 accepts this over a Unix socket (CVE-2024-7383); we verify the chain whatever the transport.
        using (NbdHandle h = X509Client(_files.WrongAuthorityDirectory))
        {
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            Assert.Equal(Errno.EACCES, e.Errno);
            Assert.Contains("verification failed", e.Message, StringComparison.Ordinal);
            Assert.StartsWith("nbd_connect_unix: ", e.Message, StringComparison.Ordinal);
        }
        // A hostname over a Unix socket is checked when given.
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            h.SetTlsHostname("wrong.example");
            Assert.Equal(Errno.EACCES, Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket)).Errno);
        }
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            h.SetTlsHostname("localhost");
            h.ConnectUnix(server.Socket);
            Assert.True(h.GetTlsNegotiated());
        }
        // Turning verification off accepts any certificate, as libnbd's tls-verify-peer=false does.
        using (var h = new NbdHandle())
        {
            h.SetUriAllowLocalFile(true);
            h.ConnectUri($"nbds+unix:///?socket={server.Socket}&tls-certificates={_files.WrongAuthorityDirectory}&tls-verify-peer=false");
            Assert.False(h.GetTlsVerifyPeer());
            Assert.True(h.GetTlsNegotiated());
            RoundTrip(h);
        }
    }

    [Fact]
    public void X509_RevokedServerCertificate_IsRefused()
    {
        using ServerProcess server = X509Server();
        using NbdHandle h = X509Client(_files.RevokingDirectory());
        NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
        Assert.Equal(Errno.EACCES, e.Errno);
        Assert.Contains("revoked", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void X509_ClientCertificate_WhenTheServerVerifiesPeers()
    {
        using ServerProcess server = X509Server("--tls-verify-peer");
        using (NbdHandle h = X509Client(_files.ClientDirectory))
        {
            h.ConnectUnix(server.Socket);
            Assert.True(h.GetTlsNegotiated());
            RoundTrip(h);
        }
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            NbdException e = Assert.Throws<NbdConnectionException>(() =>
            {
                h.ConnectUnix(server.Socket);
                // TLS 1.3 lets the server reject the client's (missing) certificate after the client finished.
                h.Pread(new byte[512], 0);
            });
            Assert.NotEqual(0, e.Errno);
        }
    }

    [Fact]
    public void Require_WithAServerWithoutTls_Fails_AndAllowFallsBack()
    {
        using ServerProcess plain = Peers.Nbdkit("memory", "1M");
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Require);
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(plain.Socket));
            Assert.Equal(Errno.ENOTSUP, e.Errno);
            Assert.Contains("server refused TLS", e.Message, StringComparison.Ordinal);
            Assert.True(h.AioIsDead());
        }
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Allow);
            h.ConnectUnix(plain.Socket);
            Assert.False(h.GetTlsNegotiated());
            RoundTrip(h);
        }
        // Allow with a TLS server does use TLS.
        using ServerProcess secure = X509Server();
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Allow);
            h.SetTlsCertificates(_files.TrustOnlyDirectory);
            h.ConnectUnix(secure.Socket);
            Assert.True(h.GetTlsNegotiated());
        }
        // No TLS against a server that requires it: the server's refusal, with its text.
        using (var h = new NbdHandle())
        {
            NbdException e = Assert.Throws<NbdServerException>(() => h.ConnectUnix(secure.Socket));
            Assert.Contains("TLS", e.Message, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public void Psk_RightKey_WrongKey_UnknownUser()
    {
        using ServerProcess server = PskServer();
        using (var h = new NbdHandle())
        {
            h.SetUriAllowLocalFile(true);
            h.ConnectUri($"nbds+unix:///?socket={server.Socket}&tls-psk-file={_files.PskFile}&tls-username=alice");
            Assert.True(h.GetTlsNegotiated());
            Assert.Equal("alice", h.GetTlsUsername());
            RoundTrip(h);
        }

        // TLS 1.3 (an external PSK with an ECDHE key share) by default; TLS 1.2's PSK suites when 1.3 is ruled out.
        using (NbdHandle h = PskClient(_files.PskFile))
        {
            h.SetTlsPriority("NORMAL:-VERS-TLS1.3");
            h.ConnectUnix(server.Socket);
            Assert.True(h.GetTlsNegotiated());
            RoundTrip(h);
        }

        string wrong = _files.File("wrong.psk");
        File.WriteAllText(wrong, "alice:" + new string('0', 64) + "\n");
        using (NbdHandle h = PskClient(wrong))
        {
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            // nbdkit (GnuTLS) hangs up rather than sending an alert: we say so, and which user's key to check.
            Assert.True(e.Errno is Errno.EACCES or Errno.ECONNRESET, e.ToString());
            Assert.Contains("user 'alice'", e.Message, StringComparison.Ordinal);
            Assert.True(h.AioIsDead());
        }
        using (NbdHandle h = PskClient(_files.PskFile, "mallory"))
        {
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("username mallory was not found in PSK file", e.Message, StringComparison.Ordinal);
        }
        using (NbdHandle h = PskClient(_files.File("no-such.psk")))
        {
            Assert.Equal(Errno.ENOENT, Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket)).Errno);
        }
    }

    [Fact]
    public void Psk_MatchesLibnbd()
    {
        using ServerProcess server = PskServer();
        // The user part of the authority is the TLS user name (libnbd 1.14 knows no tls-username parameter).
        string uri = $"nbds+unix://alice@/?socket={server.Socket}&tls-psk-file={_files.PskFile}";
        using var h = new NbdHandle();
        h.SetUriAllowLocalFile(true);
        h.ConnectUri(uri);
        RoundTrip(h);
        string theirs = Libnbd.Python("""
            import sys, nbd, hashlib
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)
            h.connect_uri(sys.argv[1])
            print(h.get_tls_negotiated(), hashlib.sha256(h.pread(1 << 20, 0)).hexdigest())
            """, uri);
        Assert.Equal("True " + Oracle.Sha256(h, 0, 1 << 20), theirs.Trim());
    }

    [Fact]
    public void OptMode_Starttls_ByHand()
    {
        using ServerProcess secure = X509Server();
        using (var h = new NbdHandle())
        {
            h.SetOptMode(true);
            h.SetTlsCertificates(_files.TrustOnlyDirectory);
            h.ConnectUnix(secure.Socket);
            Assert.False(h.GetTlsNegotiated());
            Assert.True(h.OptStarttls());
            Assert.True(h.GetTlsNegotiated());
            Assert.True(h.OptStructuredReply());
            h.OptGo();
            RoundTrip(h);
        }
        using ServerProcess plain = Peers.Nbdkit("memory", "1M");
        using (var h = new NbdHandle())
        {
            h.SetOptMode(true);
            h.ConnectUnix(plain.Socket);
            Assert.False(h.OptStarttls());
            Assert.True(h.AioIsNegotiating());
            Assert.Equal(Errno.ENOTSUP, Exercise.Complete(h, c => h.AioOptStarttls(c)));
            h.OptGo();
            Assert.False(h.GetTlsNegotiated());
        }
    }

    [Fact]
    public void ManyCommandsInFlight_AndPollTimeouts_OverTls()
    {
        using ServerProcess server = X509Server();
        using NbdHandle h = X509Client(_files.TrustOnlyDirectory);
        h.ConnectUnix(server.Socket);

        // Nothing in flight: Poll with a timeout returns 0 rather than waiting on the TLS stream forever.
        Assert.Equal(0, h.Poll(20));

        const int count = 64;
        var buffers = new byte[count][];
        var cookies = new long[count];
        for (int i = 0; i < count; i++)
        {
            buffers[i] = new byte[32 * 1024];
            BinaryPrimitives.WriteInt32BigEndian(buffers[i], i);
            cookies[i] = h.AioPwrite(buffers[i], (ulong)i * 32 * 1024);
        }
        while (h.AioInFlight() > 0)
            h.Poll(1000);
        foreach (long cookie in cookies)
            Assert.True(h.AioCommandCompleted(cookie));

        var reads = new Task[count];
        var back = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            back[i] = new byte[32 * 1024];
            reads[i] = h.PreadAsync(back[i], (ulong)i * 32 * 1024).AsTask();
        }
        Assert.True(Task.WaitAll(reads, TimeSpan.FromSeconds(60)));
        for (int i = 0; i < count; i++)
            Assert.Equal(i, BinaryPrimitives.ReadInt32BigEndian(back[i]));
        Assert.True(h.StatsBytesSent() > (ulong)count * 32 * 1024);
    }

    [Fact]
    public void Priority_RestrictsVersions_AndTheUriNeedsConsent()
    {
        using ServerProcess server = X509Server();
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            h.SetTlsPriority("NORMAL:-VERS-ALL:+VERS-TLS1.2");
            h.ConnectUnix(server.Socket);
            Assert.True(h.GetTlsNegotiated());
            RoundTrip(h);
        }
        using (NbdHandle h = X509Client(_files.TrustOnlyDirectory))
        {
            h.SetTlsPriority("BOGUS");
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("BOGUS", e.Message, StringComparison.Ordinal);
        }
        string uri = $"nbds+unix:///?socket={server.Socket}&tls-certificates={_files.TrustOnlyDirectory}&tls-priority=NORMAL:-VERS-TLS1.3";
        using (var h = new NbdHandle())
        {
            h.SetUriAllowLocalFile(true);
            Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h.ConnectUri(uri)).Errno);
        }
        using (var h = new NbdHandle())
        {
            h.SetUriAllowLocalFile(true);
            h.SetUriAllowTlsPriority(true);
            h.ConnectUri(uri);
            Assert.Equal("NORMAL:-VERS-TLS1.3", h.GetTlsPriority());
            Assert.True(h.GetTlsNegotiated());
        }
    }

    [Fact]
    public void VerifyPeerOff_AcceptsAnUnknownAuthority()
    {
        using ServerProcess server = X509Server();
        using NbdHandle h = X509Client(_files.WrongAuthorityDirectory);
        h.SetTlsVerifyPeer(false);
        h.ConnectUnix(server.Socket);
        Assert.True(h.GetTlsNegotiated());
        Assert.Contains("tls-verify-peer=false", h.GetUri(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ServerDeath_FailsTheCommand_WithAConnectionErrno(bool psk)
    {
        using ServerProcess server = psk ? PskServer() : X509Server();
        using NbdHandle h = psk ? PskClient(_files.PskFile) : X509Client(_files.TrustOnlyDirectory);
        h.ConnectUnix(server.Socket);
        RoundTrip(h);
        server.Signal(Native.SIGKILL);
        NbdException e = Assert.ThrowsAny<NbdException>(() =>
        {
            for (int i = 0; i < 100; i++)
                h.Pread(new byte[4096], 0);
        });
        Assert.True(e.Errno is Errno.ENOTCONN or Errno.ECONNRESET or Errno.EPIPE, e.ToString());
        Assert.True(h.AioIsDead());
    }
}
