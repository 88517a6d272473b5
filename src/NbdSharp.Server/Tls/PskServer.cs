using System;
using System.Collections.Generic;
using System.Text;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace NbdSharp.Server.Tls;

/// <summary>
/// The TLS-PSK server GnuTLS clients (libnbd's tools, qemu) and NbdSharp's client expect: TLS 1.3 with the key as an
/// external PSK and an (EC)DHE key share (psk_dhe_ke), or TLS 1.2 with the PSK suites that keep forward secrecy.
/// Plain PSK (no Diffie-Hellman) is not offered, as NbdSharp's client does not offer it either.
/// </summary>
internal sealed class PskServer : PskTlsServer
{
    private readonly IReadOnlyDictionary<string, byte[]> _keys;

    public PskServer(BcTlsCrypto crypto, IReadOnlyDictionary<string, byte[]> keys)
        : this(crypto, keys, new KeyLookup(keys))
    {
    }

    private PskServer(BcTlsCrypto crypto, IReadOnlyDictionary<string, byte[]> keys, KeyLookup lookup)
        : base(crypto, lookup)
    {
        _keys = keys;
        lookup.Owner = this;
    }

    /// <summary>
    /// The identity the client asked for (TLS 1.3: the first offered one we know, else the first offered), for the
    /// log: at most 64 characters, control characters as '?', hexadecimal if it is not UTF-8.
    /// </summary>
    public string? Identity { get; private set; }

    /// <summary>Why this side ended the handshake, as BouncyCastle described its fatal alert; null if it did not.</summary>
    public string? AlertRaised { get; private set; }

    /// <summary>The fatal alert the client sent, or -1.</summary>
    public short AlertReceived { get; private set; } = -1;

    public SecurityParameters Negotiated => m_context.SecurityParameters;

    protected override ProtocolVersion[] GetSupportedVersions() => ProtocolVersion.TLSv13.DownTo(ProtocolVersion.TLSv12);

    /// <summary>
    /// The TLS 1.3 suites are only those whose hash is the external PSK's, SHA-256 (RFC 8446 4.2.11: an external PSK
    /// without a hash is SHA-256; GnuTLS uses SHA-256). BouncyCastle picks the suite without looking at the PSK, and
    /// GnuTLS clients list AES-256-GCM-SHA384 first: with it the two sides would derive different keys. No suite
    /// without (EC)DHE. AES-GCM comes first where BouncyCastle runs it on the CPU's AES instructions, else ChaCha20.
    /// </summary>
    protected override int[] GetSupportedCipherSuites() => TlsUtilities.GetSupportedCipherSuites(Crypto,
        AesUtilities.IsHardwareAccelerated
            ?
            [
                CipherSuite.TLS_AES_128_GCM_SHA256,
                CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384,
                CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_128_GCM_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_256_GCM_SHA384,
                CipherSuite.TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384,
                CipherSuite.TLS_DHE_PSK_WITH_AES_128_CBC_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_256_CBC_SHA384,
            ]
            :
            [
                CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_AES_128_GCM_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384,
                CipherSuite.TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_128_GCM_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_256_GCM_SHA384,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
                CipherSuite.TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384,
                CipherSuite.TLS_DHE_PSK_WITH_AES_128_CBC_SHA256,
                CipherSuite.TLS_DHE_PSK_WITH_AES_256_CBC_SHA384,
            ]);

    /// <summary>The server's order of suites, above: the fastest here, whatever the client lists first.</summary>
    protected override bool PreferLocalCipherSuites() => true;

    /// <summary>TLS 1.3: the first offered identity that has a key; an unknown one ends the handshake.</summary>
    public override TlsPskExternal GetExternalPsk(IList<PskIdentity> identities)
    {
        ArgumentNullException.ThrowIfNull(identities);
        foreach (PskIdentity offered in identities)
        {
            if (Name(offered.Identity) is { } name && _keys.TryGetValue(name, out byte[]? key))
            {
                Identity = Printable(offered.Identity);
                return new BasicTlsPskExternal(offered.Identity, Crypto.CreateSecret(key), PrfAlgorithm.tls13_hkdf_sha256);
            }
        }
        Identity = identities.Count > 0 ? Printable(identities[0].Identity) : null;
        // Without a certificate there is no other way on: say so rather than fail later with internal_error.
        throw new TlsFatalAlert(AlertDescription.unknown_psk_identity);
    }

    /// <summary>
    /// Asked for only when no PSK was selected: in TLS 1.3 a client that offered no PSK with (EC)DHE (psk_dhe_ke),
    /// since BouncyCastle's base class would answer internal_error.
    /// </summary>
    public override TlsCredentials GetCredentials()
    {
        if (TlsUtilities.IsTlsV13(m_context.SecurityParameters.NegotiatedVersion))
            throw new TlsFatalAlert(AlertDescription.handshake_failure, "the client offered no TLS 1.3 PSK with (EC)DHE key exchange (psk_dhe_ke)");
        return base.GetCredentials();
    }

    public override void NotifyAlertRaised(short alertLevel, short alertDescription, string message, Exception cause)
    {
        base.NotifyAlertRaised(alertLevel, alertDescription, message, cause);
        if (alertLevel == AlertLevel.fatal && AlertRaised == null)
        {
            AlertRaised = cause is TlsFatalAlert alert
                ? alert.Message
                : AlertDescription.GetText(alertDescription) + (string.IsNullOrEmpty(message) ? "" : "; " + message) +
                  (cause == null ? "" : ": " + cause.Message);
        }
    }

    public override void NotifyAlertReceived(short alertLevel, short alertDescription)
    {
        base.NotifyAlertReceived(alertLevel, alertDescription);
        if (alertLevel == AlertLevel.fatal)
            AlertReceived = alertDescription;
    }

    private static string? Name(byte[] identity)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(identity);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    private static string Printable(byte[] identity)
    {
        string text = Name(identity) ?? Convert.ToHexString(identity);
        var printable = new StringBuilder(Math.Min(text.Length, 65));
        foreach (char c in text)
        {
            if (printable.Length == 64)
                return printable.Append('\u2026').ToString();
            printable.Append(char.IsControl(c) ? '?' : c);
        }
        return printable.ToString();
    }

    /// <summary>TLS 1.2's view of the keys.</summary>
    private sealed class KeyLookup(IReadOnlyDictionary<string, byte[]> keys) : TlsPskIdentityManager
    {
        public PskServer? Owner { get; set; }

        public byte[]? GetHint() => null;

        public byte[]? GetPsk(byte[] identity)
        {
            string? name = Name(identity);
            Owner!.Identity = Printable(identity);
            // A copy: the key exchange may clear what it is given.
            return name != null && keys.TryGetValue(name, out byte[]? key) ? (byte[])key.Clone() : null;
        }
    }
}
