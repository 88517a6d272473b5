using System;
using System.Collections.Generic;
using System.Security.Cryptography.X509Certificates;

namespace NbdSharp.Server;

/// <summary>Whether the server offers TLS, as nbdkit's <c>--tls</c>.</summary>
public enum ServerTlsMode
{
    /// <summary>No TLS: <c>NBD_OPT_STARTTLS</c> is refused.</summary>
    Off,

    /// <summary>TLS is offered; clients may also go on without it.</summary>
    On,

    /// <summary>Clients must upgrade to TLS before anything but <c>NBD_OPT_STARTTLS</c> and <c>NBD_OPT_ABORT</c>.</summary>
    Require,
}

/// <summary>How an <see cref="NbdServer"/> negotiates and what it lets one client hold.</summary>
public sealed class NbdServerOptions
{
    /// <summary>Whether TLS is off, offered or required. With <see cref="ServerTlsMode.On"/> or <see cref="ServerTlsMode.Require"/>, set <see cref="Certificate"/> or <see cref="PskKeys"/>.</summary>
    public ServerTlsMode Tls { get; set; } = ServerTlsMode.Off;

    /// <summary>The server's X.509 certificate with its private key (nbdkit's <c>server-cert.pem</c> and <c>server-key.pem</c>).</summary>
    public X509Certificate2? Certificate { get; set; }

    /// <summary>
    /// When set, clients must present a certificate that chains to one of these authorities (nbdkit's
    /// <c>--tls-verify-peer</c> with <c>ca-cert.pem</c>).
    /// </summary>
    public X509Certificate2Collection? ClientCertificateAuthorities { get; set; }

    /// <summary>TLS-PSK identities and their keys (nbdkit's <c>--tls-psk</c> file); used when <see cref="Certificate"/> is null.</summary>
    public IReadOnlyDictionary<string, byte[]>? PskKeys { get; set; }

    /// <summary>Whether clients may negotiate structured replies (<c>NBD_OPT_STRUCTURED_REPLY</c>). Default true.</summary>
    public bool StructuredReplies { get; set; } = true;

    /// <summary>Whether clients may negotiate extended headers (<c>NBD_OPT_EXTENDED_HEADERS</c>). Default true.</summary>
    public bool ExtendedHeaders { get; set; } = true;

    /// <summary>Whether clients may list the exports (<c>NBD_OPT_LIST</c>). Default true.</summary>
    public bool AllowList { get; set; } = true;

    /// <summary>Serve the default export with the oldstyle handshake instead of fixed newstyle (nbdkit's <c>-o</c>).</summary>
    public bool Oldstyle { get; set; }

    /// <summary>
    /// How many requests one client may have in flight; the server stops reading that client's requests until
    /// replies have been sent. Default 64.
    /// </summary>
    public int MaxRequestsInFlight { get; set; } = 64;

    /// <summary>
    /// How many payload bytes (write data and read replies) one client may have held in the server at once; reading
    /// stops until replies have been sent. Default 64 MiB; at least one maximum payload is always allowed.
    /// </summary>
    public long MaxBytesInFlight { get; set; } = 64L * 1024 * 1024;

    /// <summary>The largest option payload accepted during the handshake; longer ones get NBD_REP_ERR_TOO_BIG or a closed connection. Default 64 KiB.</summary>
    public int MaxOptionLength { get; set; } = 64 * 1024;

    /// <summary>How many extents one block-status reply carries at most. Default 65536 (nbdkit's limit is 1 MiB of descriptors).</summary>
    public int MaxExtentsPerReply { get; set; } = 65536;

    /// <summary>How many clients may be connected at once; later ones are closed at once. Default 1024.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>
    /// Whether each socket connection is served by a thread of its own blocking in recv(), as nbdkit serves them,
    /// rather than by the thread pool's asynchronous sockets. Default true: fewer hops per request, so lower latency
    /// and more requests per second; a server with thousands of mostly idle clients may prefer false.
    /// </summary>
    public bool ThreadPerConnection { get; set; } = true;

    /// <summary>The longest a client may take to finish the handshake. Default: no limit, as nbdkit.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = System.Threading.Timeout.InfiniteTimeSpan;

    internal void Validate()
    {
        if (MaxRequestsInFlight < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxRequestsInFlight), "must be at least 1");
        if (MaxBytesInFlight < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxBytesInFlight), "must be at least 1");
        if (MaxOptionLength < 4096 + 8)
            throw new ArgumentOutOfRangeException(nameof(MaxOptionLength), "must be at least 4104 (one name and one query)");
        if (MaxExtentsPerReply < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxExtentsPerReply), "must be at least 1");
        if (MaxConnections < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxConnections), "must be at least 1");
        if (Tls != ServerTlsMode.Off && Certificate == null && (PskKeys == null || PskKeys.Count == 0))
            throw new ArgumentException("TLS needs a certificate or PSK keys", nameof(Tls));
    }
}
