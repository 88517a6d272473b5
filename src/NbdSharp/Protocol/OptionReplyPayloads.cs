using System;
using System.Buffers.Binary;
using System.Text;

namespace NbdSharp.Protocol;

/// <summary><c>NBD_REP_META_CONTEXT</c>: a 32-bit context id, then the context's name.</summary>
internal static class MetaContextReply
{
    /// <summary>Decodes <paramref name="payload"/>; false unless it holds an id and a name of 1 to 4096 bytes.</summary>
    public static bool TryRead(ReadOnlySpan<byte> payload, out uint id, out string name)
    {
        id = 0;
        name = "";
        if (payload.Length <= 4 || payload.Length > 4 + NbdProtocol.MaxString)
            return false;
        id = BinaryPrimitives.ReadUInt32BigEndian(payload);
        name = Encoding.UTF8.GetString(payload[4..]);
        return true;
    }
}

/// <summary>An <c>NBD_REP_INFO</c> payload: a 16-bit information type, then what that type carries.</summary>
internal static class InfoReply
{
    /// <summary>The information type; the payload has at least 2 bytes (checked with the reply header).</summary>
    public static NbdInfoType ReadType(ReadOnlySpan<byte> payload) => (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(payload);

    /// <summary>
    /// <c>NBD_INFO_NAME</c> or <c>NBD_INFO_DESCRIPTION</c>: the text after the type; false when it exceeds 4096 bytes.
    /// </summary>
    public static bool TryReadText(ReadOnlySpan<byte> payload, out string text)
    {
        text = "";
        if (payload.Length < 2 || payload.Length > 2 + NbdProtocol.MaxString)
            return false;
        text = Encoding.UTF8.GetString(payload[2..]);
        return true;
    }
}
