using System;
using System.Collections.Generic;
using System.Security.Authentication;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace NbdSharp.Tls;

/// <summary>
/// A TLS-PSK client: TLS 1.3 with the key as an external PSK and an ECDHE key share (what GnuTLS servers pick), or
/// TLS 1.2 with the PSK suites that keep forward secrecy, as the priority string allows.
/// </summary>
internal sealed class PskClient : PskTlsClient
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
