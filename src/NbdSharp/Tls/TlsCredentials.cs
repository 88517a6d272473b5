using System;
using System.Collections.Generic;
using System.IO;
using System.Security.Authentication;

namespace NbdSharp.Tls;

/// <summary>The handle's TLS settings, captured when an option or a connect starts.</summary>
internal sealed class TlsCredentials
{
    /// <summary>The folder given with <c>SetTlsCertificates</c>, or null to search libnbd's default folders.</summary>
    public string? CertificatesDirectory { get; init; }

    public bool VerifyPeer { get; init; } = true;

    public string Username { get; init; } = "";

    /// <summary>A TLS-PSK key file; when set, PSK is used instead of certificates.</summary>
    public string? PskFile { get; init; }

    /// <summary>The name the certificate must carry: the TLS hostname, else the host connected to; null over Unix sockets.</summary>
    public string? VerifyHostname { get; init; }

    /// <summary>The host connected to by name, sent as SNI; null when none.</summary>
    public string? ServerName { get; init; }

    public string Priority { get; init; } = "NORMAL";

    /// <summary>
    /// The folder libnbd would load certificates from: the one set, else (as libnbd) <c>$HOME/.pki/libnbd</c> or
    /// <c>$HOME/.config/pki/libnbd</c> for users and <c>/etc/pki/libnbd</c> for root, the first holding
    /// <c>ca-cert.pem</c>; null to trust the system's authorities.
    /// </summary>
    public string? FindCertificates()
    {
        if (CertificatesDirectory != null)
            return File.Exists(Path.Combine(CertificatesDirectory, "ca-cert.pem")) ? CertificatesDirectory : null;
        var candidates = new List<string>();
        string? home = Environment.GetEnvironmentVariable("HOME");
        if (Environment.IsPrivilegedProcess)
        {
            candidates.Add("/etc/pki/libnbd");
        }
        else if (home != null)
        {
            candidates.Add(Path.Combine(home, ".pki", "libnbd"));
            candidates.Add(Path.Combine(home, ".config", "pki", "libnbd"));
        }
        foreach (string dir in candidates)
        {
            if (File.Exists(Path.Combine(dir, "ca-cert.pem")))
                return dir;
        }
        return null;
    }
}

/// <summary>
/// GnuTLS priority strings, as far as they choose protocol versions: a base keyword (NORMAL, PERFORMANCE, SECURE128,
/// SECURE192, SECURE256, PFS, SYSTEM or an @ name) followed by <c>:</c>-separated modifiers, of which
/// <c>+VERS-TLS1.2</c>, <c>-VERS-TLS1.3</c>, <c>-VERS-ALL</c> and the like are honoured and the rest (ciphers,
/// key exchanges, %flags) left to the platform's defaults.
/// </summary>
internal static class TlsPriority
{
    /// <summary>The versions the string allows; <see cref="SslProtocols.None"/> means the platform's default.</summary>
    /// <exception cref="FormatException">The string is not a priority string.</exception>
    public static SslProtocols Protocols(string priority)
    {
        string[] parts = priority.Split(':');
        string head = parts[0].Trim();
        if (!(head.StartsWith('@') || head is "NORMAL" or "PERFORMANCE" or "SECURE128" or "SECURE192" or "SECURE256"
                or "SUITEB128" or "SUITEB192" or "LEGACY" or "PFS" or "SYSTEM" or "NONE"))
        {
            throw new FormatException("unknown priority keyword '" + head + "'");
        }
        bool explicitVersions = head == "NONE";
        SslProtocols versions = SslProtocols.None;
        SslProtocols removed = SslProtocols.None;
        for (int i = 1; i < parts.Length; i++)
        {
            string part = parts[i].Trim();
            if (part.Length == 0)
                throw new FormatException("empty element in priority string");
            if (part[0] is not ('+' or '-' or '!' or '%'))
                throw new FormatException("priority element '" + part + "' has no +, - or %");
            if (!part[1..].StartsWith("VERS-", StringComparison.Ordinal))
                continue;
            string name = part[6..];
            SslProtocols version = name switch
            {
                "ALL" or "TLS-ALL" => SslProtocols.Tls12 | SslProtocols.Tls13,
                "TLS1.2" => SslProtocols.Tls12,
                "TLS1.3" => SslProtocols.Tls13,
                "TLS1.0" or "TLS1.1" or "SSL3.0" or "DTLS-ALL" or "DTLS1.0" or "DTLS1.2" => SslProtocols.None,
                _ => throw new FormatException("unknown protocol version '" + name + "'"),
            };
            if (part[0] == '+')
            {
                versions |= version;
                removed &= ~version;
                explicitVersions = true;
            }
            else
            {
                versions &= ~version;
                removed |= version;
            }
        }
        if (!explicitVersions && removed == SslProtocols.None)
            return SslProtocols.None;
        SslProtocols allowed = (explicitVersions ? versions : SslProtocols.Tls12 | SslProtocols.Tls13) & ~removed;
        if (allowed == SslProtocols.None)
            throw new FormatException("no protocol version is left enabled");
        return allowed;
    }
}
