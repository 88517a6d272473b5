using System;
using NbdSharp.Protocol;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>Every header and payload codec against byte vectors written out from doc/proto.md's layouts.</summary>
[Trait("Tier", "Unit")]
public class ProtocolCodecTests
{
    private static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));

    [Fact]
    public void CompactRequest_EncodesProtoLayout()
    {
        var header = new RequestHeader(0x0001, NbdCommand.Write, 0x0102030405060708, 0x1000, 512);
        byte[] wire = new byte[RequestHeader.CompactSize];
        Assert.Equal(28, header.Write(wire, extended: false));
        Assert.Equal(Hex("25609513 0001 0001 0102030405060708 0000000000001000 00000200"), wire);
        Assert.True(RequestHeader.TryRead(wire, out RequestHeader back, out int size));
        Assert.Equal(28, size);
        Assert.Equal(header.Cookie, back.Cookie);
        Assert.Equal(NbdCommand.Write, back.Type);
        Assert.Equal(512UL, back.Length);
    }

    [Fact]
    public void ExtendedRequest_Has64BitLength()
    {
        var header = new RequestHeader(0x0020, NbdCommand.BlockStatus, 7, 0, 0x1_0000_0000);
        byte[] wire = new byte[RequestHeader.ExtendedSize];
        Assert.Equal(32, header.Write(wire, extended: true));
        Assert.Equal(Hex("21e41c71 0020 0007 0000000000000007 0000000000000000 0000000100000000"), wire);
        Assert.True(RequestHeader.TryRead(wire, out RequestHeader back, out int size));
        Assert.Equal(32, size);
        Assert.Equal(0x1_0000_0000UL, back.Length);
    }

    [Fact]
    public void CompactRequest_RefusesLengthOver32Bits()
    {
        var header = new RequestHeader(0, NbdCommand.Trim, 1, 0, 0x1_0000_0000);
        Assert.Throws<OverflowException>(() => header.Write(new byte[28], extended: false));
    }

    [Fact]
    public void RequestHeader_RejectsUnknownMagicAndShortInput()
    {
        Assert.False(RequestHeader.TryRead(Hex("12560953 0000 0000 0000000000000000 0000000000000000 00000000"), out _, out _));
        Assert.False(RequestHeader.TryRead(Hex("25609513 0000"), out _, out _));
    }

    [Fact]
    public void SimpleReply_RoundTrips()
    {
        byte[] wire = Hex("67446698 00000005 00000000000000ff");
        Assert.True(SimpleReplyHeader.TryRead(wire, out SimpleReplyHeader reply));
        Assert.Equal(5u, reply.Error);
        Assert.Equal(255UL, reply.Cookie);
        byte[] again = new byte[16];
        reply.Write(again);
        Assert.Equal(wire, again);
        Assert.False(SimpleReplyHeader.TryRead(Hex("668e33ef 00000005 00000000000000ff"), out _));
    }

    [Fact]
    public void StructuredReply_RoundTrips()
    {
        byte[] wire = Hex("668e33ef 0001 0001 0000000000000002 00001008");
        Assert.True(StructuredReplyHeader.TryRead(wire, out StructuredReplyHeader chunk));
        Assert.Equal(NbdProtocol.ReplyFlagDone, chunk.Flags);
        Assert.Equal((ushort)ChunkType.OffsetData, chunk.Type);
        Assert.Equal(2UL, chunk.Cookie);
        Assert.Equal(0x1008u, chunk.Length);
        byte[] again = new byte[20];
        chunk.Write(again);
        Assert.Equal(wire, again);
    }

    [Fact]
    public void ExtendedReply_RoundTrips()
    {
        byte[] wire = Hex("6e8a278c 0000 0006 0000000000000003 0000000000200000 0000000000000018");
        Assert.True(ExtendedReplyHeader.TryRead(wire, out ExtendedReplyHeader chunk));
        Assert.Equal((ushort)ChunkType.BlockStatusExt, chunk.Type);
        Assert.Equal(0x200000UL, chunk.Offset);
        Assert.Equal(24UL, chunk.Length);
        byte[] again = new byte[32];
        chunk.Write(again);
        Assert.Equal(wire, again);
    }

    [Fact]
    public void Greeting_DistinguishesNewstyleOldstyleAndGarbage()
    {
        Greeting newstyle = Greeting.Read(Hex("4e42444d41474943 49484156454f5054"));
        Assert.True(newstyle.IsNbd && newstyle.IsNewstyle && !newstyle.IsOldstyle);
        Greeting oldstyle = Greeting.Read(Hex("4e42444d41474943 0000420281861253"));
        Assert.True(oldstyle.IsNbd && oldstyle.IsOldstyle);
        Assert.False(Greeting.Read(Hex("485454502f312e31 2032303020204f4b")).IsNbd);
    }

    [Fact]
    public void OldstyleHandshake_DecodesSizeAndFlags()
    {
        byte[] rest = new byte[OldstyleHandshake.RemainderSize];
        new OldstyleHandshake(1 << 20, 0, 0x0003).Write(rest);
        Assert.Equal(Hex("0000000000100000 0000 0003"), rest[..12]);
        OldstyleHandshake back = OldstyleHandshake.Read(rest);
        Assert.Equal(1UL << 20, back.ExportSize);
        Assert.Equal((ushort)3, back.TransmissionFlags);
        Assert.Equal(136, rest.Length);
    }

    [Fact]
    public void OptionRequestAndReply_EncodeProtoLayout()
    {
        byte[] request = new byte[16];
        new OptionRequestHeader(NbdOption.Go, 10).Write(request);
        Assert.Equal(Hex("49484156454f5054 00000007 0000000a"), request);

        byte[] reply = Hex("0003e889045565a9 00000007 80000006 00000000");
        Assert.True(OptionReplyHeader.TryRead(reply, out OptionReplyHeader header));
        Assert.Equal(NbdOption.Go, header.Option);
        Assert.Equal(OptionReplyType.ErrUnknown, header.Type);
        Assert.True(header.IsError);
        Assert.False(OptionReplyHeader.TryRead(Hex("0003e889045565aa 00000007 80000006 00000000"), out _));
    }

    [Fact]
    public void InfoPayloads_DecodeProtoLayout()
    {
        NbdInfoExport export = NbdInfoExport.Read(Hex("0000 0000000004000000 014d"));
        Assert.Equal(64UL << 20, export.ExportSize);
        Assert.Equal((ushort)0x14d, export.TransmissionFlags);
        NbdInfoBlockSize sizes = NbdInfoBlockSize.Read(Hex("0003 00000200 00001000 02000000"));
        Assert.Equal(512u, sizes.Minimum);
        Assert.Equal(4096u, sizes.Preferred);
        Assert.Equal(32u << 20, sizes.Maximum);
        Assert.True(sizes.IsSane());
    }

    [Theory]
    [InlineData(0u, 4096u, 1u << 20)]
    [InlineData(3u, 4096u, 1u << 20)]
    [InlineData(512u, 256u, 1u << 20)]
    [InlineData(131072u, 131072u, 1u << 20)]
    [InlineData(512u, 4096u, 1000u)]
    [InlineData(4096u, 4096u, 6144u)]
    public void BlockSize_InsaneAdvertisementsAreRecognised(uint minimum, uint preferred, uint maximum) =>
        Assert.False(new NbdInfoBlockSize(minimum, preferred, maximum).IsSane());

    [Fact]
    public void ExportNameReply_HonoursNoZeroes()
    {
        var reply = new ExportNameReply(4096, 0x0001);
        byte[] wire = new byte[134];
        Assert.Equal(134, reply.Write(wire, noZeroes: false));
        Assert.Equal(10, reply.Write(wire, noZeroes: true));
        Assert.Equal(4096UL, ExportNameReply.Read(wire).ExportSize);
    }

    [Fact]
    public void ChunkPayloads_DecodeProtoLayout()
    {
        Assert.Equal(0x1234UL, OffsetDataChunk.ReadOffset(Hex("0000000000001234")));
        OffsetHoleChunk hole = OffsetHoleChunk.Read(Hex("0000000000002000 00000200"));
        Assert.Equal(0x2000UL, hole.Offset);
        Assert.Equal(512u, hole.Length);
        ErrorChunkPrefix error = ErrorChunkPrefix.Read(Hex("00000005 0003 626164"));
        Assert.Equal(5u, error.Error);
        Assert.Equal((ushort)3, error.MessageLength);

        byte[] narrow = Hex("00000001 00010000 00000003");
        Assert.Equal(1u, BlockStatusChunk.ReadContextId(narrow));
        BlockStatusChunk.ReadDescriptor(narrow.AsSpan(4), wide: false, out ulong length, out ulong flags);
        Assert.Equal(65536UL, length);
        Assert.Equal(3UL, flags);
        byte[] wide = Hex("00000002 00000001 0000000100000000 0000000000000001");
        Assert.Equal(1u, BlockStatusChunk.ReadDescriptorCount(wide));
        BlockStatusChunk.ReadDescriptor(wide.AsSpan(8), wide: true, out length, out flags);
        Assert.Equal(1UL << 32, length);
    }

    [Theory]
    [InlineData(false, 12UL, true)]
    [InlineData(false, 20UL, true)]
    [InlineData(false, 4UL, false)]
    [InlineData(false, 16UL, false)]
    [InlineData(true, 24UL, true)]
    [InlineData(true, 8UL, false)]
    [InlineData(true, 30UL, false)]
    public void BlockStatusLength_NeedsWholeDescriptors(bool wide, ulong length, bool valid) =>
        Assert.Equal(valid, BlockStatusLayout.DescriptorCount(wide, length) >= 0);

    [Theory]
    [InlineData(0u, 0)]
    [InlineData(1u, Errno.EPERM)]
    [InlineData(5u, Errno.EIO)]
    [InlineData(12u, Errno.ENOMEM)]
    [InlineData(22u, Errno.EINVAL)]
    [InlineData(28u, Errno.ENOSPC)]
    [InlineData(75u, Errno.EOVERFLOW)]
    [InlineData(95u, Errno.ENOTSUP)]
    [InlineData(108u, Errno.ESHUTDOWN)]
    [InlineData(4242u, Errno.EINVAL)]
    public void NbdErrors_MapToErrnoAsLibnbd(uint nbdError, int errno) => Assert.Equal(errno, NbdErrors.ToErrno(nbdError));

    [Fact]
    public void ErrorTypes_HaveBit15()
    {
        Assert.True(NbdProtocol.IsErrorChunk((ushort)ChunkType.Error));
        Assert.True(NbdProtocol.IsErrorChunk((ushort)ChunkType.ErrorOffset));
        Assert.False(NbdProtocol.IsErrorChunk((ushort)ChunkType.BlockStatus));
        Assert.Equal(0x8001, (int)ChunkType.Error);
        Assert.Equal(0x8002, (int)ChunkType.ErrorOffset);
    }
}
