namespace NbdSharp.Protocol;

/// <summary>How replies are framed on the wire: the magic decides the header's size, and must fit what was negotiated.</summary>
internal static class ReplyFraming
{
    /// <summary>The size of the reply header that starts with <paramref name="magic"/>, or 4 (the magic alone) for no reply magic.</summary>
    public static int HeaderSize(uint magic) => magic switch
    {
        NbdMagic.SimpleReply => SimpleReplyHeader.Size,
        NbdMagic.StructuredReply => StructuredReplyHeader.Size,
        NbdMagic.ExtendedReply => ExtendedReplyHeader.Size,
        _ => 4,
    };

    /// <summary>
    /// Whether a reply starting with <paramref name="magic"/> may come on a connection that negotiated
    /// <paramref name="structured"/> replies and <paramref name="extended"/> headers: null if so, else what is wrong.
    /// With extended headers every reply is extended; otherwise simple replies, and structured ones if negotiated.
    /// </summary>
    public static string? CheckMagic(uint magic, bool structured, bool extended) => magic switch
    {
        NbdMagic.SimpleReply when !extended => null,
        NbdMagic.StructuredReply when structured && !extended => null,
        NbdMagic.ExtendedReply when extended => null,
        NbdMagic.StructuredReply when !structured => "server sent a structured reply, which was not negotiated",
        _ => "invalid or unexpected reply magic 0x" + magic.ToString("x8", System.Globalization.CultureInfo.InvariantCulture),
    };
}
