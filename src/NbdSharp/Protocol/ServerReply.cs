using System;
using System.Buffers.Binary;
using System.Text;

namespace NbdSharp.Protocol;

/// <summary><c>NBD_REP_SERVER</c>, one export of <c>NBD_OPT_LIST</c>: a 32-bit name length, the name, then the description.</summary>
internal static class ServerReply
{
    /// <summary>Decodes <paramref name="payload"/>; false when the name length does not fit in it or exceeds 4096 bytes.</summary>
    public static bool TryRead(ReadOnlySpan<byte> payload, out string name, out string description)
    {
        name = description = "";
        if (payload.Length < 4)
            return false;
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (nameLength > (uint)(payload.Length - 4) || nameLength > NbdProtocol.MaxString)
            return false;
        name = Encoding.UTF8.GetString(payload.Slice(4, (int)nameLength));
        description = Encoding.UTF8.GetString(payload[(4 + (int)nameLength)..]);
        return true;
    }
}
