using NbdSharp.Protocol;


namespace NbdSharp.Engine;

/// <summary>What the handshake negotiated that the engine needs to frame and check replies.</summary>
internal sealed class ConnectionInfo
{
    public ulong ExportSize { get; init; }
    public bool StructuredReplies { get; init; }
    public bool ExtendedHeaders { get; init; }

    /// <summary>Bytes the handshake read past its end (normally none): the start of the first reply.</summary>
    public byte[] Leftover { get; init; } = [];

    /// <summary>Negotiated metadata contexts, for naming block status chunks by id (a handful: searched in order).</summary>
    public NegotiatedContext[] MetaContexts { get; init; } = [];
}

/// <summary>The engine's view of the connection.</summary>
internal enum EngineState
{
    /// <summary>Commands may be issued.</summary>
    Ready,
    /// <summary>The server closed the connection cleanly (after NBD_CMD_DISC, or with nothing in flight).</summary>
    Closed,
    /// <summary>The connection failed; every command in flight was failed.</summary>
    Dead,
}
