using System;

namespace NbdSharp.Protocol;

/// <summary>Option codes, <c>NBD_OPT_*</c>.</summary>
internal enum NbdOption : uint
{
    ExportName = 1,
    Abort = 2,
    List = 3,
    PeekExport = 4,
    StartTls = 5,
    Info = 6,
    Go = 7,
    StructuredReply = 8,
    ListMetaContext = 9,
    SetMetaContext = 10,
    ExtendedHeaders = 11,
}

/// <summary>Option reply types, <c>NBD_REP_*</c>; errors have bit 31 set.</summary>
internal enum OptionReplyType : uint
{
    Ack = 1,
    Server = 2,
    Info = 3,
    MetaContext = 4,
    ErrUnsup = 0x80000001,
    ErrPolicy = 0x80000002,
    ErrInvalid = 0x80000003,
    ErrPlatform = 0x80000004,
    ErrTlsReqd = 0x80000005,
    ErrUnknown = 0x80000006,
    ErrShutdown = 0x80000007,
    ErrBlockSizeReqd = 0x80000008,
    ErrTooBig = 0x80000009,
    ErrExtHeaderReqd = 0x8000000A,
}

/// <summary>Information types inside <c>NBD_REP_INFO</c>, <c>NBD_INFO_*</c>.</summary>
internal enum NbdInfoType : ushort
{
    Export = 0,
    Name = 1,
    Description = 2,
    BlockSize = 3,
}

/// <summary>Handshake flags the server sends in a newstyle greeting.</summary>
[Flags]
internal enum GlobalFlags : ushort
{
    None = 0,
    FixedNewstyle = 1,
    NoZeroes = 2,
}

/// <summary>Transmission flags describing an export, <c>NBD_FLAG_*</c>.</summary>
[Flags]
internal enum TransmissionFlags : ushort
{
    None = 0,
    HasFlags = 1 << 0,
    ReadOnly = 1 << 1,
    SendFlush = 1 << 2,
    SendFua = 1 << 3,
    Rotational = 1 << 4,
    SendTrim = 1 << 5,
    SendWriteZeroes = 1 << 6,
    SendDf = 1 << 7,
    CanMultiConn = 1 << 8,
    SendResize = 1 << 9,
    SendCache = 1 << 10,
    SendFastZero = 1 << 11,
    BlockStatusPayload = 1 << 12,
}

/// <summary>Command flags on the wire, <c>NBD_CMD_FLAG_*</c> (the public <c>CmdFlag</c> mirrors them for callers).</summary>
[Flags]
internal enum CommandFlags : ushort
{
    None = 0,
    Fua = 1 << 0,
    NoHole = 1 << 1,
    Df = 1 << 2,
    ReqOne = 1 << 3,
    FastZero = 1 << 4,
    PayloadLen = 1 << 5,
}

/// <summary>Command types, <c>NBD_CMD_*</c>.</summary>
internal enum NbdCommand : ushort
{
    Read = 0,
    Write = 1,
    Disconnect = 2,
    Flush = 3,
    Trim = 4,
    Cache = 5,
    WriteZeroes = 6,
    BlockStatus = 7,
    Resize = 8,
}

/// <summary>Reply chunk types, <c>NBD_REPLY_TYPE_*</c>; error types have bit 15 set.</summary>
internal enum ChunkType : ushort
{
    None = 0,
    OffsetData = 1,
    OffsetHole = 2,
    BlockStatus = 5,
    BlockStatusExt = 6,
    Error = 0x8001,
    ErrorOffset = 0x8002,
}

/// <summary>Protocol-level constants and small helpers.</summary>
internal static class NbdProtocol
{
    /// <summary><c>NBD_REPLY_FLAG_DONE</c>: the last chunk of a reply.</summary>
    public const ushort ReplyFlagDone = 1;

    /// <summary>Bit 15 of a chunk type marks an error chunk.</summary>
    public const ushort ChunkTypeErrorBit = 0x8000;

    /// <summary>Bit 31 of an option reply type marks an error.</summary>
    public const uint OptionReplyErrorBit = 0x80000000;

    /// <summary>proto.md: strings must not exceed 4096 bytes.</summary>
    public const int MaxString = 4096;

    /// <summary>The largest read or write this client issues (libnbd's MAX_REQUEST_SIZE).</summary>
    public const uint MaxRequestSize = 64 * 1024 * 1024;

    /// <summary>The default IANA port of NBD.</summary>
    public const int DefaultPort = 10809;

    /// <summary>Size of an oldstyle handshake in total.</summary>
    public const int OldstyleHandshakeSize = 152;

    /// <summary>Size of the reply to <c>NBD_OPT_EXPORT_NAME</c> with the 124 zero bytes.</summary>
    public const int ExportNameReplySize = 134;

    /// <summary>Size of the reply to <c>NBD_OPT_EXPORT_NAME</c> without the zero bytes.</summary>
    public const int ExportNameReplyShortSize = 10;

    /// <summary>Whether a chunk type is an error type.</summary>
    public static bool IsErrorChunk(ushort type) => (type & ChunkTypeErrorBit) != 0;

    /// <summary>Whether an option reply type is an error.</summary>
    public static bool IsErrorReply(uint type) => (type & OptionReplyErrorBit) != 0;

    /// <summary>libnbd's name of a command, as used in error messages.</summary>
    public static string CommandName(NbdCommand type) => type switch
    {
        NbdCommand.Read => "read",
        NbdCommand.Write => "write",
        NbdCommand.Disconnect => "disconnect",
        NbdCommand.Flush => "flush",
        NbdCommand.Trim => "trim",
        NbdCommand.Cache => "cache",
        NbdCommand.WriteZeroes => "write-zeroes",
        NbdCommand.BlockStatus => "block-status",
        _ => "UNKNOWN!",
    };

    /// <summary>The name of an option, for messages.</summary>
    public static string OptionName(NbdOption option) => option switch
    {
        NbdOption.ExportName => "NBD_OPT_EXPORT_NAME",
        NbdOption.Abort => "NBD_OPT_ABORT",
        NbdOption.List => "NBD_OPT_LIST",
        NbdOption.PeekExport => "NBD_OPT_PEEK_EXPORT",
        NbdOption.StartTls => "NBD_OPT_STARTTLS",
        NbdOption.Info => "NBD_OPT_INFO",
        NbdOption.Go => "NBD_OPT_GO",
        NbdOption.StructuredReply => "NBD_OPT_STRUCTURED_REPLY",
        NbdOption.ListMetaContext => "NBD_OPT_LIST_META_CONTEXT",
        NbdOption.SetMetaContext => "NBD_OPT_SET_META_CONTEXT",
        NbdOption.ExtendedHeaders => "NBD_OPT_EXTENDED_HEADERS",
        _ => "NBD_OPT_" + ((uint)option).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
