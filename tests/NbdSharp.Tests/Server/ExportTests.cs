using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server;
using Xunit;

namespace NbdSharp.Tests.Server;

/// <summary>The built-in exports, called directly as the server calls them.</summary>
public class ExportTests
{
    private const ExtentFlags HoleZero = ExtentFlags.Hole | ExtentFlags.Zero;
    private static readonly CancellationToken None = CancellationToken.None;

    private static byte[] Random(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        // No zero bytes, so data never looks like a hole.
        for (int i = 0; i < bytes.Length; i++)
            bytes[i] |= 1;
        return bytes;
    }

    private static byte[] Read(NbdExport export, long offset, int length)
    {
        var buffer = new byte[length];
        Array.Fill(buffer, (byte)0xEE);
        ValueTask read = export.ReadAsync(offset, buffer, None);
        read.AsTask().GetAwaiter().GetResult();
        return buffer;
    }

    private static List<(long Length, ExtentFlags Flags)> Extents(NbdExport export, long offset, long length, int maxCount = 1 << 20)
    {
        var list = new ExtentList();
        list.Reset(length, maxCount);
        export.GetExtentsAsync(offset, length, list, None).AsTask().GetAwaiter().GetResult();
        var result = new List<(long, ExtentFlags)>();
        for (int i = 0; i < list.Count; i++)
            result.Add((list.LengthAt(i), (ExtentFlags)list.FlagsAt(i)));
        return result;
    }

    private static bool AllZero(byte[] bytes) => !bytes.AsSpan().ContainsAnyExcept((byte)0);

    // ---- memory ----

    [Fact]
    public async Task Memory_ReadsWhatWasWritten_AcrossPagesAndUnaligned()
    {
        const int size = 1 << 20;
        using var export = new MemoryExport(size);
        var shadow = new byte[size];
        byte[] data = Random(200_000, 1);
        long at = MemoryExport.PageSize - 1234;
        await export.WriteAsync(at, data, fua: false, None);
        data.CopyTo(shadow, at);
        byte[] small = Random(3, 2);
        await export.WriteAsync(3 * MemoryExport.PageSize - 1, small, fua: true, None);
        small.CopyTo(shadow, 3 * MemoryExport.PageSize - 1);

        Assert.Equal(shadow, Read(export, 0, size));
        Assert.Equal(shadow.AsSpan(12345, 100_001).ToArray(), Read(export, 12345, 100_001));
        Assert.Equal(5L * MemoryExport.PageSize, export.AllocatedBytes);
        Assert.True(export.CanFlush && export.CanFua && export.CanTrim && export.CanZero && export.CanFastZero && export.CanCache);
        Assert.True(export.CanMultiConn && export.CanExtents && export.CanSparseRead && !export.IsReadOnly);
    }

    [Fact]
    public async Task Memory_HugeDisk_IsInstantAndSparse()
    {
        long size = 1L << 62;
        using var export = new MemoryExport(size);
        Assert.Equal(size, export.Size);
        Assert.True(AllZero(Read(export, size - (1 << 20), 1 << 20)));
        Assert.True(AllZero(Read(export, size / 3, 100_000)));
        Assert.Equal(0, export.AllocatedBytes);

        byte[] data = Random(10, 3);
        await export.WriteAsync(size - 5, data.AsMemory(0, 5), fua: false, None);
        await export.WriteAsync(1L << 61, data, fua: false, None);
        Assert.Equal(2L * MemoryExport.PageSize, export.AllocatedBytes);
        Assert.Equal(data.AsSpan(0, 5).ToArray(), Read(export, size - 5, 5));
        Assert.Equal(data, Read(export, 1L << 61, 10));

        // Extents across the whole disk find the two pages without visiting the empty ones.
        Assert.Equal(
            [(1L << 61, HoleZero), (MemoryExport.PageSize, ExtentFlags.None), (size - (1L << 61) - 2L * MemoryExport.PageSize, HoleZero),
                (MemoryExport.PageSize, ExtentFlags.None)],
            Extents(export, 0, size));

        // Trimming everything frees both.
        await export.TrimAsync(0, size, fua: false, None);
        Assert.Equal(0, export.AllocatedBytes);
        Assert.Equal([(size, HoleZero)], Extents(export, 0, size));
    }

    [Fact]
    public async Task Memory_LargestSize_WritesTheLastByte()
    {
        using var export = new MemoryExport(long.MaxValue);
        await export.WriteAsync(long.MaxValue - 1, new byte[] { 7 }, fua: false, None);
        Assert.Equal(new byte[] { 0, 7 }, Read(export, long.MaxValue - 2, 2));
        Assert.Equal(
            [(MemoryExport.PageSize - 1L, ExtentFlags.None)],
            Extents(export, long.MaxValue - (MemoryExport.PageSize - 1), MemoryExport.PageSize - 1));
        // The last page is one byte short; zeroing to the end of the disk frees it, zeroing less does not.
        await export.ZeroAsync(long.MaxValue - 1, 1, mayTrim: true, fast: true, fua: false, None);
        Assert.Equal(MemoryExport.PageSize, export.AllocatedBytes);
        await export.ZeroAsync(long.MaxValue - (MemoryExport.PageSize - 1), MemoryExport.PageSize - 1, mayTrim: true, fast: true, fua: false, None);
        Assert.Equal(0, export.AllocatedBytes);
    }

    [Fact]
    public async Task Memory_TrimAndZero_FreeWholePagesAndClearPartialOnes()
    {
        const int page = MemoryExport.PageSize;
        using var export = new MemoryExport(8 * page);
        byte[] data = Random(4 * page, 4);
        await export.WriteAsync(0, data, fua: false, None);
        Assert.Equal(4L * page, export.AllocatedBytes);

        // Write-zeroes with NO_HOLE still frees the whole pages it covers (they read back as zeroes).
        await export.ZeroAsync(1000, 2 * page + 500, mayTrim: false, fast: false, fua: false, None);
        Assert.Equal(3L * page, export.AllocatedBytes);
        byte[] expected = (byte[])data.Clone();
        Array.Clear(expected, 1000, 2 * page + 500);
        Assert.Equal(expected, Read(export, 0, 4 * page));

        await export.TrimAsync(page, 3 * page, fua: false, None);
        Assert.Equal(1L * page, export.AllocatedBytes);
        Array.Clear(expected, page, 3 * page);
        Assert.Equal(expected, Read(export, 0, 4 * page));

        // A range inside one page clears bytes but keeps the page.
        await export.ZeroAsync(10, 20, mayTrim: true, fast: true, fua: true, None);
        Array.Clear(expected, 10, 20);
        Assert.Equal(expected, Read(export, 0, 4 * page));
        Assert.Equal(1L * page, export.AllocatedBytes);
    }

    [Fact]
    public async Task Memory_ZeroToTheEnd_FreesAPartialLastPage()
    {
        const int page = MemoryExport.PageSize;
        using var export = new MemoryExport(2 * page + 100);
        await export.WriteAsync(2 * page + 50, Random(50, 5), fua: false, None);
        await export.WriteAsync(0, Random(10, 6), fua: false, None);
        Assert.Equal(2L * page, export.AllocatedBytes);
        await export.ZeroAsync(2 * page + 10, 90, mayTrim: true, fast: false, fua: false, None);
        Assert.Equal(2L * page, export.AllocatedBytes);
        await export.ZeroAsync(2 * page, 100, mayTrim: true, fast: false, fua: false, None);
        Assert.Equal(1L * page, export.AllocatedBytes);
        Assert.True(AllZero(Read(export, page, page + 100)));
    }

    [Fact]
    public async Task Memory_WritingZeroes_AllocatesNothing()
    {
        using var export = new MemoryExport(1 << 20);
        await export.WriteAsync(12345, new byte[300_000], fua: false, None);
        Assert.Equal(0, export.AllocatedBytes);
        Assert.True(AllZero(Read(export, 0, 1 << 20)));
    }

    [Fact]
    public async Task Memory_Extents_FollowThePages()
    {
        const int page = MemoryExport.PageSize;
        using var export = new MemoryExport(16 * page + 1000);
        await export.WriteAsync(2 * page + 5, Random(page, 7), fua: false, None);
        await export.WriteAsync(7 * page, Random(1, 8), fua: false, None);
        Assert.Equal(
            [(2L * page, HoleZero), (2L * page, ExtentFlags.None), (3L * page, HoleZero), (1L * page, ExtentFlags.None),
                (8L * page + 1000, HoleZero)],
            Extents(export, 0, 16 * page + 1000));
        Assert.Equal([(2L * page - 100, HoleZero), (100L, ExtentFlags.None)], Extents(export, 100, 2 * page));
        Assert.Equal([(50L, ExtentFlags.None)], Extents(export, 3 * page + 10, 50));
        // A capped list stops early.
        Assert.Equal([(2L * page, HoleZero)], Extents(export, 0, 16 * page, maxCount: 1));
    }

    [Fact]
    public void Memory_ConcurrentWritersToDisjointRanges_AllLand()
    {
        const int threads = 16;
        const int piece = 3001; // odd lengths, so neighbours share pages and race to allocate them
        const int pieces = 64;
        using var export = new MemoryExport((long)threads * piece * pieces + 1);
        using var start = new Barrier(threads);
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < pieces; i++)
                {
                    long index = (long)i * threads + id;
                    export.Write(index * piece, Piece(index));
                }
            });
            workers[t].Start();
        }
        foreach (Thread worker in workers)
            worker.Join();

        var buffer = new byte[piece];
        for (long index = 0; index < threads * pieces; index++)
        {
            export.Read(index * piece, buffer);
            Assert.Equal(Piece(index), buffer);
        }

        static byte[] Piece(long index)
        {
            var bytes = new byte[piece];
            for (int i = 0; i < piece; i++)
                bytes[i] = (byte)(index * 31 + i * 7 + 1 | 1);
            return bytes;
        }
    }

    // ---- null ----

    [Fact]
    public async Task Null_ReadsZeroes_DiscardsWrites_IsOneHole()
    {
        using var export = new NullExport(1L << 40);
        await export.WriteAsync(100, Random(1000, 9), fua: true, None);
        await export.ZeroAsync(0, 1L << 40, mayTrim: false, fast: true, fua: false, None);
        await export.TrimAsync(0, 4096, fua: false, None);
        await export.FlushAsync(None);
        Assert.True(AllZero(Read(export, 50, 2000)));
        Assert.Equal([((1L << 40) - 7, HoleZero)], Extents(export, 7, (1L << 40) - 7));
        Assert.False(export.IsReadOnly);
        Assert.True(export.CanFlush && export.CanFua && export.CanTrim && export.CanZero && export.CanFastZero && export.CanCache);
        Assert.True(export.CanMultiConn && export.CanExtents && export.CanSparseRead);
    }

    // ---- pattern ----

    [Fact]
    public void Pattern_MatchesNbdkitsBytes()
    {
        using var export = new PatternExport(1L << 40);
        Assert.True(export.IsReadOnly && export.CanCache && export.CanMultiConn);
        // The words at 0x1234560, 0x1234568 and 0x1234570, read from the last byte of the first.
        Assert.Equal(
            new byte[] { 0x60, 0, 0, 0, 0, 0x01, 0x23, 0x45, 0x68, 0, 0, 0, 0, 0x01, 0x23, 0x45 },
            Read(export, 0x1234567, 16));
        Assert.Equal(
            new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x10 },
            Read(export, 0, 24));
        Assert.Equal(new byte[] { 0x08 }, Read(export, 15, 1));
        Assert.Equal(new byte[] { 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xf8 }, Read(export, (1L << 40) - 8, 8));

        var high = new byte[8];
        PatternExport.Fill(0x0102030405060708 + 3, high);
        Assert.Equal(new byte[] { 0x04, 0x05, 0x06, 0x07, 0x08, 0x01, 0x02, 0x03 }, high);
    }

    [Fact]
    public void Pattern_AnyOffsetAndLength_MatchesWordByWord()
    {
        var random = new Random(10);
        for (int round = 0; round < 200; round++)
        {
            long offset = random.NextInt64(0, 1L << 50);
            int length = random.Next(0, 20_000);
            var bytes = new byte[length];
            PatternExport.Fill(offset, bytes);
            var expected = new byte[length];
            for (int i = 0; i < length; i++)
            {
                long at = offset + i;
                long word = at & ~7L;
                expected[i] = (byte)(word >> (8 * (7 - (int)(at & 7))));
            }
            Assert.Equal(expected, bytes);
        }
    }

    // ---- sparse-random ----

    [Fact]
    public void SparseRandom_SameSeed_SameDisk_OtherSeed_OtherDisk()
    {
        const long size = 256L << 20;
        using var a = new SparseRandomExport(size, seed: 42, percent: 20, runLength: 256 * 1024);
        using var b = new SparseRandomExport(size, seed: 42, percent: 20, runLength: 256 * 1024);
        using var c = new SparseRandomExport(size, seed: 43, percent: 20, runLength: 256 * 1024);
        List<(long, ExtentFlags)> extents = Extents(a, 0, size);
        Assert.True(extents.Count > 10);
        Assert.Equal(extents, Extents(b, 0, size));
        Assert.NotEqual(extents, Extents(c, 0, size));
        Assert.Equal(a.DataBytes, b.DataBytes);
        Assert.Equal(a.Runs, b.Runs);

        long firstData = extents[0].Item2 == ExtentFlags.None ? 0 : extents[0].Item1;
        Assert.Equal(Read(a, firstData - 100, 100_000), Read(b, firstData - 100 < 0 ? 0 : firstData - 100, 100_000));
        for (long at = 0; at < size; at += 16L << 20)
            Assert.Equal(Read(a, at, 1 << 20), Read(b, at, 1 << 20));
    }

    [Fact]
    public void SparseRandom_Shape_FollowsPercentAndRunLength()
    {
        const long size = 1L << 30;
        const long runLength = 64 * 1024;
        using var export = new SparseRandomExport(size, seed: 7, percent: 10, runLength: runLength);
        double fraction = (double)export.DataBytes / size;
        Assert.InRange(fraction, 0.085, 0.115);
        double averageRun = (double)export.DataBytes / export.Runs;
        Assert.InRange(averageRun, runLength * 0.85, runLength * 1.15);

        // The extents agree with the counts: data extents are the runs, separated by holes.
        List<(long Length, ExtentFlags Flags)> extents = Extents(export, 0, size);
        long data = 0, runs = 0, covered = 0;
        foreach ((long length, ExtentFlags flags) in extents)
        {
            Assert.True(flags is ExtentFlags.None or HoleZero);
            if (flags == ExtentFlags.None)
            {
                data += length;
                runs++;
            }
            covered += length;
        }
        Assert.Equal(size, covered);
        Assert.Equal(export.DataBytes, data);
        Assert.Equal(export.Runs, runs);
    }

    [Fact]
    public void SparseRandom_ShortRuns_BytesAgreeWithExtents()
    {
        // Runs of two blocks on average: the layout is a bitmap. Each data block repeats one non-zero byte; holes are zeroes.
        const long size = (16L << 20) + 1000;
        using var export = new SparseRandomExport(size, seed: 1, percent: 30, runLength: 8192);
        Assert.InRange((double)export.DataBytes / size, 0.27, 0.33);
        Assert.InRange((double)export.DataBytes / export.Runs, 8192 * 0.9, 8192 * 1.1);
        byte[] all = Read(export, 0, (int)size);
        long at = 0, runs = 0;
        foreach ((long length, ExtentFlags flags) in Extents(export, 0, size))
        {
            if (flags == ExtentFlags.None)
                runs++;
            for (long block = at; block < at + length; block += SparseRandomExport.BlockSize4K)
            {
                int n = (int)Math.Min(SparseRandomExport.BlockSize4K, at + length - block);
                ReadOnlySpan<byte> bytes = all.AsSpan((int)block, n);
                if (flags == HoleZero)
                    Assert.False(bytes.ContainsAnyExcept((byte)0));
                else
                    Assert.True(bytes[0] != 0 && !bytes.ContainsAnyExcept(bytes[0]));
            }
            at += length;
        }
        Assert.Equal(size, at);
        Assert.Equal(export.Runs, runs);
        // Extents from an unaligned offset, and reads of pieces, agree with the whole.
        Assert.Equal(all.AsSpan(5000, 70_000).ToArray(), Read(export, 5000, 70_000));
        List<(long Length, ExtentFlags Flags)> tail = Extents(export, size - 900, 900);
        Assert.Equal(900, tail[0].Length);
    }

    [Fact]
    public async Task SparseRandom_Writes_MustMatch_AndZeroOnlyHoles()
    {
        const long size = 64L << 20;
        using var export = new SparseRandomExport(size, seed: 3, percent: 30, runLength: 1 << 20, randomContent: true);
        List<(long Length, ExtentFlags Flags)> extents = Extents(export, 0, size);
        long dataAt = 0, holeAt = -1;
        foreach ((long length, ExtentFlags flags) in extents)
        {
            if (flags == ExtentFlags.None)
                break;
            holeAt = dataAt;
            dataAt += length;
        }
        if (holeAt < 0)
            holeAt = dataAt + extents[0].Length;
        Assert.True(dataAt < size);

        byte[] data = Read(export, dataAt + 3, 10_000);
        Assert.False(AllZero(data));
        Assert.Equal(data.AsSpan(1000, 5000).ToArray(), Read(export, dataAt + 1003, 5000));
        await export.WriteAsync(dataAt + 3, data, fua: true, None);
        data[5000] ^= 1;
        NbdException wrong = await Assert.ThrowsAsync<NbdException>(() => export.WriteAsync(dataAt + 3, data, fua: false, None).AsTask());
        Assert.Equal(Errno.EIO, wrong.Errno);

        await export.WriteAsync(holeAt, new byte[100], fua: false, None);
        await Assert.ThrowsAsync<NbdException>(() => export.WriteAsync(holeAt, new byte[] { 1 }, fua: false, None).AsTask());
        await export.ZeroAsync(holeAt, 4096, mayTrim: true, fast: false, fua: false, None);
        await export.TrimAsync(holeAt, 4096, fua: false, None);
        NbdException zero = await Assert.ThrowsAsync<NbdException>(
            () => export.ZeroAsync(dataAt, 1, mayTrim: true, fast: false, fua: false, None).AsTask());
        Assert.Equal(Errno.EIO, zero.Errno);
        await Assert.ThrowsAsync<NbdException>(() => export.TrimAsync(0, size, fua: false, None).AsTask());
        await export.FlushAsync(None);
    }

    [Fact]
    public void SparseRandom_EmptyAndFull()
    {
        using var empty = new SparseRandomExport(10L << 30, seed: 1, percent: 0);
        Assert.Equal(0, empty.DataBytes);
        Assert.Equal([(10L << 30, HoleZero)], Extents(empty, 0, 10L << 30));
        Assert.True(AllZero(Read(empty, 12345, 100_000)));

        const long size = (1L << 20) + 10;
        using var full = new SparseRandomExport(size, seed: 1, percent: 100);
        Assert.Equal(size, full.DataBytes);
        Assert.Equal(1, full.Runs);
        Assert.Equal([(size, ExtentFlags.None)], Extents(full, 0, size));
        Assert.False(Read(full, 0, (int)size).AsSpan().Contains((byte)0));
        Assert.True(full.CanExtents && full.CanSparseRead && full.CanMultiConn && !full.IsReadOnly);
    }

    [Fact]
    public void SparseRandom_LargeDisk_DefaultRunsAreCheap()
    {
        // 64 TiB in runs of 16 MiB: some 400,000 runs, kept as a list rather than a 2 GiB bitmap.
        using var export = new SparseRandomExport(1L << 46, seed: 5);
        Assert.InRange((double)export.DataBytes / export.Size, 0.09, 0.11);
        Assert.InRange(export.Runs, 300_000, 500_000);
        Assert.True(Extents(export, 1L << 45, 1L << 40).Count > 0);
    }

    // ---- read-only wrapper ----

    [Fact]
    public async Task ReadOnly_WrapsAnExport()
    {
        var inner = new MemoryExport(1 << 20);
        await inner.WriteAsync(100, Random(1000, 16), fua: false, None);
        using (var export = new ReadOnlyExport(inner))
        {
            Assert.True(export.IsReadOnly);
            Assert.Equal(inner.Size, export.Size);
            Assert.Equal(inner.CanExtents, export.CanExtents);
            Assert.Equal(inner.CanSparseRead, export.CanSparseRead);
            Assert.Equal(inner.CanMultiConn, export.CanMultiConn);
            // nbdkit -r keeps flush: so does the wrapper.
            Assert.Equal(inner.CanFlush, export.CanFlush);
            Assert.Equal(Read(inner, 0, 4096), Read(export, 0, 4096));
            Assert.Equal(Extents(inner, 0, 1 << 20), Extents(export, 0, 1 << 20));
        }
        // Not owned: still usable.
        Assert.Equal(Random(1000, 16), Read(inner, 100, 1000));
        inner.Dispose();
    }

    [Fact]
    public async Task ReadOnly_RefusesChangesWithEperm()
    {
        using var export = new ReadOnlyExport(new MemoryExport(4096), ownsInner: true);
        NbdException e = await Assert.ThrowsAsync<NbdException>(() => export.WriteAsync(0, new byte[1], fua: false, None).AsTask());
        Assert.Equal(Errno.EPERM, e.Errno);
        Assert.False(export.CanTrim || export.CanZero || export.CanFua);
    }

    // ---- stream ----

    [Fact]
    public async Task Stream_ServesTheStreamReadOnly()
    {
        byte[] data = Random(100_000, 11);
        var stream = new MemoryStream(data, writable: false);
        using (var export = new StreamExport(stream, leaveOpen: true))
        {
            Assert.Equal(data.Length, export.Size);
            Assert.True(export.IsReadOnly);
            var tasks = new List<Task<(int, byte[])>>();
            for (int i = 0; i < 50; i++)
            {
                int offset = i * 1900;
                tasks.Add(Task.Run(async () =>
                {
                    var buffer = new byte[3000];
                    await export.ReadAsync(offset, buffer, None);
                    return (offset, buffer);
                }));
            }
            foreach ((int offset, byte[] buffer) in await Task.WhenAll(tasks))
                Assert.Equal(data.AsSpan(offset, 3000).ToArray(), buffer);
        }
        Assert.True(stream.CanRead);
        new StreamExport(stream).Dispose();
        Assert.False(stream.CanRead);
    }

    [Fact]
    public async Task Stream_ShorterThanItWas_IsEio_AndUnseekableIsRefused()
    {
        using var stream = new MemoryStream();
        stream.Write(Random(10_000, 12));
        using var export = new StreamExport(stream, leaveOpen: true);
        stream.SetLength(5000);
        NbdException e = await Assert.ThrowsAsync<NbdException>(() => export.ReadAsync(4000, new byte[2000], None).AsTask());
        Assert.Equal(Errno.EIO, e.Errno);
        Assert.Throws<ArgumentException>(() => new StreamExport(new UnseekableStream()));
    }

    private sealed class UnseekableStream : MemoryStream
    {
        public override bool CanSeek => false;
    }

    // ---- file ----

    private sealed class TempFile : IDisposable
    {
        private readonly string _directory = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "nbdsharp-exports-" + Guid.NewGuid().ToString("N"));

        public TempFile(long length)
        {
            Directory.CreateDirectory(_directory);
            FilePath = System.IO.Path.Combine(_directory, "disk.img");
            using FileStream file = File.Create(FilePath);
            file.SetLength(length);
        }

        public string FilePath { get; }

        public void Dispose() => Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task File_WritesReadsFlushes()
    {
        using var temp = new TempFile(8 << 20);
        using (var export = new FileExport(temp.FilePath))
        {
            Assert.Equal(8 << 20, export.Size);
            Assert.False(export.IsReadOnly);
            Assert.True(export.CanFlush && export.CanFua && export.CanTrim && export.CanZero && export.CanCache && export.CanMultiConn);
            Assert.False(export.CanSparseRead);
            Assert.Equal(OperatingSystem.IsLinux() && Environment.Is64BitProcess, export.CanExtents);
            Assert.Equal(ExportBlockSize.Default, export.BlockSize);
            Assert.True(export.BlockSize.IsValid);

            byte[] data = Random(300_001, 13);
            await export.WriteAsync(12345, data, fua: false, None);
            await export.WriteAsync(5 << 20, data.AsMemory(0, 4096), fua: true, None);
            await export.FlushAsync(None);
            await export.CacheAsync(0, 1 << 20, None);
            Assert.Equal(data, Read(export, 12345, data.Length));
            Assert.Equal(data.AsSpan(0, 4096).ToArray(), Read(export, 5 << 20, 4096));

            var writes = new List<Task>();
            for (int i = 0; i < 32; i++)
            {
                long offset = (6L << 20) + i * 10_000L;
                writes.Add(export.WriteAsync(offset, data.AsMemory(i, 10_000), fua: false, None).AsTask());
            }
            await Task.WhenAll(writes);
            for (int i = 0; i < 32; i++)
                Assert.Equal(data.AsSpan(i, 10_000).ToArray(), Read(export, (6L << 20) + i * 10_000L, 10_000));
        }
        byte[] onDisk = await File.ReadAllBytesAsync(temp.FilePath);
        Assert.Equal(Random(300_001, 13), onDisk.AsSpan(12345, 300_001).ToArray());

        using var readOnly = new FileExport(temp.FilePath, readOnly: true);
        Assert.True(readOnly.IsReadOnly);
        Assert.Equal(onDisk.AsSpan(0, 1 << 20).ToArray(), Read(readOnly, 0, 1 << 20));
        await readOnly.FlushAsync(None);
    }

    [Fact]
    public async Task File_TrimPunchesAHole_ThatExtentsReport()
    {
        using var temp = new TempFile(8 << 20);
        using var export = new FileExport(temp.FilePath);
        await export.WriteAsync(1 << 20, Random(2 << 20, 14), fua: true, None);
        Assert.False(AllZero(Read(export, 1 << 20, 4096)));
        if (!export.CanExtents)
            return;

        List<(long Length, ExtentFlags Flags)> before = Extents(export, 0, 8 << 20);
        Assert.Equal(HoleZero, before[0].Flags);
        Assert.Equal(1 << 20, before[0].Length);
        Assert.Equal(ExtentFlags.None, Extents(export, 1 << 20, 1 << 20)[0].Flags);

        await export.TrimAsync(1 << 20, 1 << 20, fua: false, None);
        Assert.True(AllZero(Read(export, 1 << 20, 1 << 20)));
        List<(long Length, ExtentFlags Flags)> after = Extents(export, 0, 8 << 20);
        Assert.Equal((2L << 20, HoleZero), after[0]);
        Assert.Equal(ExtentFlags.None, after[1].Flags);
        Assert.Equal([(1L << 20, HoleZero)], Extents(export, 1 << 20, 1 << 20));
        // Past the last data, SEEK_DATA finds nothing: a hole to the end.
        Assert.Equal([(3L << 20, HoleZero)], Extents(export, 5 << 20, 3 << 20));
    }

    [Fact]
    public async Task File_Zero_ReadsBackZeroes_WithAndWithoutHoles()
    {
        using var temp = new TempFile(4 << 20);
        using var export = new FileExport(temp.FilePath);
        byte[] data = Random(4 << 20, 15);
        await export.WriteAsync(0, data, fua: false, None);

        await export.ZeroAsync(1000, 300_000, mayTrim: false, fast: false, fua: true, None);
        await export.ZeroAsync(1 << 20, 1 << 20, mayTrim: true, fast: false, fua: false, None);
        Array.Clear(data, 1000, 300_000);
        Array.Clear(data, 1 << 20, 1 << 20);
        if (export.CanFastZero)
        {
            await export.ZeroAsync(3 << 20, 5000, mayTrim: false, fast: true, fua: false, None);
            Array.Clear(data, 3 << 20, 5000);
        }
        else
        {
            NbdException e = await Assert.ThrowsAsync<NbdException>(
                () => export.ZeroAsync(3 << 20, 5000, mayTrim: false, fast: true, fua: false, None).AsTask());
            Assert.Equal(Errno.ENOTSUP, e.Errno);
        }
        Assert.Equal(data, Read(export, 0, 4 << 20));
    }

    [Fact]
    public async Task File_TruncatedUnderneath_IsEio()
    {
        using var temp = new TempFile(1 << 20);
        using var export = new FileExport(temp.FilePath);
        using (FileStream file = File.Open(temp.FilePath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
            file.SetLength(512 * 1024);
        NbdException e = await Assert.ThrowsAsync<NbdException>(() => export.ReadAsync(768 * 1024, new byte[4096], None).AsTask());
        Assert.Equal(Errno.EIO, e.Errno);
    }

    [Fact]
    public void File_Missing_Throws()
    {
        Assert.Throws<FileNotFoundException>(() => new FileExport(Path.Combine(Path.GetTempPath(), "nbdsharp-no-such-" + Guid.NewGuid().ToString("N"))));
        Assert.Throws<ArgumentException>(() => new FileExport(""));
    }
}
