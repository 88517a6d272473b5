using System.Collections.Generic;
using NbdSharp.Protocol;

namespace NbdSharp.Negotiation;

/// <summary>The handle's settings that shape the handshake, captured when connecting.</summary>
internal sealed class HandshakeSettings
{
    public string ExportName { get; init; } = "";
    public bool RequestStructuredReplies { get; init; } = true;
    public bool RequestExtendedHeaders { get; init; } = true;
    public bool RequestBlockSize { get; init; } = true;
    public bool FullInfo { get; init; }
    public bool RequestMetaContext { get; init; } = true;
    public HandshakeFlag HandshakeFlags { get; init; } = HandshakeFlag.Mask;
    public TlsMode Tls { get; init; }
    public Tls.TlsCredentials? TlsCredentials { get; init; }
    public IReadOnlyList<string> MetaContexts { get; init; } = [];
}

/// <summary>Everything the handshake learnt about the server and the export.</summary>
internal sealed class NegotiatedExport
{
    /// <summary>"oldstyle", "newstyle" or "newstyle-fixed".</summary>
    public string Protocol { get; set; } = "";

    /// <summary>The handshake flags both sides agreed on.</summary>
    public HandshakeFlag HandshakeFlags { get; set; }

    public bool StructuredReplies { get; set; }
    public bool ExtendedHeaders { get; set; }
    public bool TlsNegotiated { get; set; }

    public ulong ExportSize { get; set; }

    /// <summary>Transmission flags; 0 until the server sent them.</summary>
    public ushort TransmissionFlags { get; set; }

    public uint BlockMinimum { get; set; }
    public uint BlockPreferred { get; set; }
    public uint BlockMaximum { get; set; }
    public uint PayloadMaximum { get; set; }
    public string? CanonicalName { get; set; }
    public string? Description { get; set; }

    /// <summary>Contexts selected by the last NBD_OPT_SET_META_CONTEXT, in reply order.</summary>
    public List<NegotiatedContext> MetaContexts { get; } = [];

    /// <summary>Whether <see cref="MetaContexts"/> reflects a successful request (libnbd's meta_valid).</summary>
    public bool MetaValid { get; set; }

    /// <summary>Forgets what an export told us (before another GO/INFO, or after a failed one).</summary>
    public void ResetExport()
    {
        ExportSize = 0;
        TransmissionFlags = 0;
        BlockMinimum = 0;
        BlockPreferred = 0;
        BlockMaximum = 0;
        PayloadMaximum = 0;
        CanonicalName = null;
        Description = null;
    }
}
