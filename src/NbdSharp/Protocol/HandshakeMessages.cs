using System;
using System.Buffers.Binary;

namespace NbdSharp.Protocol;

/// <summary>The first 16 bytes a server sends: <c>NBDMAGIC</c> then <c>IHAVEOPT</c> (newstyle) or the oldstyle magic.</summary>
internal readonly struct Greeting
{
    public const int Size = 16;

    public Greeting(ulong magic, ulong version)
    {
        Magic = magic;
        Version = version;
    }

    public ulong Magic { get; }
    public ulong Version { get; }

    public bool IsNbd => Magic == NbdMagic.Greeting;
    public bool IsNewstyle => Version == NbdMagic.IHaveOpt;
    public bool IsOldstyle => Version == NbdMagic.Oldstyle;

    public static Greeting Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt64BigEndian(source),
        BinaryPrimitives.ReadUInt64BigEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, Magic);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Version);
    }
}

/// <summary>The rest of an oldstyle handshake after the greeting: size, 16-bit global and transmission flags, 124 zeroes.</summary>
internal readonly struct OldstyleHandshake
{
    /// <summary>Bytes after the 16-byte greeting.</summary>
    public const int RemainderSize = NbdProtocol.OldstyleHandshakeSize - Greeting.Size;

    public OldstyleHandshake(ulong exportSize, ushort globalFlags, ushort transmissionFlags)
    {
        ExportSize = exportSize;
        GlobalFlags = globalFlags;
        TransmissionFlags = transmissionFlags;
    }

    public ulong ExportSize { get; }
    public ushort GlobalFlags { get; }
    public ushort TransmissionFlags { get; }

    public static OldstyleHandshake Read(ReadOnlySpan<byte> remainder) => new(
        BinaryPrimitives.ReadUInt64BigEndian(remainder),
        BinaryPrimitives.ReadUInt16BigEndian(remainder[8..]),
        BinaryPrimitives.ReadUInt16BigEndian(remainder[10..]));

    public void Write(Span<byte> remainder)
    {
        remainder[..RemainderSize].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(remainder, ExportSize);
        BinaryPrimitives.WriteUInt16BigEndian(remainder[8..], GlobalFlags);
        BinaryPrimitives.WriteUInt16BigEndian(remainder[10..], TransmissionFlags);
    }
}

/// <summary>An option request header (16 bytes): <c>IHAVEOPT</c>, option, data length.</summary>
internal readonly struct OptionRequestHeader
{
    public const int Size = 16;

    public OptionRequestHeader(NbdOption option, uint length)
    {
        Option = option;
        Length = length;
    }

    public NbdOption Option { get; }
    public uint Length { get; }

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], (uint)Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], Length);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out OptionRequestHeader header)
    {
        header = default;
        if (source.Length < Size || BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.IHaveOpt)
            return false;
        header = new OptionRequestHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[12..]));
        return true;
    }
}

/// <summary>An option reply header (20 bytes): reply magic, option, reply type, data length.</summary>
internal readonly struct OptionReplyHeader
{
    public const int Size = 20;

    public OptionReplyHeader(NbdOption option, OptionReplyType type, uint length)
    {
        Option = option;
        Type = type;
        Length = length;
    }

    public NbdOption Option { get; }
    public OptionReplyType Type { get; }
    public uint Length { get; }

    public bool IsError => NbdProtocol.IsErrorReply((uint)Type);

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], (uint)Option);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], (uint)Type);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], Length);
    }

    /// <summary>Decodes the header; false if the magic is wrong.</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out OptionReplyHeader header)
    {
        header = default;
        if (source.Length < Size || BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.OptionReply)
            return false;
        header = new OptionReplyHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            (OptionReplyType)BinaryPrimitives.ReadUInt32BigEndian(source[12..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
        return true;
    }
}

/// <summary>The reply to <c>NBD_OPT_EXPORT_NAME</c>: size, transmission flags and (unless NO_ZEROES) 124 zeroes.</summary>
internal readonly struct ExportNameReply
{
    public ExportNameReply(ulong exportSize, ushort transmissionFlags)
    {
        ExportSize = exportSize;
        TransmissionFlags = transmissionFlags;
    }

    public ulong ExportSize { get; }
    public ushort TransmissionFlags { get; }

    public static ExportNameReply Read(ReadOnlySpan<byte> source) => new(
        BinaryPrimitives.ReadUInt64BigEndian(source),
        BinaryPrimitives.ReadUInt16BigEndian(source[8..]));

    public int Write(Span<byte> destination, bool noZeroes)
    {
        int size = noZeroes ? NbdProtocol.ExportNameReplyShortSize : NbdProtocol.ExportNameReplySize;
        destination[..size].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(destination, ExportSize);
        BinaryPrimitives.WriteUInt16BigEndian(destination[8..], TransmissionFlags);
        return size;
    }
}

/// <summary><c>NBD_INFO_EXPORT</c>: the 2-byte type, size and transmission flags (12 bytes exactly).</summary>
internal readonly struct NbdInfoExport
{
    public const int Size = 12;

    public NbdInfoExport(ulong exportSize, ushort transmissionFlags)
    {
        ExportSize = exportSize;
        TransmissionFlags = transmissionFlags;
    }

    public ulong ExportSize { get; }
    public ushort TransmissionFlags { get; }

    public static NbdInfoExport Read(ReadOnlySpan<byte> info) => new(
        BinaryPrimitives.ReadUInt64BigEndian(info[2..]),
        BinaryPrimitives.ReadUInt16BigEndian(info[10..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)NbdInfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(destination[2..], ExportSize);
        BinaryPrimitives.WriteUInt16BigEndian(destination[10..], TransmissionFlags);
    }
}

/// <summary><c>NBD_INFO_BLOCK_SIZE</c>: the 2-byte type, minimum, preferred and maximum sizes (14 bytes exactly).</summary>
internal readonly struct NbdInfoBlockSize
{
    public const int Size = 14;

    public NbdInfoBlockSize(uint minimum, uint preferred, uint maximum)
    {
        Minimum = minimum;
        Preferred = preferred;
        Maximum = maximum;
    }

    public uint Minimum { get; }
    public uint Preferred { get; }
    public uint Maximum { get; }

    public static NbdInfoBlockSize Read(ReadOnlySpan<byte> info) => new(
        BinaryPrimitives.ReadUInt32BigEndian(info[2..]),
        BinaryPrimitives.ReadUInt32BigEndian(info[6..]),
        BinaryPrimitives.ReadUInt32BigEndian(info[10..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)NbdInfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(destination[2..], Minimum);
        BinaryPrimitives.WriteUInt32BigEndian(destination[6..], Preferred);
        BinaryPrimitives.WriteUInt32BigEndian(destination[10..], Maximum);
    }

    /// <summary>
    /// proto.md recommendations, as libnbd applies them: min and preferred powers of two, min at most
    /// 64 KiB and at most preferred, preferred at least 512 and at most max, max a multiple of min or
    /// <c>0xffffffff</c>. A server advertisement that breaks them is ignored.
    /// </summary>
    public bool IsSane()
    {
        if (Minimum == 0 || Minimum > 65536 || Minimum > Preferred || Preferred < 512 || Preferred > Maximum)
            return false;
        if ((Minimum & (Minimum - 1)) != 0 || (Preferred & (Preferred - 1)) != 0)
            return false;
        return Maximum == uint.MaxValue || Maximum % Minimum == 0;
    }
}
