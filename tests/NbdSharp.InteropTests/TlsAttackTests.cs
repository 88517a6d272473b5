using System;
using System.Collections.Generic;
using System.IO;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// The S group of the hostile-server matrix: downgrades and impostors. With TLS required, an untrusted, oldstyle,
/// refusing or cheating server is refused, and refused before any export is opened (nbdkit's log filter shows no
/// "Connect" line; a scripted server sees nothing but NBD_OPT_ABORT after its refusal). Nothing negotiated in
/// plaintext survives STARTTLS. (The cases of TlsTests: wrong authority, wrong hostname, revoked certificate,
/// missing client certificate, PSK with a wrong key or an unknown user, are part of the group too.)
/// </summary>
public sealed class TlsAttackTests : IDisposable
{
    private const uint OptAbort = 2;
    private const uint OptStartTls = 5;
    private readonly TlsFiles _files = new();

    public void Dispose() => _files.Dispose();

    private ServerProcess LoggedX509Server(string log, string tls = "--tls=require") =>
        Peers.Nbdkit(tls, "--tls-certificates=" + _files.ServerDirectory, "--filter=log", "memory", "8M", "logfile=" + log);

    private static void AssertNoExportOpened(string log) =>
        Assert.DoesNotContain(" Connect export=", File.ReadAllText(log), StringComparison.Ordinal);

    /// <summary>CVE-2024-7383 (which libnbd 1.14 here still has): no CA configured means the system's, which do not know this server.</summary>
    [Fact]
    public void NoAuthorityConfigured_AnUnknownServerIsRefused_OverUnixAndTcp()
    {
        string log = _files.File("nbdkit.log");
        using (ServerProcess server = LoggedX509Server(log))
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Require);
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            Assert.Equal(Errno.EACCES, e.Errno);
            Assert.True(h.AioIsDead());
        }
        AssertNoExportOpened(log);

        using ServerProcess tcp = Peers.NbdkitOnFreePort(out int port, "--tls=require", "--tls-certificates=" + _files.ServerDirectory, "memory", "8M");
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Require);
            Assert.Equal(Errno.EACCES, Assert.Throws<NbdConnectionException>(() => h.ConnectTcp("localhost", port.ToString(System.Globalization.CultureInfo.InvariantCulture))).Errno);
        }
        using (var h = new NbdHandle())
            Assert.Equal(Errno.EACCES, Assert.Throws<NbdConnectionException>(() => h.ConnectUri($"nbds://localhost:{port}/")).Errno);
    }

    [Fact]
    public void WrongAuthority_IsRefused_BeforeAnyExportIsOpened()
    {
        string log = _files.File("nbdkit.log");
        using ServerProcess server = LoggedX509Server(log);
        using var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        h.SetTlsCertificates(_files.WrongAuthorityDirectory);
        Assert.Equal(Errno.EACCES, Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket)).Errno);
        AssertNoExportOpened(log);
    }

    /// <summary>
    /// S9: a certificate from a trusted authority, for the right name, but expired or not yet valid, is refused
    /// before any export is opened, with a message that says which and gives the dates; the same authority's
    /// certificate valid today connects (the control).
    /// </summary>
    [Theory]
    [InlineData("valid", -1, 1)]
    [InlineData("expired", -20, -10)]
    [InlineData("not-yet-valid", 10, 20)]
    public void CertificateOutsideItsValidity_IsRefused(string name, int fromDays, int toDays)
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        (string serverDir, string clientDir) = _files.DirectoriesValid(name, now.AddDays(fromDays), now.AddDays(toDays));
        string log = _files.File("nbdkit-" + name + ".log");
        using (ServerProcess server = Peers.Nbdkit("--tls=require", "--tls-certificates=" + serverDir, "--filter=log", "memory", "8M", "logfile=" + log))
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Require);
            h.SetTlsCertificates(clientDir);
            h.SetTlsHostname("localhost");
            if (name == "valid")
            {
                h.ConnectUnix(server.Socket);
                Assert.Equal(8L << 20, h.GetSize());
                return;
            }
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
            Assert.Equal(Errno.EACCES, e.Errno);
            Assert.Contains(name == "expired" ? "\"CN=localhost\" has expired: it is valid from" : "\"CN=localhost\" is not valid yet: it is valid from",
                e.Message, StringComparison.Ordinal);
            Assert.True(h.AioIsDead());
        }
        AssertNoExportOpened(log);
    }

    [Fact]
    public void TlsRequired_AgainstAnOldstyleServer_IsRefused()
    {
        using ServerProcess server = Peers.Nbdkit("--oldstyle", "memory", "1M");
        using var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
        Assert.Equal(Errno.ENOTSUP, e.Errno);
        Assert.Contains("oldstyle", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0x80000001u)] // NBD_REP_ERR_UNSUP
    [InlineData(0x80000002u)] // NBD_REP_ERR_POLICY
    [InlineData(0x80000003u)] // NBD_REP_ERR_INVALID
    public async Task StartTlsRefused_WithTlsRequired_OnlyAbortFollows(uint refusal)
    {
        var seen = new List<uint>();
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            (uint option, _) = await c.ReadOptionAsync();
            await c.ReplyOptionAsync(option, refusal);
            try
            {
                while (true)
                {
                    (uint next, _) = await c.ReadOptionAsync();
                    lock (seen)
                        seen.Add(next);
                    if (next == OptAbort)
                        await c.ReplyOptionAsync(next, 1);
                }
            }
            finally
            {
                lock (seen)
                    seen.Insert(0, option);
            }
        });
        using (var h = new NbdHandle())
        {
            h.SetTls(TlsMode.Require);
            NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUri(server.Uri));
            Assert.Equal(Errno.ENOTSUP, e.Errno);
            Assert.Contains("server refused TLS", e.Message, StringComparison.Ordinal);
        }
        await server.DisposeAsync();
        lock (seen)
            Assert.Equal(new[] { OptStartTls, OptAbort }, seen);
    }

    /// <summary>CVE-2021-3716's kind: bytes a man in the middle appends to the STARTTLS ACK must not be taken as TLS or NBD.</summary>
    [Fact]
    public async Task PlaintextAfterTheStartTlsAck_IsRefused()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            (uint option, _) = await c.ReadOptionAsync();
            byte[] ack = new byte[20 + 20];
            new ServerReply(option).Ack.CopyTo(ack, 0);
            new ServerReply(7).Ack.CopyTo(ack, 20); // an injected NBD_OPT_GO ACK right behind it
            await c.WriteAsync(ack);
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        h.SetTlsCertificates(_files.TrustOnlyDirectory);
        NbdException e = Assert.ThrowsAny<NbdException>(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("unencrypted data after accepting NBD_OPT_STARTTLS", e.Message, StringComparison.Ordinal);
    }

    /// <summary>What was agreed in plaintext (structured replies here) is forgotten by STARTTLS, as the spec requires.</summary>
    [Fact]
    public void NothingNegotiatedBeforeStartTls_SurvivesIt()
    {
        using ServerProcess server = Peers.Nbdkit("--tls=on", "--tls-certificates=" + _files.ServerDirectory, "memory", "8M");
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetTlsCertificates(_files.TrustOnlyDirectory); // TLS left at "disable": STARTTLS by hand below
        h.SetRequestExtendedHeaders(false);
        h.SetRequestStructuredReplies(false);
        h.ConnectUnix(server.Socket);
        Assert.False(h.GetTlsNegotiated());
        Assert.True(h.OptStructuredReply());
        Assert.True(h.GetStructuredRepliesNegotiated());
        Assert.True(h.OptStarttls());
        Assert.True(h.GetTlsNegotiated());
        Assert.False(h.GetStructuredRepliesNegotiated());
        Assert.True(h.OptStructuredReply());
        h.OptGo();
        Assert.True(h.GetStructuredRepliesNegotiated());
        h.Pread(new byte[512], 0);
    }

    [Theory]
    [InlineData("alice\n", "alice")]
    [InlineData("alice:zz11\n", "alice")]
    [InlineData("alice:\n", "alice")]
    [InlineData("\n", "alice")]
    [InlineData(":00112233\n", "alice")]
    public void MalformedPskFiles_AreRefused_WithAClearError(string contents, string user)
    {
        string log = _files.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--tls=require", "--tls-psk=" + _files.PskFile, "--filter=log", "memory", "8M", "logfile=" + log);
        string file = _files.File("bad.psk");
        File.WriteAllText(file, contents);
        using var h = new NbdHandle();
        h.SetTls(TlsMode.Require);
        h.SetTlsPskFile(file);
        h.SetTlsUsername(user);
        NbdException e = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix(server.Socket));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains(file, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", e.Message.TrimEnd(), StringComparison.Ordinal);
        Assert.True(h.AioIsDead());
        AssertNoExportOpened(log);
    }

    /// <summary>An option reply header: ACK to an option.</summary>
    private readonly struct ServerReply(uint option)
    {
        public byte[] Ack
        {
            get
            {
                byte[] reply = new byte[20];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(reply, 0x0003e889045565a9);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), 1);
                return reply;
            }
        }
    }
}
