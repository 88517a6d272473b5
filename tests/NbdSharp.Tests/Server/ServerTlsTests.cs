using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server;
using NbdSharp.Server.Hosting;
using NbdSharp.Server.Tls;
using NbdSharp.Testing;
using NbdSharp.Tls;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;
using Xunit;

namespace NbdSharp.Tests.Server;

/// <summary>
/// The server's side of TLS over a loopback socket pair: X.509 with <see cref="SslStream"/> clients (with and without
/// client certificates), TLS-PSK with BouncyCastle clients (TLS 1.3 and 1.2, wrong keys, unknown users), the
/// encrypted stream's ends, concurrency and cancellation, and the nbdkit-style file loaders.
/// </summary>
public sealed class ServerTlsTests(ServerTlsTests.Material material) : IClassFixture<ServerTlsTests.Material>, IDisposable
{
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2", null);
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1", null);

    private readonly TlsFiles _files = material.Files;
    private readonly List<IDisposable> _owned = [];

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    public void Dispose()
    {
        foreach (IDisposable owned in _owned)
            owned.Dispose();
    }

    /// <summary>The certificates and keys, made once for the class (openssl is slow to start).</summary>
    public sealed class Material : IDisposable
    {
        private readonly TlsFiles? _files = Requires.Find("openssl") != null ? new TlsFiles() : null;

        /// <summary>The files, or the test is skipped (failed on CI) for want of openssl.</summary>
        public TlsFiles Files
        {
            get
            {
                if (_files == null)
                    Requires.Program("openssl");
                return _files!;
            }
        }

        public void Dispose() => _files?.Dispose();
    }

    // ---------------------------------------------------------------- X.509

    [Fact]
    public async Task X509_Handshake_CarriesBytesBothWays()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: false), Token);
        SslStream client = await X509ClientAsync(clientTransport, clientCertificate: null);
        using Stream server = await accepting.WaitAsync(Token);

        Assert.IsType<SslStream>(server);
        Assert.True(client.SslProtocol is SslProtocols.Tls13 or SslProtocols.Tls12);
        Assert.Equal("CN=localhost", client.RemoteCertificate!.Subject);
        await ExchangeAsync(server, client, 1 << 20);
    }

    [Fact]
    public async Task X509_ClientCertificateRequired_RefusesAClientWithout()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: true), Token);
        Task client = ClientFailsAsync(clientTransport, () => X509ClientAsync(clientTransport, clientCertificate: null));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("client certificate rejected: the client sent no certificate", e.Message, StringComparison.Ordinal);
        await client;
    }

    [Fact]
    public async Task X509_ClientCertificateRequired_AcceptsOneFromTheAuthority()
    {
        using X509Certificate2 certificate = X509Certificate2.CreateFromPemFile(
            Path.Combine(_files.ClientDirectory, "client-cert.pem"), Path.Combine(_files.ClientDirectory, "client-key.pem"));
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: true), Token);
        SslStream client = await X509ClientAsync(clientTransport, certificate);
        using var server = (SslStream)await accepting.WaitAsync(Token);

        Assert.Equal("CN=nbdsharp-client", server.RemoteCertificate!.Subject);
        await ExchangeAsync(server, client, 64 * 1024);
    }

    [Fact]
    public async Task X509_ClientCertificateRequired_RefusesOneFromAnotherAuthority()
    {
        using X509Certificate2 certificate = IssueClientCertificate("other-ca", "CN=intruder", ClientAuth);
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: true), Token);
        Task client = ClientFailsAsync(clientTransport, () => X509ClientAsync(clientTransport, certificate));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("client certificate rejected: \"CN=intruder\" is not trusted", e.Message, StringComparison.Ordinal);
        await client;
    }

    [Fact]
    public async Task X509_ClientCertificateRequired_RefusesOneForAnotherPurpose()
    {
        using X509Certificate2 certificate = IssueClientCertificate("ca", "CN=a server", ServerAuth);
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: true), Token);
        Task client = ClientFailsAsync(clientTransport, () => X509ClientAsync(clientTransport, certificate));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("\"CN=a server\" is not trusted", e.Message, StringComparison.Ordinal);
        await client;
    }

    [Fact]
    public async Task X509_Cancelled_ClosesTheTransport()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Token);
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, X509Options(verifyClients: false), cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => accepting);
        Assert.Equal(0, await clientTransport.ReadAsync(new byte[1], Token));
    }

    // ---------------------------------------------------------------- PSK

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    [InlineData(SslProtocols.None)] // both offered: TLS 1.3 wins
    public async Task Psk_Handshake_CarriesBytesBothWays(SslProtocols versions)
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        (TlsClientProtocol client, PskClient peer) = await PskClientAsync(clientTransport, "alice", AliceKey, versions);
        using Stream server = await accepting.WaitAsync(Token);

        Assert.Equal(versions == SslProtocols.Tls12 ? ProtocolVersion.TLSv12 : ProtocolVersion.TLSv13, peer.Negotiated.NegotiatedVersion);
        await ExchangeAsync(server, client.Stream, 1 << 20);
    }

    [Fact]
    public async Task Psk_Tls13_AClientPreferringSha384Suites_GetsASha256One()
    {
        // GnuTLS lists TLS_AES_256_GCM_SHA384 first; an external PSK is SHA-256, so the server must not pick it.
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        var peer = new Sha384FirstClient("alice", AliceKey);
        var client = new TlsClientProtocol(clientTransport);
        await Task.Run(() => client.Connect(peer), Token);
        using Stream server = await accepting.WaitAsync(Token);

        Assert.Equal(ProtocolVersion.TLSv13, peer.Negotiated.NegotiatedVersion);
        Assert.NotEqual(CipherSuite.TLS_AES_256_GCM_SHA384, peer.Negotiated.CipherSuite);
        await ExchangeAsync(server, client.Stream, 4096);
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task Psk_WrongKey_Fails(SslProtocols versions)
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        Task client = ClientFailsAsync(clientTransport, () => PskClientAsync(clientTransport, "alice", RandomNumberGenerator.GetBytes(32), versions));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("identity 'alice'", e.Message, StringComparison.Ordinal);
        Assert.Contains("the client's key differs", e.Message, StringComparison.Ordinal);
        await client;
    }

    [Theory]
    [InlineData(SslProtocols.Tls13)]
    [InlineData(SslProtocols.Tls12)]
    public async Task Psk_UnknownIdentity_Fails(SslProtocols versions)
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        Task<Exception> client = ClientFailsAsync(clientTransport, () => PskClientAsync(clientTransport, "mallory", AliceKey, versions));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("identity 'mallory'", e.Message, StringComparison.Ordinal);
        Assert.Contains("unknown_psk_identity", e.Message, StringComparison.Ordinal);
        Exception got = await client;
        Assert.True(got is TlsFatalAlertReceived, got.ToString());
        var alert = (TlsFatalAlertReceived)got;
        Assert.Equal(AlertDescription.unknown_psk_identity, alert.AlertDescription);
    }

    [Fact]
    public async Task Psk_NotTls_FailsWithoutHanging()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        await clientTransport.WriteAsync(Encoding.ASCII.GetBytes("IHAVEOPT and no TLS at all"), Token);

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.StartsWith("TLS-PSK: unexpected_message(10)", e.Message, StringComparison.Ordinal);
        // No alert before a TLS version is agreed: the connection just ends.
        Assert.Equal(0, await clientTransport.ReadAsync(new byte[16], Token));
    }

    [Fact]
    public async Task Psk_AClientOfferingNoPsk_IsToldWhy()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        Task client = ClientFailsAsync(clientTransport, () => X509ClientAsync(clientTransport, clientCertificate: null));

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("the client offered no TLS 1.3 PSK", e.Message, StringComparison.Ordinal);
        await client;
    }

    [Fact]
    public async Task NeitherCertificateNorKeys_FailsAndClosesTheTransport()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        var options = new NbdServerOptions { Tls = ServerTlsMode.On, PskKeys = new Dictionary<string, byte[]>() };

        await Assert.ThrowsAsync<AuthenticationException>(() => ServerTls.AcceptAsync(serverTransport, options, Token));
        Assert.Equal(0, await clientTransport.ReadAsync(new byte[1], Token));
    }

    [Fact]
    public async Task Psk_ClientLeavesDuringTheHandshake_IsAnAuthenticationFailure()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        await clientTransport.DisposeAsync();

        AuthenticationException e = await Assert.ThrowsAsync<AuthenticationException>(() => accepting);
        Assert.Contains("the client closed the connection during the TLS handshake", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Psk_Cancelled_ClosesTheTransport()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Token);
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => accepting);
        Assert.Equal(0, await clientTransport.ReadAsync(new byte[1], Token));
    }

    [Fact]
    public async Task Psk_CloseNotify_IsTheEndOfTheStream()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        (TlsClientProtocol client, _) = await PskClientAsync(clientTransport, "alice", AliceKey, SslProtocols.Tls13);
        using Stream server = await accepting.WaitAsync(Token);

        client.Stream.Write("last"u8);
        client.Close();
        byte[] buffer = new byte[16];
        Assert.Equal(4, await server.ReadAsync(buffer, Token));
        Assert.Equal(0, await server.ReadAsync(buffer, Token));
        Assert.Equal(0, await server.ReadAsync(buffer, Token));
    }

    [Fact]
    public async Task Psk_TransportEndWithoutCloseNotify_IsTheEndOfTheStream_AndRepliesStillGo()
    {
        Socket serverSocket, clientSocket;
        (serverSocket, clientSocket) = await SocketsAsync();
        var clientTransport = new NetworkStream(clientSocket, ownsSocket: true);
        _owned.Add(clientTransport);
        Task<Stream> accepting = ServerTls.AcceptAsync(new NetworkStream(serverSocket, ownsSocket: true), PskOptions(), Token);
        (TlsClientProtocol client, _) = await PskClientAsync(clientTransport, "alice", AliceKey, SslProtocols.Tls12);
        using Stream server = await accepting.WaitAsync(Token);

        client.Stream.Write("request"u8);
        clientSocket.Shutdown(SocketShutdown.Send); // no close_notify
        byte[] buffer = new byte[16];
        Assert.Equal(7, await server.ReadAtLeastAsync(buffer, 7, throwOnEndOfStream: true, Token));
        Assert.Equal(0, await server.ReadAsync(buffer, Token));
        await server.WriteAsync("reply"u8.ToArray(), Token);
        Assert.Equal(5, await Task.Run(() => client.Stream.ReadAtLeast(buffer, 5), Token));
        Assert.Equal("reply", Encoding.ASCII.GetString(buffer, 0, 5));
    }

    [Fact]
    public async Task Psk_OverABlockingSocket_WorksSynchronously_AndAnInterruptedReadEnds()
    {
        // The server's thread-per-connection mode: every call completes on the calling thread.
        (Socket serverSocket, Socket clientSocket) = await SocketsAsync();
        var clientTransport = new NetworkStream(clientSocket, ownsSocket: true);
        _owned.Add(clientTransport);
        var blocking = new BlockingSocketStream(serverSocket);
        Task<(TlsClientProtocol, PskClient)> connecting = PskClientAsync(clientTransport, "someone", SomeoneKey(), SslProtocols.Tls13);
        Task<Stream> accepting = ServerTls.AcceptAsync(blocking, PskOptions(), Token);
        Assert.True(accepting.IsCompleted);
        using Stream server = await accepting;
        (TlsClientProtocol client, _) = await connecting;

        Task<byte[]> sent = Task.Run(() =>
        {
            byte[] data = RandomNumberGenerator.GetBytes(300_000);
            client.Stream.Write(data);
            return data;
        }, Token);
        byte[] received = new byte[300_000];
        server.ReadExactly(received);
        Assert.Equal(await sent, received);
        server.Write(received.AsSpan(0, 1000));
        byte[] echoed = new byte[1000];
        await Task.Run(() => client.Stream.ReadExactly(echoed), Token);
        Assert.Equal(received.AsSpan(0, 1000).ToArray(), echoed);

        // What the server does to stop reading: a blocked (or the next) read ends, and the last replies still go.
        Task<int> read = Task.Run(() => server.Read(new byte[16]), Token);
        blocking.Interrupt();
        Assert.Equal(0, await read);
        server.Write("bye"u8);
        Assert.Equal(3, await Task.Run(() => client.Stream.ReadAtLeast(echoed, 3), Token));
    }

    [Fact]
    public async Task Psk_OneReaderAndOneWriter_AtTheSameTime()
    {
        (Stream serverTransport, Stream clientTransport) = await ConnectAsync();
        Task<Stream> accepting = ServerTls.AcceptAsync(serverTransport, PskOptions(), Token);
        (TlsClientProtocol client, _) = await PskClientAsync(clientTransport, "alice", AliceKey, SslProtocols.Tls13);
        using Stream server = await accepting.WaitAsync(Token);
        await ExchangeAsync(server, client.Stream, 8 << 20, pieces: 977);
    }

    // ---------------------------------------------------------------- files

    [Fact]
    public void LoadCertificate_ReadsTheNbdkitFolder()
    {
        using X509Certificate2 certificate = ServerTlsFiles.LoadCertificate(_files.ServerDirectory);
        Assert.True(certificate.HasPrivateKey);
        Assert.Equal("CN=localhost", certificate.Subject);
    }

    [Fact]
    public void LoadCertificate_NamesWhatIsMissing()
    {
        FileNotFoundException e = Assert.Throws<FileNotFoundException>(() => ServerTlsFiles.LoadCertificate(_files.ClientDirectory));
        Assert.Equal(Path.Combine(_files.ClientDirectory, "server-cert.pem"), e.FileName);
        Assert.Contains("server-cert.pem", e.Message, StringComparison.Ordinal);
        Assert.Throws<DirectoryNotFoundException>(() => ServerTlsFiles.LoadCertificate(_files.File("nowhere")));

        string dir = Directory.CreateDirectory(_files.File("mismatched")).FullName;
        File.Copy(Path.Combine(_files.ServerDirectory, "server-cert.pem"), Path.Combine(dir, "server-cert.pem"));
        File.Copy(Path.Combine(_files.ClientDirectory, "client-key.pem"), Path.Combine(dir, "server-key.pem"));
        CryptographicException mismatch = Assert.Throws<CryptographicException>(() => ServerTlsFiles.LoadCertificate(dir));
        Assert.Contains(Path.Combine(dir, "server-cert.pem"), mismatch.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadAuthorities_ReadsCaCertPem_OrNothing()
    {
        X509Certificate2Collection? authorities = ServerTlsFiles.LoadAuthorities(_files.ServerDirectory);
        Assert.NotNull(authorities);
        X509Certificate2 authority = Assert.Single(authorities);
        Assert.Equal("CN=NbdSharp test CA", authority.Subject);
        authority.Dispose();

        string empty = Directory.CreateDirectory(_files.File("no-ca")).FullName;
        Assert.Null(ServerTlsFiles.LoadAuthorities(empty));
        File.WriteAllText(Path.Combine(empty, "ca-cert.pem"), "not a certificate\n");
        Assert.Contains("no certificate found", Assert.Throws<CryptographicException>(() => ServerTlsFiles.LoadAuthorities(empty)).Message,
            StringComparison.Ordinal);
    }

    [Fact]
    public void LoadPskFile_ReadsPsktoolLines()
    {
        IReadOnlyDictionary<string, byte[]> keys = ServerTlsFiles.LoadPskFile(_files.PskFile);
        Assert.Equal(2, keys.Count);
        Assert.Equal(AliceKey, keys["alice"]);
        Assert.Equal(32, keys["someone"].Length);

        string path = _files.File("more.psk");
        File.WriteAllText(path, "a:00\r\n\nb:0A0b\nc:1:2\na:ff\n");
        Assert.Throws<FormatException>(() => ServerTlsFiles.LoadPskFile(path)); // c's key is not hexadecimal
        File.WriteAllText(path, "a:00\r\n\nb:0A0b\na:ff\n");
        keys = ServerTlsFiles.LoadPskFile(path);
        Assert.Equal([0x00], keys["a"]); // the first wins, as GnuTLS
        Assert.Equal([0x0a, 0x0b], keys["b"]);
    }

    [Theory]
    [InlineData("alice:00\nbob\n", ":2: expected username:hexkey")]
    [InlineData("alice:00\n:00\n", ":2: the username is empty")]
    [InlineData("alice:0g\n", ":1: the key of 'alice' is not hexadecimal")]
    [InlineData("alice:123\n", ":1: the key of 'alice' is not hexadecimal")]
    [InlineData("alice:\n", ":1: the key of 'alice' is empty")]
    [InlineData("", ": no keys")]
    [InlineData("\n\n", ": no keys")]
    public void LoadPskFile_NamesTheFileAndLine(string contents, string expected)
    {
        string path = _files.File("bad.psk");
        File.WriteAllText(path, contents);
        FormatException e = Assert.Throws<FormatException>(() => ServerTlsFiles.LoadPskFile(path));
        Assert.Equal(path + expected, e.Message[..(path.Length + expected.Length)]);
    }

    [Fact]
    public void LoadPskFile_Missing_IsFileNotFound()
    {
        string path = _files.File("absent.psk");
        Assert.Equal(path, Assert.Throws<FileNotFoundException>(() => ServerTlsFiles.LoadPskFile(path)).FileName);
    }

    // ---------------------------------------------------------------- helpers

    private byte[] AliceKey => Convert.FromHexString(_files.PskKey);

    private byte[] SomeoneKey() => ServerTlsFiles.LoadPskFile(_files.PskFile)["someone"];

    private NbdServerOptions X509Options(bool verifyClients)
    {
        X509Certificate2 certificate = ServerTlsFiles.LoadCertificate(_files.ServerDirectory);
        _owned.Add(certificate);
        return new NbdServerOptions
        {
            Tls = ServerTlsMode.Require,
            Certificate = certificate,
            ClientCertificateAuthorities = verifyClients ? ServerTlsFiles.LoadAuthorities(_files.ServerDirectory) : null,
        };
    }

    private NbdServerOptions PskOptions() => new() { Tls = ServerTlsMode.Require, PskKeys = ServerTlsFiles.LoadPskFile(_files.PskFile) };

    private async Task<(Socket Server, Socket Client)> SocketsAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _owned.Add(client);
        Task connecting = client.ConnectAsync(listener.LocalEndPoint!, Token).AsTask();
        Socket server = await listener.AcceptAsync(Token);
        _owned.Add(server);
        await connecting;
        return (server, client);
    }

    private async Task<(Stream Server, Stream Client)> ConnectAsync()
    {
        (Socket server, Socket client) = await SocketsAsync();
        var serverStream = new NetworkStream(server, ownsSocket: true);
        var clientStream = new NetworkStream(client, ownsSocket: true);
        _owned.Add(serverStream);
        _owned.Add(clientStream);
        return (serverStream, clientStream);
    }

    /// <summary>An <see cref="SslStream"/> client that trusts only the test authority, as libnbd with ca-cert.pem.</summary>
    private async Task<SslStream> X509ClientAsync(Stream transport, X509Certificate2? clientCertificate)
    {
        X509Certificate2Collection authorities = ServerTlsFiles.LoadAuthorities(_files.ServerDirectory)!;
        var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        policy.CustomTrustStore.AddRange(authorities);
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            // No session ticket from an earlier test: it would be offered as a TLS 1.3 PSK identity.
            AllowTlsResume = false,
            CertificateChainPolicy = policy,
            RemoteCertificateValidationCallback = (_, _, _, errors) => errors == SslPolicyErrors.None,
        };
        if (clientCertificate != null)
            options.ClientCertificateContext = SslStreamCertificateContext.Create(clientCertificate, additionalCertificates: null, offline: true);
        var ssl = new SslStream(transport, leaveInnerStreamOpen: false);
        _owned.Add(ssl);
        await ssl.AuthenticateAsClientAsync(options, Token);
        return ssl;
    }

    private static async Task<(TlsClientProtocol, PskClient)> PskClientAsync(Stream transport, string username, byte[] key,
        SslProtocols versions)
    {
        var peer = new PskClient(new BcTlsCrypto(new SecureRandom()), username, key, versions);
        var protocol = new TlsClientProtocol(transport);
        await Task.Run(() => protocol.Connect(peer), Token);
        return (protocol, peer);
    }

    /// <summary>
    /// A client the server refused: its handshake fails, or (TLS 1.3, where a client finishes first) its first read
    /// fails or finds the end. Returns the exception, if any.
    /// </summary>
    private static async Task<Exception> ClientFailsAsync<T>(Stream transport, Func<Task<T>> connect)
    {
        T connected;
        try
        {
            connected = await connect();
        }
        catch (Exception e) when (e is IOException or AuthenticationException)
        {
            // As a client does: else the server waits a little for it to go, so that it reads the alert.
            await transport.DisposeAsync();
            return e;
        }
        Stream stream = connected switch
        {
            Stream s => s,
            ValueTuple<TlsClientProtocol, PskClient> psk => psk.Item1.Stream,
            _ => throw new InvalidOperationException(),
        };
        try
        {
            int n = await Task.Run(() => stream.Read(new byte[1]), Token);
            Assert.Equal(0, n);
            return new EndOfStreamException();
        }
        catch (Exception e) when (e is IOException or AuthenticationException)
        {
            return e;
        }
        finally
        {
            await transport.DisposeAsync();
        }
    }

    /// <summary>
    /// Both directions at once on both ends: the server's stream through its asynchronous calls (as the server
    /// uses it), the client's through synchronous ones on threads of their own.
    /// </summary>
    private static async Task ExchangeAsync(Stream server, Stream client, int size, int pieces = 1)
    {
        byte[] up = RandomNumberGenerator.GetBytes(size);
        byte[] down = RandomNumberGenerator.GetBytes(size);
        byte[] serverGot = new byte[size];
        byte[] clientGot = new byte[size];
        int piece = Math.Max(1, size / pieces);

        Task clientWrites = Task.Run(() =>
        {
            for (int at = 0; at < size; at += piece)
                client.Write(up, at, Math.Min(piece, size - at));
            client.Flush();
        }, Token);
        Task clientReads = Task.Run(() => client.ReadExactly(clientGot), Token);
        Task serverWrites = Task.Run(async () =>
        {
            for (int at = 0; at < size; at += piece)
                await server.WriteAsync(down.AsMemory(at, Math.Min(piece, size - at)), Token);
            await server.FlushAsync(Token);
        }, Token);
        Task serverReads = server.ReadExactlyAsync(serverGot, Token).AsTask();

        await Task.WhenAll(clientWrites, clientReads, serverWrites, serverReads).WaitAsync(TimeSpan.FromMinutes(1), Token);
        Assert.Equal(up, serverGot);
        Assert.Equal(down, clientGot);
    }

    /// <summary>A client certificate signed by the test folder's <paramref name="authority"/> (ca or other-ca).</summary>
    private X509Certificate2 IssueClientCertificate(string authority, string subject, Oid purpose)
    {
        using X509Certificate2 issuer = X509Certificate2.CreateFromPemFile(_files.File(authority + "-cert.pem"), _files.File(authority + "-key.pem"));
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([purpose], false));
        using X509Certificate2 certificate = request.Create(issuer, issuer.NotBefore, issuer.NotAfter, RandomNumberGenerator.GetBytes(16));
        return certificate.CopyWithPrivateKey(key);
    }

    /// <summary>A TLS 1.3 PSK client listing the SHA-384 suite first, as GnuTLS does.</summary>
    private sealed class Sha384FirstClient(string username, byte[] key)
        : PskTlsClient(new BcTlsCrypto(new SecureRandom()), new BasicTlsPskIdentity(username, key))
    {
        public SecurityParameters Negotiated => m_context.SecurityParameters;

        protected override ProtocolVersion[] GetSupportedVersions() => ProtocolVersion.TLSv13.Only();

        protected override int[] GetSupportedCipherSuites() =>
            [CipherSuite.TLS_AES_256_GCM_SHA384, CipherSuite.TLS_CHACHA20_POLY1305_SHA256, CipherSuite.TLS_AES_128_GCM_SHA256];

        public override IList<TlsPskExternal> GetExternalPsks() =>
            [new BasicTlsPskExternal(Encoding.UTF8.GetBytes(username), Crypto.CreateSecret(key), PrfAlgorithm.tls13_hkdf_sha256)];
    }
}
