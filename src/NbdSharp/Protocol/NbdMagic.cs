namespace NbdSharp.Protocol;

/// <summary>The magic numbers of the NBD protocol (proto.md, "Protocol phases").</summary>
internal static class NbdMagic
{
    /// <summary>"NBDMAGIC": the first 8 bytes of every handshake.</summary>
    public const ulong Greeting = 0x4e42444d41474943;

    /// <summary>Bytes 8-15 of an oldstyle handshake.</summary>
    public const ulong Oldstyle = 0x00420281861253;

    /// <summary>"IHAVEOPT": bytes 8-15 of a newstyle handshake and the start of every option request.</summary>
    public const ulong IHaveOpt = 0x49484156454F5054;

    /// <summary>Start of every fixed-newstyle option reply.</summary>
    public const ulong OptionReply = 0x0003e889045565a9;

    /// <summary>Compact (28-byte) request header.</summary>
    public const uint Request = 0x25609513;

    /// <summary>Extended (32-byte) request header, once extended headers are negotiated.</summary>
    public const uint ExtendedRequest = 0x21e41c71;

    /// <summary>Simple (16-byte) reply header.</summary>
    public const uint SimpleReply = 0x67446698;

    /// <summary>Structured (20-byte) reply chunk header.</summary>
    public const uint StructuredReply = 0x668e33ef;

    /// <summary>Extended (32-byte) reply chunk header.</summary>
    public const uint ExtendedReply = 0x6e8a278c;
}
