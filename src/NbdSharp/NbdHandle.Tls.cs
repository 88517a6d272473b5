using System;

namespace NbdSharp;

/// <summary>TLS settings (libnbd's <c>nbd_set_tls_*</c>); they take effect when connecting.</summary>
public sealed partial class NbdHandle
{
    private string? _tlsCertificates;
    private string? _tlsPskFile;
    private string? _tlsUsername;
    private string? _tlsHostname;
    private string? _tlsPriority;
    private bool _tlsVerifyPeer = true;
    private bool _uriAllowTlsPriority;

    /// <summary>
    /// The folder of X.509 files, laid out as libnbd and GnuTLS expect: <c>ca-cert.pem</c>, and for a client
    /// certificate <c>client-cert.pem</c> and <c>client-key.pem</c> (<c>nbd_set_tls_certificates</c>). Without it the
    /// system's trusted authorities verify the server.
    /// </summary>
    /// <param name="dir">The folder.</param>
    public void SetTlsCertificates(string dir)
    {
        ArgumentNullException.ThrowIfNull(dir);
        CheckState("nbd_set_tls_certificates", Allowed.Created);
        _tlsCertificates = dir;
    }

    /// <summary>Whether the server's certificate and name are verified (<c>nbd_set_tls_verify_peer</c>; default true).</summary>
    /// <param name="verify">Whether to verify.</param>
    public void SetTlsVerifyPeer(bool verify)
    {
        CheckState("nbd_set_tls_verify_peer", Allowed.Created);
        _tlsVerifyPeer = verify;
    }

    /// <summary>Whether the server is verified (<c>nbd_get_tls_verify_peer</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetTlsVerifyPeer() => _tlsVerifyPeer;

    /// <summary>The TLS user name: the PSK identity (<c>nbd_set_tls_username</c>; default the login name).</summary>
    /// <param name="username">The user name.</param>
    public void SetTlsUsername(string username)
    {
        ArgumentNullException.ThrowIfNull(username);
        CheckState("nbd_set_tls_username", Allowed.Created);
        _tlsUsername = username;
    }

    /// <summary>The TLS user name in effect: the one set, else $LOGNAME, else the login name (<c>nbd_get_tls_username</c>).</summary>
    /// <returns>The user name.</returns>
    public string GetTlsUsername() => _tlsUsername ?? Environment.GetEnvironmentVariable("LOGNAME") ?? Environment.UserName;

    /// <summary>
    /// The name the server's certificate must carry (<c>nbd_set_tls_hostname</c>; default the host connected to),
    /// e.g. behind a proxy or over a Unix socket.
    /// </summary>
    /// <param name="hostname">The host name.</param>
    public void SetTlsHostname(string hostname)
    {
        ArgumentNullException.ThrowIfNull(hostname);
        CheckState("nbd_set_tls_hostname", Allowed.Created);
        _tlsHostname = hostname;
    }

    /// <summary>The name the server's certificate is checked against: the one set, else the host connected to, else "" (<c>nbd_get_tls_hostname</c>).</summary>
    /// <returns>The host name, or "".</returns>
    public string GetTlsHostname() => _tlsHostname ?? (_endpoint.Kind == Transport.EndpointKind.Tcp ? _endpoint.Host : "");

    /// <summary>Uses a TLS-PSK key file (<c>username:hexkey</c> lines, as psktool writes) instead of certificates (<c>nbd_set_tls_psk_file</c>).</summary>
    /// <param name="filename">The key file.</param>
    public void SetTlsPskFile(string filename)
    {
        ArgumentNullException.ThrowIfNull(filename);
        CheckState("nbd_set_tls_psk_file", Allowed.Created);
        _tlsPskFile = filename;
    }

    /// <summary>
    /// Restricts the TLS versions and ciphers (<c>nbd_set_tls_priority</c>). libnbd takes a GnuTLS priority string;
    /// NbdSharp understands its common forms: <c>NORMAL</c> (the default), <c>SECURE128</c>/<c>SECURE256</c> and
    /// version restrictions such as <c>NORMAL:-VERS-ALL:+VERS-TLS1.3</c>.
    /// </summary>
    /// <param name="priority">A GnuTLS-style priority string.</param>
    public void SetTlsPriority(string priority)
    {
        ArgumentNullException.ThrowIfNull(priority);
        CheckState("nbd_set_tls_priority", Allowed.Created);
        _tlsPriority = priority;
    }

    /// <summary>The TLS priority string in effect (<c>nbd_get_tls_priority</c>; "NORMAL" unless set).</summary>
    /// <returns>The priority string.</returns>
    public string GetTlsPriority() => _tlsPriority ?? "NORMAL";

    /// <summary>Allows the <c>tls-priority</c> URI parameter (<c>nbd_set_uri_allow_tls_priority</c>; default false: it can weaken TLS).</summary>
    /// <param name="allow">Whether to allow it.</param>
    public void SetUriAllowTlsPriority(bool allow)
    {
        CheckState("nbd_set_uri_allow_tls_priority", Allowed.Created);
        _uriAllowTlsPriority = allow;
    }

    private Tls.TlsCredentials CaptureTlsCredentials()
    {
        string? host = _endpoint.Kind == Transport.EndpointKind.Tcp ? _endpoint.Host : null;
        return new Tls.TlsCredentials
        {
            CertificatesDirectory = _tlsCertificates,
            VerifyPeer = _tlsVerifyPeer,
            // The default user name comes from the password database (getpwuid_r, through NSS): a lookup that a
            // connection without TLS has no use for, and that costs a start-up a few file reads.
            Username = _tls == TlsMode.Disable ? "" : GetTlsUsername(),
            PskFile = _tlsPskFile,
            VerifyHostname = _tlsHostname ?? host,
            ServerName = host,
            Priority = GetTlsPriority(),
        };
    }
}
