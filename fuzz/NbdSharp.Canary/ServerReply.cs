using System;
using System.Buffers.Binary;
using System.Text;

namespace NbdSharp.Protocol;

/// <summary>The handshake canary: the NBD_REP_SERVER name length is not checked against the reply's length.</summary>
internal static class ServerReply
{
    public static bool TryRead(ReadOnlySpan<byte> payload, out string name, out string description)
    {
        name = description = "";
        if (payload.Length < 4)
            return false;
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        bool checkedLength = !Canary.Is("handshake");
        if ((checkedLength && nameLength > (uint)(payload.Length - 4)) || nameLength > NbdProtocol.MaxString)
            return false;
        name = Encoding.UTF8.GetString(payload.Slice(4, (int)nameLength));
        description = Encoding.UTF8.GetString(payload[(4 + (int)nameLength)..]);
        return true;
    }
}
