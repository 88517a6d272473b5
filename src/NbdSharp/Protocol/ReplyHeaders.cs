using System;
using System.Buffers.Binary;

namespace NbdSharp.Protocol;

/// <summary>A simple reply header (16 bytes): magic, error, cookie. A successful read's data follows it.</summary>
internal readonly struct SimpleReplyHeader
{
    public const int Size = 16;

    public SimpleReplyHeader(uint error, ulong cookie)
    {
        Error = error;
        Cookie = cookie;
    }

    /// <summary>The NBD error value (0 on success).</summary>
    public uint Error { get; }
    public ulong Cookie { get; }

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], Error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
    }

    /// <summary>Decodes the header; false if too short or the magic is not the simple reply magic.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out SimpleReplyHeader header)
    {
        header = default;
        if (source.Length < Size || BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.SimpleReply)
            return false;
        header = new SimpleReplyHeader(
            BinaryPrimitives.ReadUInt32BigEndian(source[4..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]));
        return true;
    }
}

/// <summary>A structured reply chunk header (20 bytes): magic, flags, type, cookie, payload length.</summary>
internal readonly struct StructuredReplyHeader
{
    public const int Size = 20;

    public StructuredReplyHeader(ushort flags, ushort type, ulong cookie, uint length)
    {
        Flags = flags;
        Type = type;
        Cookie = cookie;
        Length = length;
    }

    public ushort Flags { get; }
    public ushort Type { get; }
    public ulong Cookie { get; }
    public uint Length { get; }

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.StructuredReply);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], Type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], Length);
    }

    /// <summary>Decodes the header; false if too short or the magic is not the structured reply magic.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out StructuredReplyHeader header)
    {
        header = default;
        if (source.Length < Size || BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.StructuredReply)
            return false;
        header = new StructuredReplyHeader(
            BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
        return true;
    }
}

/// <summary>An extended reply chunk header (32 bytes): magic, flags, type, cookie, offset, 64-bit payload length.</summary>
internal readonly struct ExtendedReplyHeader
{
    public const int Size = 32;

    public ExtendedReplyHeader(ushort flags, ushort type, ulong cookie, ulong offset, ulong length)
    {
        Flags = flags;
        Type = type;
        Cookie = cookie;
        Offset = offset;
        Length = length;
    }

    public ushort Flags { get; }
    public ushort Type { get; }
    public ulong Cookie { get; }

    /// <summary>proto.md: must equal the offset of the request it answers.</summary>
    public ulong Offset { get; }
    public ulong Length { get; }

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.ExtendedReply);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], Type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], Offset);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], Length);
    }

    /// <summary>Decodes the header; false if too short or the magic is not the extended reply magic.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out ExtendedReplyHeader header)
    {
        header = default;
        if (source.Length < Size || BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.ExtendedReply)
            return false;
        header = new ExtendedReplyHeader(
            BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[24..]));
        return true;
    }
}
