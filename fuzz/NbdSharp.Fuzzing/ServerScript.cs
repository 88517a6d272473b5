using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Text;

namespace NbdSharp.Fuzzing;

/// <summary>
/// Writes what a server sends, message by message, in NBD's wire format (written here independently of the
/// library's encoders, so a shared mistake cannot hide): the canned handshakes and the well-formed seeds.
/// </summary>
public sealed class ServerScript
{
    /// <summary>NBD_OPT_GO.</summary>
    public const uint OptGo = 7;
    /// <summary>NBD_OPT_LIST.</summary>
    public const uint OptList = 3;
    /// <summary>NBD_OPT_INFO.</summary>
    public const uint OptInfo = 6;
    /// <summary>NBD_OPT_STRUCTURED_REPLY.</summary>
    public const uint OptStructuredReply = 8;
    /// <summary>NBD_OPT_LIST_META_CONTEXT.</summary>
    public const uint OptListMetaContext = 9;
    /// <summary>NBD_OPT_SET_META_CONTEXT.</summary>
    public const uint OptSetMetaContext = 10;
    /// <summary>NBD_OPT_EXTENDED_HEADERS.</summary>
    public const uint OptExtendedHeaders = 11;
    /// <summary>NBD_REP_ACK.</summary>
    public const uint RepAck = 1;
    /// <summary>NBD_REP_SERVER.</summary>
    public const uint RepServer = 2;
    /// <summary>NBD_REP_INFO.</summary>
    public const uint RepInfo = 3;
    /// <summary>NBD_REP_META_CONTEXT.</summary>
    public const uint RepMetaContext = 4;
    /// <summary>NBD_REP_ERR_UNSUP.</summary>
    public const uint RepErrUnsup = 0x80000001;
    /// <summary>Transmission flags: HAS_FLAGS, FLUSH, FUA, TRIM, WRITE_ZEROES, DF, MULTI_CONN, CACHE, FAST_ZERO.</summary>
    public const ushort AllFlags = 0x0DED;
    /// <summary>NBD_REPLY_FLAG_DONE.</summary>
    public const ushort Done = 1;

    private readonly List<byte> _bytes = new();

    /// <summary>The script so far.</summary>
    public byte[] ToArray() => _bytes.ToArray();

    /// <summary>Appends raw bytes.</summary>
    public ServerScript Raw(ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
            _bytes.Add(b);
        return this;
    }

    private ServerScript U16(ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(b, value);
        return Raw(b);
    }

    private ServerScript U32(uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return Raw(b);
    }

    private ServerScript U64(ulong value)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, value);
        return Raw(b);
    }

    /// <summary>The fixed-newstyle greeting ("NBDMAGIC", "IHAVEOPT", FIXED_NEWSTYLE | NO_ZEROES).</summary>
    public ServerScript NewstyleGreeting() => U64(0x4e42444d41474943).U64(0x49484156454F5054).U16(3);

    /// <summary>The oldstyle greeting with the export's size and flags, and its 124 zero bytes.</summary>
    public ServerScript OldstyleGreeting(ulong size, ushort flags)
    {
        U64(0x4e42444d41474943).U64(0x00420281861253).U64(size).U32(flags);
        return Raw(new byte[124]);
    }

    /// <summary>An option reply.</summary>
    public ServerScript OptionReply(uint option, uint type, ReadOnlySpan<byte> payload = default)
    {
        U64(0x0003e889045565a9).U32(option).U32(type).U32((uint)payload.Length);
        return Raw(payload);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_EXPORT.</summary>
    public ServerScript InfoExport(uint option, ulong size, ushort flags)
    {
        var payload = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(2), size);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(10), flags);
        return OptionReply(option, RepInfo, payload);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE.</summary>
    public ServerScript InfoBlockSize(uint option, uint minimum, uint preferred, uint maximum)
    {
        var payload = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(payload, 3);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(2), minimum);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(6), preferred);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(10), maximum);
        return OptionReply(option, RepInfo, payload);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_NAME (type 1) or NBD_INFO_DESCRIPTION (type 2).</summary>
    public ServerScript InfoText(uint option, ushort type, string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var payload = new byte[2 + utf8.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, type);
        utf8.CopyTo(payload, 2);
        return OptionReply(option, RepInfo, payload);
    }

    /// <summary>NBD_REP_META_CONTEXT.</summary>
    public ServerScript MetaContext(uint option, uint id, string name)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(name);
        var payload = new byte[4 + utf8.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, id);
        utf8.CopyTo(payload, 4);
        return OptionReply(option, RepMetaContext, payload);
    }

    /// <summary>NBD_REP_SERVER (one export of a list).</summary>
    public ServerScript Server(string name, string description)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        byte[] d = Encoding.UTF8.GetBytes(description);
        var payload = new byte[4 + n.Length + d.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)n.Length);
        n.CopyTo(payload, 4);
        d.CopyTo(payload, 4 + n.Length);
        return OptionReply(OptList, RepServer, payload);
    }

    /// <summary>A simple reply, with the data of a successful read.</summary>
    public ServerScript SimpleReply(ulong cookie, uint error, ReadOnlySpan<byte> data = default)
    {
        U32(0x67446698).U32(error).U64(cookie);
        return Raw(data);
    }

    /// <summary>A structured reply chunk (compact header), or with <paramref name="extended"/> an extended one.</summary>
    public ServerScript Chunk(bool extended, ulong cookie, ushort flags, ushort type, ulong requestOffset, ReadOnlySpan<byte> payload)
    {
        if (extended)
            U32(0x6e8a278c).U16(flags).U16(type).U64(cookie).U64(requestOffset).U64((ulong)payload.Length);
        else
            U32(0x668e33ef).U16(flags).U16(type).U64(cookie).U32((uint)payload.Length);
        return Raw(payload);
    }

    /// <summary>NBD_REPLY_TYPE_OFFSET_DATA.</summary>
    public ServerScript DataChunk(bool extended, ulong cookie, bool done, ulong requestOffset, ulong offset, ReadOnlySpan<byte> data)
    {
        var payload = new byte[8 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(payload, offset);
        data.CopyTo(payload.AsSpan(8));
        return Chunk(extended, cookie, done ? Done : (ushort)0, 1, requestOffset, payload);
    }

    /// <summary>NBD_REPLY_TYPE_OFFSET_HOLE.</summary>
    public ServerScript HoleChunk(bool extended, ulong cookie, bool done, ulong requestOffset, ulong offset, uint length)
    {
        var payload = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(payload, offset);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8), length);
        return Chunk(extended, cookie, done ? Done : (ushort)0, 2, requestOffset, payload);
    }

    /// <summary>NBD_REPLY_TYPE_NONE with DONE.</summary>
    public ServerScript NoneChunk(bool extended, ulong cookie, ulong requestOffset) =>
        Chunk(extended, cookie, Done, 0, requestOffset, default);

    /// <summary>NBD_REPLY_TYPE_ERROR (or ERROR_OFFSET) with a message.</summary>
    public ServerScript ErrorChunk(bool extended, ulong cookie, bool done, ulong requestOffset, uint error, string message, ulong? offset = null)
    {
        byte[] text = Encoding.UTF8.GetBytes(message);
        var payload = new byte[6 + text.Length + (offset.HasValue ? 8 : 0)];
        BinaryPrimitives.WriteUInt32BigEndian(payload, error);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), (ushort)text.Length);
        text.CopyTo(payload, 6);
        if (offset.HasValue)
            BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(6 + text.Length), offset.Value);
        return Chunk(extended, cookie, done ? Done : (ushort)0, (ushort)(offset.HasValue ? 0x8002 : 0x8001), requestOffset, payload);
    }

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS, or NBD_REPLY_TYPE_BLOCK_STATUS_EXT with extended headers.</summary>
    public ServerScript BlockStatus(bool extended, ulong cookie, bool done, ulong requestOffset, uint contextId,
        IReadOnlyList<(ulong Length, uint Flags)> extents)
    {
        byte[] payload;
        if (extended)
        {
            payload = new byte[8 + (16 * extents.Count)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4), (uint)extents.Count);
            for (int i = 0; i < extents.Count; i++)
            {
                BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(8 + (16 * i)), extents[i].Length);
                BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(16 + (16 * i)), extents[i].Flags);
            }
        }
        else
        {
            payload = new byte[4 + (8 * extents.Count)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
            for (int i = 0; i < extents.Count; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + (8 * i)), (uint)extents[i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + (8 * i)), extents[i].Flags);
            }
        }
        return Chunk(extended, cookie, done ? Done : (ushort)0, (ushort)(extended ? 6 : 5), requestOffset, payload);
    }
}
