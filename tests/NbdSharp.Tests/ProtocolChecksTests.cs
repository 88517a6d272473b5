using System;
using System.Buffers.Binary;
using System.Text;
using NbdSharp.Protocol;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>The pure checks the reader and the handshake apply to what a server sends, tested on values and bytes.</summary>
[Trait("Tier", "Unit")]
public class ProtocolChecksTests
{
    [Theory]
    [InlineData(1000UL, 100UL, 1000UL, 100UL, true)] // the whole request
    [InlineData(1000UL, 100UL, 1099UL, 1UL, true)] // its last byte
    [InlineData(1000UL, 100UL, 1050UL, 0UL, true)] // an empty range inside (an error offset)
    [InlineData(1000UL, 100UL, 1099UL, 2UL, false)] // one byte past the end
    [InlineData(1000UL, 100UL, 1100UL, 0UL, false)] // starts at the end
    [InlineData(1000UL, 100UL, 999UL, 1UL, false)] // starts before
    [InlineData(1000UL, 100UL, 1001UL, ulong.MaxValue, false)] // offset + length wraps around
    [InlineData(ulong.MaxValue - 10, 10UL, ulong.MaxValue - 5, 6UL, false)] // the 2019 wrap-around near 2^64
    [InlineData(ulong.MaxValue - 10, 10UL, ulong.MaxValue - 5, 5UL, true)]
    public void ContentChunk_MustLieInsideItsRequest(ulong requestOffset, ulong requestCount, ulong offset, ulong length, bool inside) =>
        Assert.Equal(inside, ContentChunkBounds.IsInsideRequest(requestOffset, requestCount, offset, length));

    [Fact]
    public void ReplyFraming_SizesHeadersByMagic_AndChecksThemAgainstTheNegotiation()
    {
        Assert.Equal(SimpleReplyHeader.Size, ReplyFraming.HeaderSize(NbdMagic.SimpleReply));
        Assert.Equal(StructuredReplyHeader.Size, ReplyFraming.HeaderSize(NbdMagic.StructuredReply));
        Assert.Equal(ExtendedReplyHeader.Size, ReplyFraming.HeaderSize(NbdMagic.ExtendedReply));
        Assert.Equal(4, ReplyFraming.HeaderSize(0x12345678));

        Assert.Null(ReplyFraming.CheckMagic(NbdMagic.SimpleReply, structured: false, extended: false));
        Assert.Null(ReplyFraming.CheckMagic(NbdMagic.SimpleReply, structured: true, extended: false));
        Assert.Null(ReplyFraming.CheckMagic(NbdMagic.StructuredReply, structured: true, extended: false));
        Assert.Null(ReplyFraming.CheckMagic(NbdMagic.ExtendedReply, structured: true, extended: true));
        Assert.Equal("server sent a structured reply, which was not negotiated",
            ReplyFraming.CheckMagic(NbdMagic.StructuredReply, structured: false, extended: false));
        Assert.NotNull(ReplyFraming.CheckMagic(NbdMagic.SimpleReply, structured: true, extended: true));
        Assert.NotNull(ReplyFraming.CheckMagic(NbdMagic.StructuredReply, structured: true, extended: true));
        Assert.NotNull(ReplyFraming.CheckMagic(NbdMagic.ExtendedReply, structured: true, extended: false));
        Assert.Equal("invalid or unexpected reply magic 0x12345678", ReplyFraming.CheckMagic(0x12345678, true, false));
    }

    private static byte[] Descriptors(bool wide, params ulong[] lengths)
    {
        int size = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        byte[] bytes = new byte[lengths.Length * size];
        for (int i = 0; i < lengths.Length; i++)
        {
            if (wide)
                BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(i * size), lengths[i]);
            else
                BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(i * size), (uint)lengths[i]);
        }
        return bytes;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Extents_MustBeNonEmpty_AndStayInsideTheExport(bool wide)
    {
        Assert.Equal(ExtentProblem.None, ExtentChecks.Check(Descriptors(wide, 4096, 4096), 2, wide, 8192, out int index));
        Assert.Equal(-1, index);
        // Fewer bytes than the request asked about is fine: the server may stop early.
        Assert.Equal(ExtentProblem.None, ExtentChecks.Check(Descriptors(wide, 512), 1, wide, 8192, out _));
        Assert.Equal(ExtentProblem.ZeroLength, ExtentChecks.Check(Descriptors(wide, 4096, 0, 4096), 3, wide, 1 << 20, out index));
        Assert.Equal(1, index);
        Assert.Equal(ExtentProblem.PastEnd, ExtentChecks.Check(Descriptors(wide, 4096, 4097), 2, wide, 8192, out index));
        Assert.Equal(1, index);
        Assert.Equal(ExtentProblem.PastEnd, ExtentChecks.Check(Descriptors(wide, 1), 1, wide, 0, out index));
        Assert.Equal(0, index);
    }

    [Fact]
    public void WideExtents_NearTwoToThe64_DoNotWrapTheTotal()
    {
        byte[] descriptors = Descriptors(true, ulong.MaxValue - 10, 20);
        Assert.Equal(ExtentProblem.PastEnd, ExtentChecks.Check(descriptors, 2, true, ulong.MaxValue, out int index));
        Assert.Equal(1, index);
    }

    [Fact]
    public void ServerText_IsQuoted_ByteByByte()
    {
        Assert.Equal("plain text: 1 + 1 = 2", ServerText.Quote(Encoding.ASCII.GetBytes("plain text: 1 + 1 = 2")));
        Assert.Equal("\\x1b[31mred\\x1b[0m", ServerText.Quote(Encoding.ASCII.GetBytes("\u001b[31mred\u001b[0m")));
        Assert.Equal("line\\x0aline\\x00", ServerText.Quote(Encoding.ASCII.GetBytes("line\nline\0")));
        Assert.Equal("caf\\xc3\\xa9 \\x7f", ServerText.Quote(Encoding.UTF8.GetBytes("café \u007f")));
        Assert.Equal("", ServerText.Quote([]));
    }

    private static byte[] ServerPayload(uint claimedNameLength, string name, string description)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name), descriptionBytes = Encoding.UTF8.GetBytes(description);
        byte[] payload = new byte[4 + nameBytes.Length + descriptionBytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, claimedNameLength);
        nameBytes.CopyTo(payload, 4);
        descriptionBytes.CopyTo(payload, 4 + nameBytes.Length);
        return payload;
    }

    [Fact]
    public void ServerReply_SplitsNameAndDescription_AndRefusesALengthThatDoesNotFit()
    {
        Assert.True(ServerReply.TryRead(ServerPayload(4, "disk", "a disk"), out string name, out string description));
        Assert.Equal(("disk", "a disk"), (name, description));
        Assert.True(ServerReply.TryRead(ServerPayload(0, "", "only a description"), out name, out description));
        Assert.Equal(("", "only a description"), (name, description));
        Assert.True(ServerReply.TryRead(ServerPayload(4, "disk", ""), out _, out description));
        Assert.Equal("", description);
        Assert.False(ServerReply.TryRead(ServerPayload(5, "disk", ""), out _, out _));
        Assert.False(ServerReply.TryRead(ServerPayload(uint.MaxValue, "disk", "x"), out _, out _));
        Assert.False(ServerReply.TryRead(ServerPayload(4097, new string('n', 4097), ""), out _, out _));
        Assert.False(ServerReply.TryRead([0, 0, 0], out _, out _));
    }

    [Fact]
    public void MetaContextReply_HoldsAnIdAndAName()
    {
        byte[] payload = new byte[4 + 15];
        BinaryPrimitives.WriteUInt32BigEndian(payload, 7);
        Encoding.ASCII.GetBytes("base:allocation").CopyTo(payload, 4);
        Assert.True(MetaContextReply.TryRead(payload, out uint id, out string name));
        Assert.Equal((7u, "base:allocation"), (id, name));
        Assert.False(MetaContextReply.TryRead(payload.AsSpan(0, 4), out _, out _));
        Assert.False(MetaContextReply.TryRead(new byte[4 + 4097], out _, out _));
    }

    [Fact]
    public void InfoReply_ReadsTheTypeAndText()
    {
        byte[] payload = new byte[2 + 5];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)NbdInfoType.Description);
        Encoding.ASCII.GetBytes("hello").CopyTo(payload, 2);
        Assert.Equal(NbdInfoType.Description, InfoReply.ReadType(payload));
        Assert.True(InfoReply.TryReadText(payload, out string text));
        Assert.Equal("hello", text);
        Assert.True(InfoReply.TryReadText(payload.AsSpan(0, 2), out text));
        Assert.Equal("", text);
        Assert.False(InfoReply.TryReadText(new byte[2 + 4097], out _));
    }
}
