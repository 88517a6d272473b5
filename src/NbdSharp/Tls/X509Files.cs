using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Org.BouncyCastle.Security;

namespace NbdSharp.Tls;

/// <summary>The X.509 files of a certificates folder, and verification of the server's certificate with them.</summary>
internal sealed class X509Files : IDisposable
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
