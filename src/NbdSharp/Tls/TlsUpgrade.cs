using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace NbdSharp.Tls;

/// <summary>
/// Turns the plaintext connection into a TLS one after the server accepted NBD_OPT_STARTTLS: X.509 with
/// <see cref="SslStream"/> (the platform's TLS), or TLS-PSK with BouncyCastle, which <see cref="SslStream"/> lacks.
/// </summary>
internal static class TlsUpgrade
{
    /// <summary>Runs the TLS handshake over <paramref name="inner"/> and returns the encrypted transport.</summary>
    /// <exception cref="TlsFailure">The handshake failed, with an errno and what went wrong.</exception>
    public static ValueTask<Transport.Transport> StartAsync(Transport.Transport inner, TlsCredentials credentials, bool async,
        CancellationToken cancellationToken)
    {
        SslProtocols protocols;
        try
        {
            protocols = TlsPriority.Protocols(credentials.Priority);
        }
        catch (FormatException e)
        {
            throw new TlsFailure(Errno.EINVAL, "tls priority \"" + credentials.Priority + "\": " + e.Message);
        }
        return credentials.PskFile != null
            ? StartPskAsync(inner, credentials, protocols, async, cancellationToken)
            : StartX509Async(inner, credentials, protocols, async, cancellationToken);
    }

    private static async ValueTask<Transport.Transport> StartX509Async(Transport.Transport inner, TlsCredentials credentials,
        SslProtocols protocols, bool async, CancellationToken cancellationToken)
    {
        X509Files files = X509Files.Load(credentials.FindCertificates());
        string? failure = null;
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = credentials.ServerName ?? "",
            EnabledSslProtocols = protocols,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
            {
                failure = files.Verify(credentials, certificate, chain, errors);
                return failure == null;
            },
        };
        if (files.Client != null)
            options.ClientCertificates = [files.Client];
        // With a ca-cert.pem, SslStream builds the one chain with it as the only anchor.
        options.CertificateChainPolicy = files.ChainPolicy();
        var ssl = new SslStream(new TransportStream(inner), leaveInnerStreamOpen: false);
        try
        {
            if (async)
                await ssl.AuthenticateAsClientAsync(options, cancellationToken).ConfigureAwait(false);
            else
                ssl.AuthenticateAsClient(options);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            ssl.Dispose();
            files.Dispose();
            if (failure != null)
                throw new TlsFailure(Errno.EACCES, "server certificate verification failed: " + failure, e);
            throw Handshake(e);
        }
        files.DisposeTrust();
        return new StreamTransport(ssl, ssl.SslProtocol + ", " + ssl.NegotiatedCipherSuite + ", X.509", inner,
            () => new ValueTask(ssl.ShutdownAsync()));
    }

    private static async ValueTask<Transport.Transport> StartPskAsync(Transport.Transport inner, TlsCredentials credentials,
        SslProtocols protocols, bool async, CancellationToken cancellationToken)
    {
        byte[] key = PskFile.Lookup(credentials.PskFile!, credentials.Username);
        var client = new PskClient(new BcTlsCrypto(new SecureRandom()), credentials.Username, key, protocols);
        var protocol = new TlsClientProtocol(new TransportStream(inner));
        try
        {
            if (async)
                await Task.Run(() => protocol.Connect(client), cancellationToken).ConfigureAwait(false);
            else
                protocol.Connect(client);
        }
        catch (TlsFatalAlertReceived e) when (e.AlertDescription is AlertDescription.decrypt_error or AlertDescription.bad_record_mac
                                                  or AlertDescription.unknown_psk_identity or AlertDescription.handshake_failure)
        {
            throw new TlsFailure(Errno.EACCES, "TLS-PSK handshake failed: the server refused user '" + credentials.Username +
                                               "' or its key (" + AlertDescription.GetText(e.AlertDescription) + ")", e);
        }
        catch (TlsFatalAlert e) when (e.AlertDescription is AlertDescription.decrypt_error or AlertDescription.bad_record_mac)
        {
            throw new TlsFailure(Errno.EACCES, "TLS-PSK handshake failed: the server's key for user '" + credentials.Username +
                                               "' differs (" + AlertDescription.GetText(e.AlertDescription) + ")", e);
        }
        catch (IOException e)
        {
            // GnuTLS servers drop the connection, without an alert, when the client's Finished does not decrypt.
            TlsFailure failure = Handshake(e);
            throw new TlsFailure(failure.Errno, failure.Message + " (the server ended the TLS-PSK handshake: does it hold the same key for user '" +
                                                credentials.Username + "'?)", e);
        }
        finally
        {
            Array.Clear(key);
        }
        SecurityParameters negotiated = client.Negotiated;
        return new StreamTransport(new PskStream(protocol), negotiated.NegotiatedVersion + ", cipher suite 0x" +
            negotiated.CipherSuite.ToString("x4", CultureInfo.InvariantCulture) + ", PSK", inner, () =>
            {
                protocol.Close();
                return default;
            });
    }

    /// <summary>
    /// BouncyCastle's TLS connection as a <see cref="Stream"/> whose reads return 0, not -1, once the peer closed
    /// (which <see cref="Stream.Read(Span{byte})"/> would otherwise take for a stream error).
    /// </summary>
    private sealed class PskStream(TlsClientProtocol protocol) : DuplexStream
    {
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (count == 0)
                return 0;
            try
            {
                return Math.Max(0, protocol.ReadApplicationData(buffer, offset, count));
            }
            catch (TlsNoCloseNotifyException e)
            {
                // The server went away without ending TLS (it crashed or was killed): a reset connection, as GnuTLS's
                // "The TLS connection was non-properly terminated" is to libnbd.
                throw new TransportException(Errno.ECONNRESET, "recv: the server closed the connection without a TLS close_notify", e);
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => protocol.WriteApplicationData(buffer, offset, count);

        public override void Flush() => protocol.Flush();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                protocol.Close();
            base.Dispose(disposing);
        }
    }

    private static TlsFailure Handshake(Exception e)
    {
        for (Exception? inner = e; inner != null; inner = inner.InnerException)
        {
            if (inner is TransportException transport)
                return new TlsFailure(transport.Errno, "TLS handshake: " + transport.Message, e);
        }
        string detail = e.InnerException is { } cause && cause.Message != e.Message ? e.Message + ": " + cause.Message : e.Message;
        return new TlsFailure(Errno.ECONNRESET, "TLS handshake failed: " + detail, e);
    }

    /// <summary>
    /// A TLS-PSK client: TLS 1.3 with the key as an external PSK and an ECDHE key share (what GnuTLS servers pick), or
    /// TLS 1.2 with the PSK suites that keep forward secrecy, as the priority string allows.
    /// </summary>
    private sealed class PskClient : PskTlsClient
    {
        private readonly SslProtocols _protocols;
        private readonly byte[] _identity;
        private readonly byte[] _key;

        public PskClient(BcTlsCrypto crypto, string username, byte[] key, SslProtocols protocols)
            : base(crypto, new BasicTlsPskIdentity(username, key))
        {
            _protocols = protocols;
            _identity = System.Text.Encoding.UTF8.GetBytes(username);
            _key = (byte[])key.Clone();
        }

        public SecurityParameters Negotiated => m_context.SecurityParameters;

        private bool Allows(SslProtocols version) => _protocols == SslProtocols.None || (_protocols & version) != 0;

        protected override ProtocolVersion[] GetSupportedVersions()
        {
            var versions = new List<ProtocolVersion>();
            if (Allows(SslProtocols.Tls13))
                versions.Add(ProtocolVersion.TLSv13);
            if (Allows(SslProtocols.Tls12))
                versions.Add(ProtocolVersion.TLSv12);
            return [.. versions];
        }

        /// <summary>AES-GCM first, which BouncyCastle runs on the CPU's AES instructions; no suite without (EC)DHE.</summary>
        protected override int[] GetSupportedCipherSuites() =>
        [
            CipherSuite.TLS_AES_128_GCM_SHA256,
            CipherSuite.TLS_AES_256_GCM_SHA384,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256,
            CipherSuite.TLS_DHE_PSK_WITH_AES_128_GCM_SHA256,
            CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
            CipherSuite.TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_DHE_PSK_WITH_AES_256_GCM_SHA384,
        ];

        public override IList<TlsPskExternal> GetExternalPsks()
        {
            if (!Allows(SslProtocols.Tls13))
                return [];
            TlsSecret secret = Crypto.CreateSecret(_key);
            return [new BasicTlsPskExternal(_identity, secret, PrfAlgorithm.tls13_hkdf_sha256)];
        }

        public override void NotifyHandshakeComplete()
        {
            base.NotifyHandshakeComplete();
            Array.Clear(_key);
        }
    }

    /// <summary>The X.509 files of a certificates folder, and verification of the server's certificate with them.</summary>
    private sealed class X509Files : IDisposable
    {
        private X509Certificate2Collection? _authorities;
        private List<Org.BouncyCastle.X509.X509Crl>? _revocations;

        public X509Certificate2? Client { get; private set; }

        /// <summary>Reads <c>ca-cert.pem</c>, <c>client-cert.pem</c> + <c>client-key.pem</c> and <c>ca-crl.pem</c> as libnbd does.</summary>
        public static X509Files Load(string? dir)
        {
            var files = new X509Files();
            if (dir == null)
                return files;
            string authorities = Path.Combine(dir, "ca-cert.pem");
            string clientCert = Path.Combine(dir, "client-cert.pem");
            string clientKey = Path.Combine(dir, "client-key.pem");
            string revocations = Path.Combine(dir, "ca-crl.pem");
            try
            {
                files._authorities = [];
                files._authorities.ImportFromPemFile(authorities);
                if (files._authorities.Count == 0)
                    throw new TlsFailure(Errno.EINVAL, authorities + ": no certificate found");
                if (File.Exists(clientCert) && File.Exists(clientKey))
                {
                    using var ephemeral = X509Certificate2.CreateFromPemFile(clientCert, clientKey);
                    // A key that lives only in memory cannot be used by the platform's TLS on every OS: export and reload.
                    files.Client = X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null);
                }
                if (File.Exists(revocations))
                {
                    files._revocations = [];
                    foreach (Org.BouncyCastle.X509.X509Crl crl in new Org.BouncyCastle.X509.X509CrlParser().ReadCrls(File.ReadAllBytes(revocations)))
                        files._revocations.Add(crl);
                }
            }
            catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
            {
                files.Dispose();
                throw new TlsFailure(Errno.EINVAL, "loading certificates from " + dir + ": " + e.Message, e);
            }
            return files;
        }

        /// <summary>The chain policy for SslStream: ca-cert.pem as the only trust anchor, or null for the system's.</summary>
        public X509ChainPolicy? ChainPolicy()
        {
            if (_authorities == null)
                return null;
            var policy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
            };
            policy.CustomTrustStore.AddRange(_authorities);
            return policy;
        }

        /// <summary>
        /// Null if the server's certificate is acceptable, else why not. The chain was built by SslStream with
        /// <see cref="ChainPolicy"/>; the name is checked here, against the TLS hostname only (none over a Unix
        /// socket unless one was set), as libnbd does.
        /// </summary>
        public string? Verify(TlsCredentials credentials, X509Certificate? certificate, X509Chain? presented, SslPolicyErrors errors)
        {
            if (!credentials.VerifyPeer)
                return null;
            if (certificate == null)
                return "the server sent no certificate";
            X509Certificate2 leaf = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
            if ((errors & (SslPolicyErrors.RemoteCertificateChainErrors | SslPolicyErrors.RemoteCertificateNotAvailable)) != 0)
            {
                string detail = presented != null ? Describe(presented) : errors.ToString();
                if (presented != null && OutsideValidity(presented) is { } dated)
                    return dated + " (" + detail + ")";
                return _authorities != null
                    ? "not signed by a trusted authority in ca-cert.pem (" + detail + ")"
                    : "not signed by an authority the system trusts (" + detail + ")";
            }
            if (presented != null && Revoked(presented) is { } revoked)
                return revoked;
            if (credentials.VerifyHostname is { Length: > 0 } hostname && !leaf.MatchesHostname(hostname))
                return "the certificate's names do not include \"" + hostname + "\"";
            return null;
        }

        /// <summary>
        /// When the chain's only fault is a certificate used outside its validity period (expired, not yet
        /// valid), says which one and its dates; null otherwise.
        /// </summary>
        private static string? OutsideValidity(X509Chain chain)
        {
            const X509ChainStatusFlags dates = X509ChainStatusFlags.NotTimeValid | X509ChainStatusFlags.NotTimeNested;
            X509ChainStatusFlags all = X509ChainStatusFlags.NoError;
            foreach (X509ChainStatus status in chain.ChainStatus)
                all |= status.Status;
            if (all == X509ChainStatusFlags.NoError || (all & ~dates) != 0)
                return null;
            foreach (X509ChainElement element in chain.ChainElements)
            {
                foreach (X509ChainStatus status in element.ChainElementStatus)
                {
                    if ((status.Status & X509ChainStatusFlags.NotTimeValid) == 0)
                        continue;
                    X509Certificate2 dated = element.Certificate;
                    string when = DateTime.UtcNow < dated.NotBefore.ToUniversalTime() ? "is not valid yet" : "has expired";
                    return "the certificate \"" + dated.Subject + "\" " + when + ": it is valid from " +
                           dated.NotBefore.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture) + " to " +
                           dated.NotAfter.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture);
                }
            }
            return null;
        }

        private static string Describe(X509Chain chain)
        {
            var statuses = new List<string>();
            foreach (X509ChainStatus status in chain.ChainStatus)
                statuses.Add(status.StatusInformation.Trim().Length > 0 ? status.StatusInformation.Trim() : status.Status.ToString());
            return statuses.Count == 0 ? "chain incomplete" : string.Join("; ", statuses);
        }

        /// <summary>Checks each certificate of the chain against the revocation lists of ca-cert.pem's authorities.</summary>
        private string? Revoked(X509Chain chain)
        {
            if (_revocations == null)
                return null;
            var parser = new Org.BouncyCastle.X509.X509CertificateParser();
            for (int i = 0; i + 1 < chain.ChainElements.Count; i++)
            {
                var certificate = parser.ReadCertificate(chain.ChainElements[i].Certificate.RawData);
                var issuer = parser.ReadCertificate(chain.ChainElements[i + 1].Certificate.RawData);
                foreach (Org.BouncyCastle.X509.X509Crl crl in _revocations)
                {
                    if (!crl.IssuerDN.Equivalent(issuer.SubjectDN))
                        continue;
                    try
                    {
                        crl.Verify(issuer.GetPublicKey());
                    }
                    catch (Exception e) when (e is GeneralSecurityException or InvalidKeyException or SignatureException)
                    {
                        return "ca-crl.pem holds a revocation list not signed by its issuer";
                    }
                    if (crl.IsRevoked(certificate))
                    {
                        return "the certificate " + certificate.SerialNumber.ToString(16) + " of " +
                               certificate.SubjectDN + " is revoked by ca-crl.pem";
                    }
                }
            }
            return null;
        }

        /// <summary>Once connected, only the client certificate (held by the TLS session) may still be needed.</summary>
        public void DisposeTrust()
        {
            if (_authorities != null)
            {
                foreach (X509Certificate2 authority in _authorities)
                    authority.Dispose();
                _authorities = null;
            }
        }

        public void Dispose()
        {
            DisposeTrust();
            Client?.Dispose();
            Client = null;
        }
    }
}

/// <summary>PSK key files as GnuTLS's psktool writes them: one <c>username:hexkey</c> per line.</summary>
internal static class PskFile
{
    /// <summary>The key of <paramref name="username"/>.</summary>
    /// <exception cref="TlsFailure">The file cannot be read, or has no valid key for the user.</exception>
    public static byte[] Lookup(string path, string username)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            int errno = e switch
            {
                FileNotFoundException or DirectoryNotFoundException => Errno.ENOENT,
                UnauthorizedAccessException => Errno.EACCES,
                _ => Errno.EIO,
            };
            throw new TlsFailure(errno, "open: " + path + ": " + e.Message, e);
        }
        foreach (string line in lines)
        {
            if (line.Length <= username.Length + 1 || !line.StartsWith(username, StringComparison.Ordinal) || line[username.Length] != ':')
                continue;
            string hex = line[(username.Length + 1)..].TrimEnd('\r');
            try
            {
                return Convert.FromHexString(hex);
            }
            catch (FormatException e)
            {
                throw new TlsFailure(Errno.EINVAL, path + ": the key of user " + username + " is not hexadecimal", e);
            }
        }
        throw new TlsFailure(Errno.EINVAL, path + ": username " + username + " was not found in PSK file");
    }
}

/// <summary>A TLS setup or handshake failure, with the errno the handle reports.</summary>
internal sealed class TlsFailure : Exception
{
    public TlsFailure(int errno, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Errno = errno;
    }

    public TlsFailure()
        : this(NbdSharp.Errno.EIO, "TLS failure")
    {
    }

    public TlsFailure(string message)
        : this(NbdSharp.Errno.EIO, message)
    {
    }

    public TlsFailure(string message, Exception innerException)
        : this(NbdSharp.Errno.EIO, message, innerException)
    {
    }

    public int Errno { get; }

    public override string ToString() => Message + " (" + Errno.ToString(CultureInfo.InvariantCulture) + ")";
}
