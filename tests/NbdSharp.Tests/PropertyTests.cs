using System;
using System.Collections.Generic;
using CsCheck;
using NbdSharp.Fuzzing;
using NbdSharp.Protocol;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// Properties checked on generated inputs (CsCheck, which shrinks a failure to a small counterexample): every
/// wire codec round-trips and refuses truncated or foreign bytes; the library's decoders agree with the
/// independent encoder of the fuzzing harness; structured read reassembly accepts exactly the chunk sequences
/// that tile the request once.
/// </summary>
[Trait("Tier", "Unit")]
public class PropertyTests
{
    private const long Iterations = 2000;

    private static readonly Gen<byte[]> Junk = Gen.Byte.Array[0, 40];

    [Fact]
    public void RequestHeaders_RoundTrip_CompactAndExtended() =>
        Gen.Select(Gen.UShort, Gen.UShort, Gen.ULong, Gen.ULong, Gen.ULong, Gen.Bool).Sample((flags, type, cookie, offset, length, extended) =>
        {
            if (!extended)
                length &= uint.MaxValue;
            var header = new RequestHeader(flags, (NbdCommand)type, cookie, offset, length);
            var bytes = new byte[RequestHeader.ExtendedSize];
            int size = header.Write(bytes, extended);
            Assert.Equal(extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize, size);
            Assert.True(RequestHeader.TryRead(bytes.AsSpan(0, size), out RequestHeader read, out int readSize));
            Assert.Equal((size, flags, type, cookie, offset, length), (readSize, read.Flags, (ushort)read.Type, read.Cookie, read.Offset, read.Length));
            for (int cut = 0; cut < size; cut++)
                Assert.False(RequestHeader.TryRead(bytes.AsSpan(0, cut), out _, out _));
        }, iter: Iterations);

    [Fact]
    public void CompactRequestHeader_RefusesA64BitLength() =>
        Gen.ULong[(ulong)uint.MaxValue + 1, ulong.MaxValue].Sample(length =>
            Assert.Throws<OverflowException>(() => new RequestHeader(0, NbdCommand.Read, 1, 0, length).Write(new byte[32], extended: false)),
            iter: Iterations);

    [Fact]
    public void SimpleReplyHeader_RoundTrips() =>
        Gen.Select(Gen.UInt, Gen.ULong).Sample((error, cookie) =>
        {
            var bytes = new byte[SimpleReplyHeader.Size];
            new SimpleReplyHeader(error, cookie).Write(bytes);
            Assert.True(SimpleReplyHeader.TryRead(bytes, out SimpleReplyHeader read));
            Assert.Equal((error, cookie), (read.Error, read.Cookie));
            Assert.False(SimpleReplyHeader.TryRead(bytes.AsSpan(0, SimpleReplyHeader.Size - 1), out _));
        }, iter: Iterations);

    [Fact]
    public void StructuredReplyHeader_RoundTrips_AndAgreesWithTheHarnessEncoder() =>
        Gen.Select(Gen.UShort, Gen.UShort, Gen.ULong, Gen.Byte.Array[0, 64]).Sample((flags, type, cookie, payload) =>
        {
            var bytes = new byte[StructuredReplyHeader.Size];
            new StructuredReplyHeader(flags, type, cookie, (uint)payload.Length).Write(bytes);
            byte[] independent = new ServerScript().Chunk(false, cookie, flags, type, 0, payload).ToArray();
            Assert.Equal(bytes, independent.AsSpan(0, StructuredReplyHeader.Size).ToArray());
            Assert.True(StructuredReplyHeader.TryRead(independent, out StructuredReplyHeader read));
            Assert.Equal((flags, type, cookie, (uint)payload.Length), (read.Flags, read.Type, read.Cookie, read.Length));
        }, iter: Iterations);

    [Fact]
    public void ExtendedReplyHeader_RoundTrips_AndAgreesWithTheHarnessEncoder() =>
        Gen.Select(Gen.UShort, Gen.UShort, Gen.ULong, Gen.ULong, Gen.Byte.Array[0, 64]).Sample((flags, type, cookie, offset, payload) =>
        {
            var bytes = new byte[ExtendedReplyHeader.Size];
            new ExtendedReplyHeader(flags, type, cookie, offset, (ulong)payload.Length).Write(bytes);
            byte[] independent = new ServerScript().Chunk(true, cookie, flags, type, offset, payload).ToArray();
            Assert.Equal(bytes, independent.AsSpan(0, ExtendedReplyHeader.Size).ToArray());
            Assert.True(ExtendedReplyHeader.TryRead(independent, out ExtendedReplyHeader read));
            Assert.Equal((flags, type, cookie, offset, (ulong)payload.Length), (read.Flags, read.Type, read.Cookie, read.Offset, read.Length));
        }, iter: Iterations);

    [Fact]
    public void ReplyHeaders_RefuseEachOthersMagic() =>
        Junk.Sample(junk =>
        {
            var bytes = new byte[ExtendedReplyHeader.Size + junk.Length];
            junk.CopyTo(bytes, ExtendedReplyHeader.Size);
            new SimpleReplyHeader(1, 2).Write(bytes);
            Assert.False(StructuredReplyHeader.TryRead(bytes, out _));
            Assert.False(ExtendedReplyHeader.TryRead(bytes, out _));
            new StructuredReplyHeader(1, 2, 3, 4).Write(bytes);
            Assert.False(SimpleReplyHeader.TryRead(bytes, out _));
            Assert.False(ExtendedReplyHeader.TryRead(bytes, out _));
            new ExtendedReplyHeader(1, 2, 3, 4, 5).Write(bytes);
            Assert.False(SimpleReplyHeader.TryRead(bytes, out _));
            Assert.False(StructuredReplyHeader.TryRead(bytes, out _));
        }, iter: 200);

    [Fact]
    public void OptionHeaders_RoundTrip_AndAgreeWithTheHarnessEncoder() =>
        Gen.Select(Gen.UInt, Gen.UInt, Gen.Byte.Array[0, 64]).Sample((option, type, payload) =>
        {
            var request = new byte[OptionRequestHeader.Size];
            new OptionRequestHeader((NbdOption)option, (uint)payload.Length).Write(request);
            Assert.True(OptionRequestHeader.TryRead(request, out OptionRequestHeader readRequest));
            Assert.Equal((option, (uint)payload.Length), ((uint)readRequest.Option, readRequest.Length));
            Assert.False(OptionReplyHeader.TryRead(request, out _));

            byte[] reply = new ServerScript().OptionReply(option, type, payload).ToArray();
            var written = new byte[OptionReplyHeader.Size];
            new OptionReplyHeader((NbdOption)option, (OptionReplyType)type, (uint)payload.Length).Write(written);
            Assert.Equal(written, reply.AsSpan(0, OptionReplyHeader.Size).ToArray());
            Assert.True(OptionReplyHeader.TryRead(reply, out OptionReplyHeader read));
            Assert.Equal((option, type, (uint)payload.Length), ((uint)read.Option, (uint)read.Type, read.Length));
            Assert.False(OptionReplyHeader.TryRead(reply.AsSpan(0, OptionReplyHeader.Size - 1), out _));
        }, iter: Iterations);

    [Fact]
    public void HandshakeMessages_RoundTrip() =>
        Gen.Select(Gen.ULong, Gen.UShort, Gen.UShort, Gen.UInt, Gen.UInt, Gen.UInt, Gen.Bool).Sample(
            (size, globalFlags, flags, minimum, preferred, maximum, noZeroes) =>
            {
                var buffer = new byte[256];
                new Greeting(size, ~size).Write(buffer);
                Greeting greeting = Greeting.Read(buffer);
                Assert.Equal((size, ~size), (greeting.Magic, greeting.Version));

                new OldstyleHandshake(size, globalFlags, flags).Write(buffer);
                OldstyleHandshake old = OldstyleHandshake.Read(buffer);
                Assert.Equal((size, globalFlags, flags), (old.ExportSize, old.GlobalFlags, old.TransmissionFlags));
                Assert.True(buffer.AsSpan(12, OldstyleHandshake.RemainderSize - 12).IndexOfAnyExcept((byte)0) < 0);

                buffer.AsSpan().Fill(0xEE);
                int written = new ExportNameReply(size, flags).Write(buffer, noZeroes);
                Assert.Equal(noZeroes ? 10 : 134, written);
                Assert.Equal((byte)0xEE, buffer[written]);
                ExportNameReply reply = ExportNameReply.Read(buffer);
                Assert.Equal((size, flags), (reply.ExportSize, reply.TransmissionFlags));

                new NbdInfoExport(size, flags).Write(buffer);
                byte[] independent = new ServerScript().InfoExport(1, size, flags).ToArray();
                Assert.Equal(buffer.AsSpan(0, NbdInfoExport.Size).ToArray(), independent.AsSpan(OptionReplyHeader.Size).ToArray());
                NbdInfoExport info = NbdInfoExport.Read(independent.AsSpan(OptionReplyHeader.Size));
                Assert.Equal((size, flags), (info.ExportSize, info.TransmissionFlags));

                new NbdInfoBlockSize(minimum, preferred, maximum).Write(buffer);
                NbdInfoBlockSize sizes = NbdInfoBlockSize.Read(buffer);
                Assert.Equal((minimum, preferred, maximum), (sizes.Minimum, sizes.Preferred, sizes.Maximum));
            }, iter: Iterations);

    [Fact]
    public void ChunkPayloads_RoundTrip() =>
        Gen.Select(Gen.ULong, Gen.UInt, Gen.UShort).Sample((offset, length, messageLength) =>
        {
            var buffer = new byte[16];
            new OffsetHoleChunk(offset, length).Write(buffer);
            OffsetHoleChunk hole = OffsetHoleChunk.Read(buffer);
            Assert.Equal((offset, length), (hole.Offset, hole.Length));

            OffsetDataChunk.WritePrefix(buffer, offset);
            Assert.Equal(offset, OffsetDataChunk.ReadOffset(buffer));

            new ErrorChunkPrefix(length, messageLength).Write(buffer);
            ErrorChunkPrefix error = ErrorChunkPrefix.Read(buffer);
            Assert.Equal((length, messageLength), (error.Error, error.MessageLength));
        }, iter: Iterations);

    [Fact]
    public void BlockStatusDescriptors_DecodeWhatTheHarnessEncodes() =>
        Gen.Select(Gen.UInt, Gen.Select(Gen.UInt, Gen.UInt).Array[1, 20], Gen.Bool).Sample((context, pairs, wide) =>
        {
            var extents = new List<(ulong Length, uint Flags)>();
            foreach ((uint length, uint flags) in pairs)
                extents.Add((length, flags));
            byte[] chunk = new ServerScript().BlockStatus(wide, 1, true, 0, context, extents).ToArray();
            int header = wide ? ExtendedReplyHeader.Size : StructuredReplyHeader.Size;
            ReadOnlySpan<byte> payload = chunk.AsSpan(header);
            Assert.Equal(extents.Count, BlockStatusLayout.DescriptorCount(wide, (ulong)payload.Length));
            Assert.Equal(context, BlockStatusChunk.ReadContextId(payload));
            int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
            int descriptor = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
            if (wide)
                Assert.Equal((uint)extents.Count, BlockStatusChunk.ReadDescriptorCount(payload));
            for (int i = 0; i < extents.Count; i++)
            {
                BlockStatusChunk.ReadDescriptor(payload[(prefix + (i * descriptor))..], wide, out ulong length, out ulong flags);
                Assert.Equal((extents[i].Length, (ulong)extents[i].Flags), (length, flags));
            }
        }, iter: Iterations);

    [Fact]
    public void BlockStatusLength_IsValidIffAPrefixAndAWholeNumberOfDescriptors() =>
        Gen.Select(Gen.ULong[0, 1000], Gen.Bool).Sample((length, wide) =>
        {
            ulong prefix = wide ? 8UL : 4UL, descriptor = wide ? 16UL : 8UL;
            int expected = length > prefix && (length - prefix) % descriptor == 0 ? (int)((length - prefix) / descriptor) : -1;
            Assert.Equal(expected, BlockStatusLayout.DescriptorCount(wide, length));
        }, iter: Iterations);

    /// <summary>
    /// Arbitrary chunk lists over a small request (so that exact tilings come up often), checked against an
    /// oracle that marks every byte: accepted with full coverage iff every byte is covered exactly once.
    /// </summary>
    [Fact]
    public void ChunkSequences_SucceedIffTheyTileTheRequestExactlyOnce() =>
        Gen.Int[1, 48].SelectMany(length => Gen.Select(Gen.Int[0, length + 2], Gen.Int[0, 12]).Array[1, 12]
            .Select(chunks => (length, chunks))).Sample(sample =>
        {
            (int length, (int Start, int Length)[] chunks) = sample;
            var marks = new int[length];
            bool inside = true;
            var coverage = new Coverage();
            bool accepted = true;
            foreach ((int start, int size) in chunks)
            {
                if (size == 0 || start + size > length)
                    inside = false;
                else
                {
                    for (int i = start; i < start + size; i++)
                        marks[i]++;
                }
                // The reader refuses empty and out-of-range chunks before they reach Coverage.
                if (size > 0 && start + size <= length)
                    accepted &= coverage.TryAdd((ulong)start, (ulong)size);
            }
            bool tiles = inside && Array.TrueForAll(marks, m => m == 1);
            Assert.Equal(tiles, inside && accepted && coverage.Covers((ulong)length));
        }, iter: 20000);

    /// <summary>Tilings themselves, shuffled, with an occasional duplicate or overlap: the positive side gets tested often.</summary>
    [Fact]
    public void ShuffledTilings_AreAccepted_AndAnyRepeatIsRefused() =>
        Gen.Int[1, 400].SelectMany(length => Gen.Int[1, 40].Array[1, 60].Select(sizes => (length, sizes)))
            .Select(Gen.Int[0, 2], Gen.Int, (sample, mutation, seed) => (sample.length, sample.sizes, mutation, seed)).Sample(sample =>
        {
            (int length, int[] sizes, int mutation, int seed) = sample;
            var chunks = new List<(ulong Start, ulong Length)>();
            int at = 0;
            for (int i = 0; at < length; i++)
            {
                int size = Math.Min(length - at, sizes[i % sizes.Length]);
                chunks.Add(((ulong)at, (ulong)size));
                at += size;
            }
            var random = new Random(seed);
            if (mutation == 1)
                chunks.Add(chunks[random.Next(chunks.Count)]);
            else if (mutation == 2 && chunks[0].Length > 1)
                chunks.Add((chunks[0].Start + 1, chunks[0].Length - 1));
            for (int i = chunks.Count - 1; i > 0; i--)
            {
                int j = random.Next(i + 1);
                (chunks[i], chunks[j]) = (chunks[j], chunks[i]);
            }
            var coverage = new Coverage();
            bool accepted = true;
            foreach ((ulong start, ulong size) in chunks)
                accepted &= coverage.TryAdd(start, size);
            bool repeated = mutation == 1 || (mutation == 2 && chunks.Count > 1 && length > 1 && HasOverlap(chunks));
            Assert.Equal(!repeated, accepted && coverage.Covers((ulong)length));
        }, iter: 5000);

    private static bool HasOverlap(List<(ulong Start, ulong Length)> chunks)
    {
        for (int i = 0; i < chunks.Count; i++)
        {
            for (int j = i + 1; j < chunks.Count; j++)
            {
                if (chunks[i].Start < chunks[j].Start + chunks[j].Length && chunks[j].Start < chunks[i].Start + chunks[i].Length)
                    return true;
            }
        }
        return false;
    }
}
