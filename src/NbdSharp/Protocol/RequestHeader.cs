using System;
using System.Buffers.Binary;

namespace NbdSharp.Protocol;

/// <summary>
/// A transmission request header: compact (28 bytes, <c>0x25609513</c>) or, once extended headers are
/// negotiated, extended (32 bytes, <c>0x21e41c71</c>) with a 64-bit length.
/// </summary>
internal readonly struct RequestHeader
{
    public const int CompactSize = 28;
    public const int ExtendedSize = 32;

    public RequestHeader(ushort flags, NbdCommand type, ulong cookie, ulong offset, ulong length)
    {
        Flags = flags;
        Type = type;
        Cookie = cookie;
        Offset = offset;
        Length = length;
    }

    public ushort Flags { get; }
    public NbdCommand Type { get; }
    public ulong Cookie { get; }
    public ulong Offset { get; }

    /// <summary>The length; in a compact header only the low 32 bits go on the wire.</summary>
    public ulong Length { get; }

    /// <summary>Encodes the header and returns its size.</summary>
    public int Write(Span<byte> destination, bool extended)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)Type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], Offset);
        if (extended)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.ExtendedRequest);
            BinaryPrimitives.WriteUInt64BigEndian(destination[24..], Length);
            return ExtendedSize;
        }
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.Request);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], checked((uint)Length));
        return CompactSize;
    }

    /// <summary>
    /// Decodes a compact or extended header, whichever the magic says. Returns false when the magic is
    /// unknown or <paramref name="source"/> is shorter than the header it starts.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out RequestHeader header, out int size)
    {
        header = default;
        size = 0;
        if (source.Length < 4)
            return false;
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(source);
        bool extended;
        if (magic == NbdMagic.Request)
            extended = false;
        else if (magic == NbdMagic.ExtendedRequest)
            extended = true;
        else
            return false;
        int needed = extended ? ExtendedSize : CompactSize;
        if (source.Length < needed)
            return false;
        ulong length = extended
            ? BinaryPrimitives.ReadUInt64BigEndian(source[24..])
            : BinaryPrimitives.ReadUInt32BigEndian(source[24..]);
        header = new RequestHeader(
            BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            length);
        size = needed;
        return true;
    }
}
