using System;
using System.Buffers.Binary;

namespace NbdSharp.Protocol;

/// <summary>The fixed part of an <c>NBD_REPLY_TYPE_OFFSET_DATA</c> chunk: the offset; the data follows.</summary>
internal static class OffsetDataChunk
{
    public const int PrefixSize = 8;

    public static ulong ReadOffset(ReadOnlySpan<byte> source) => BinaryPrimitives.ReadUInt64BigEndian(source);

    public static void WritePrefix(Span<byte> destination, ulong offset) =>
        BinaryPrimitives.WriteUInt64BigEndian(destination, offset);
}

/// <summary>An <c>NBD_REPLY_TYPE_OFFSET_HOLE</c> chunk: offset and hole size (12 bytes exactly).</summary>
internal readonly struct OffsetHoleChunk
{
    public const int Size = 12;

    public OffsetHoleChunk(ulong offset, uint length)
    {
        Offset = offset;
        Length = length;
    }

    public ulong Offset { get; }
    public uint Length { get; }

    public static OffsetHoleChunk Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt64BigEndian(source),
        BinaryPrimitives.ReadUInt32BigEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, Offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], Length);
    }
}

/// <summary>
/// The common prefix of error chunks: error (4) and message length (2), then the message and, for
/// <c>NBD_REPLY_TYPE_ERROR_OFFSET</c>, an 8-byte offset.
/// </summary>
internal readonly struct ErrorChunkPrefix
{
    public const int Size = 6;
    public const int OffsetSize = 8;

    public ErrorChunkPrefix(uint error, ushort messageLength)
    {
        Error = error;
        MessageLength = messageLength;
    }

    public uint Error { get; }
    public ushort MessageLength { get; }

    public static ErrorChunkPrefix Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt32BigEndian(source),
        BinaryPrimitives.ReadUInt16BigEndian(source[4..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, Error);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], MessageLength);
    }
}

/// <summary>
/// Block status payloads: <c>NBD_REPLY_TYPE_BLOCK_STATUS</c> (context id, then 8-byte descriptors of
/// 32-bit length and flags) and <c>NBD_REPLY_TYPE_BLOCK_STATUS_EXT</c> (context id, descriptor count,
/// then 16-byte descriptors of 64-bit length and flags).
/// </summary>
internal static class BlockStatusChunk
{
    public const int NarrowPrefixSize = 4;
    public const int NarrowDescriptorSize = 8;
    public const int WidePrefixSize = 8;
    public const int WideDescriptorSize = 16;

    public static uint ReadContextId(ReadOnlySpan<byte> source) => BinaryPrimitives.ReadUInt32BigEndian(source);

    public static uint ReadDescriptorCount(ReadOnlySpan<byte> source) => BinaryPrimitives.ReadUInt32BigEndian(source[4..]);

    /// <summary>Decodes one descriptor at <paramref name="source"/>.</summary>
    public static void ReadDescriptor(ReadOnlySpan<byte> source, bool wide, out ulong length, out ulong flags)
    {
        if (wide)
        {
            length = BinaryPrimitives.ReadUInt64BigEndian(source);
            flags = BinaryPrimitives.ReadUInt64BigEndian(source[8..]);
        }
        else
        {
            length = BinaryPrimitives.ReadUInt32BigEndian(source);
            flags = BinaryPrimitives.ReadUInt32BigEndian(source[4..]);
        }
    }
}
