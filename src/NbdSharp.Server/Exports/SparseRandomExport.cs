using System;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// A disk shaped like nbdkit's sparse-random plugin: runs of data between longer runs of empty space, like a virtual
/// machine's disk, for benchmarking and testing copies. The layout and the data are its own (not nbdkit's bytes), the
/// same for the same seed in every run and process.
/// </summary>
/// <remarks>
/// <para>
/// The disk is made of 4 KiB blocks. About <c>percent</c> of them hold data, in runs whose average length is
/// <c>runLength</c> bytes; the runs of empty space between them are as long on average as makes the percentage (run
/// lengths are geometric, so the layout is a two-state Markov chain over blocks). Empty blocks read as zeroes and are
/// reported as holes. Each data block normally repeats one random non-zero byte; with <c>randomContent</c> every byte
/// is random.
/// </para>
/// <para>
/// As in nbdkit, writes succeed only when they write what is already there (else EIO), and trim and write-zeroes only
/// over empty space (else EIO), so a copy from one of these disks into another with the same parameters checks
/// itself. The layout is kept as a list of runs, or as a bitmap of one bit per block when the runs are so short that
/// a bitmap is smaller.
/// </para>
/// </remarks>
public sealed class SparseRandomExport : NbdExport
{
    /// <summary>The unit of allocation in bytes: runs start and end on these boundaries.</summary>
    public const int BlockSize4K = 4096;

    private const int BlockShift = 12;
    private const int WordsPerBlock = BlockSize4K / 8;
    private const ulong Gamma = 0x9e3779b97f4a7c15;

    private readonly long _size;
    private readonly long _blocks;
    private readonly ulong _contentKey;
    private readonly bool _randomContent;
    private readonly long _dataBytes;
    private readonly long _runs;

    // One of the two layouts: the block numbers where data runs start and end (even index: start, odd: end), or a
    // bitmap with a bit set per data block.
    private readonly long[]? _boundaries;
    private readonly int _boundaryCount;
    private readonly ulong[]? _bitmap;

    /// <summary>Makes the disk.</summary>
    /// <param name="size">The size in bytes.</param>
    /// <param name="seed">The seed of the layout and the data: the same seed and parameters make the same disk.</param>
    /// <param name="percent">How much of the disk holds data, from 0 (all empty) to 100 (all data); nbdkit's default is 10.</param>
    /// <param name="runLength">The average length in bytes of a run of data; nbdkit's default is 16 MiB.</param>
    /// <param name="randomContent">Whether every byte of a data block is random, rather than one random non-zero byte repeated.</param>
    /// <exception cref="ArgumentOutOfRangeException">A parameter is out of range.</exception>
    /// <exception cref="ArgumentException">The layout would need more memory than an array can hold (make the runs longer).</exception>
    public SparseRandomExport(long size, ulong seed, double percent = 10, long runLength = 16 * 1024 * 1024, bool randomContent = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (!(percent >= 0 && percent <= 100))
            throw new ArgumentOutOfRangeException(nameof(percent), percent, "sparse-random: percent must be between 0 and 100");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(runLength);
        _size = size;
        _blocks = (long)(((ulong)size + BlockSize4K - 1) >> BlockShift);
        _randomContent = randomContent;
        _contentKey = Mix(seed ^ 0x5851f42d4c957f2d);

        double p = percent / 100;
        double dataMean = Math.Max(1, (double)runLength / BlockSize4K);
        double holeMean = p is > 0 and < 1 ? dataMean * (1 - p) / p : 1;
        if (holeMean < 1)
        {
            // Runs are at least a block long: with short runs and a high percentage, lengthen the holes to one block.
            holeMean = 1;
            dataMean = p / (1 - p);
        }

        // Pick the smaller layout, from the expected number of runs.
        double expectedRuns = p is > 0 and < 1 ? _blocks / (dataMean + holeMean) + 1 : 1;
        long[]? boundaries = null;
        ulong[]? bitmap = null;
        if (expectedRuns * 16 <= _blocks / 8.0 || p is 0 or 1)
        {
            if (expectedRuns * 2 > Array.MaxLength / 2)
                throw new ArgumentException("sparse-random: too many runs for this size; make runLength larger", nameof(runLength));
            boundaries = new long[(int)Math.Max(4, expectedRuns * 2 * 1.1 + 16)];
        }
        else
        {
            long words = (_blocks + 63) >> 6;
            if (words > Array.MaxLength)
                throw new ArgumentException("sparse-random: the disk is too large for runs this short; make runLength larger", nameof(runLength));
            bitmap = new ulong[words];
        }

        // The layout: alternate runs of data and of empty space with geometric lengths, starting in the state a block
        // is in with the long-run probability (so the chain is stationary from block 0).
        int count = 0;
        long dataBlocks = 0;
        if (p == 1 && _blocks > 0)
        {
            AddRun(ref boundaries, ref count, bitmap, 0, _blocks);
            dataBlocks = _blocks;
            _runs = 1;
        }
        else if (p > 0)
        {
            ulong state = Mix(seed ^ 0x2545f4914f6cdd1d);
            double lnData = Ln(1 - 1 / dataMean);
            double lnHole = Ln(1 - 1 / holeMean);
            bool data = Uniform(ref state) < p;
            long at = 0;
            while (at < _blocks)
            {
                long length = Geometric(ref state, data ? dataMean : holeMean, data ? lnData : lnHole);
                long end = length >= _blocks - at ? _blocks : at + length;
                if (data)
                {
                    AddRun(ref boundaries, ref count, bitmap, at, end);
                    dataBlocks += end - at;
                    _runs++;
                }
                at = end;
                data = !data;
            }
        }
        _boundaries = boundaries;
        _boundaryCount = count;
        _bitmap = bitmap;
        _dataBytes = dataBlocks * BlockSize4K;
        if (dataBlocks > 0 && IsData(_blocks - 1))
            _dataBytes -= (_blocks << BlockShift) - _size;
    }

    /// <inheritdoc/>
    public override long Size => _size;

    /// <summary>How many bytes hold data (the rest reads as zeroes).</summary>
    public long DataBytes => _dataBytes;

    /// <summary>How many runs of data the disk has.</summary>
    public long Runs => _runs;

    /// <inheritdoc/>
    public override bool CanFlush => true;

    /// <inheritdoc/>
    public override bool CanFua => true;

    /// <inheritdoc/>
    public override bool CanTrim => true;

    /// <inheritdoc/>
    public override bool CanZero => true;

    /// <inheritdoc/>
    public override bool CanCache => true;

    /// <inheritdoc/>
    public override bool CanMultiConn => true;

    /// <inheritdoc/>
    public override bool CanExtents => true;

    /// <inheritdoc/>
    public override bool CanSparseRead => true;

    /// <inheritdoc/>
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Read(offset, buffer.Span);
        return ValueTask.CompletedTask;
    }

    /// <summary>Reads <paramref name="destination"/>'s length of bytes at <paramref name="offset"/> (what <see cref="ReadAsync"/> does).</summary>
    /// <param name="offset">Where to read, in bytes from the start of the disk.</param>
    /// <param name="destination">Where the bytes go; its length is how many to read.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the disk.</exception>
    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        Span<long> words = _randomContent ? stackalloc long[WordsPerBlock] : default;
        while (!destination.IsEmpty)
        {
            long block = offset >> BlockShift;
            long runEnd = RunEnd(block, out bool data);
            int n = (int)Math.Min(destination.Length, (runEnd << BlockShift) - offset);
            Span<byte> piece = destination[..n];
            if (data)
                FillData(offset, piece, words);
            else
                piece.Clear();
            destination = destination[n..];
            offset += n;
        }
    }

    /// <inheritdoc/>
    /// <remarks>Succeeds only when <paramref name="data"/> is what the disk already holds; else fails with EIO.</remarks>
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        ReadOnlySpan<byte> source = data.Span;
        Span<byte> expected = stackalloc byte[BlockSize4K];
        Span<long> words = _randomContent ? stackalloc long[WordsPerBlock] : default;
        while (!source.IsEmpty)
        {
            long block = offset >> BlockShift;
            long runEnd = RunEnd(block, out bool isData);
            int n = (int)Math.Min(source.Length, (runEnd << BlockShift) - offset);
            ReadOnlySpan<byte> piece = source[..n];
            bool same;
            if (!isData)
            {
                same = !piece.ContainsAnyExcept((byte)0);
            }
            else if (!_randomContent)
            {
                same = true;
                for (long at = offset, end = offset + n; same && at < end;)
                {
                    int take = (int)Math.Min(end - at, BlockSize4K - (at & (BlockSize4K - 1)));
                    same = !piece.Slice((int)(at - offset), take).ContainsAnyExcept(BlockByte(at >> BlockShift));
                    at += take;
                }
            }
            else
            {
                same = true;
                for (long at = offset, end = offset + n; same && at < end;)
                {
                    int take = (int)Math.Min(end - at, BlockSize4K - (at & (BlockSize4K - 1)));
                    FillData(at, expected[..take], words);
                    same = piece.Slice((int)(at - offset), take).SequenceEqual(expected[..take]);
                    at += take;
                }
            }
            if (!same)
                throw new NbdException(Errno.EIO, "sparse-random: the data written differs from what the disk holds");
            source = source[n..];
            offset += n;
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Succeeds only over empty space; else fails with EIO.</remarks>
    public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        CheckEmpty(offset, length);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Succeeds only over empty space; else fails with EIO.</remarks>
    public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
    {
        CheckEmpty(offset, length);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extents);
        CheckRange(offset, length);
        long end = offset + length;
        while (offset < end)
        {
            long runEnd = RunEnd(offset >> BlockShift, out bool data);
            long stop = Math.Min(end, runEnd << BlockShift);
            if (!extents.Add(stop - offset, data ? ExtentFlags.None : ExtentFlags.Hole | ExtentFlags.Zero))
                break;
            offset = stop;
        }
        return ValueTask.CompletedTask;
    }

    private void CheckEmpty(long offset, long length)
    {
        CheckRange(offset, length);
        if (length == 0)
            return;
        long block = offset >> BlockShift;
        long last = (offset + length - 1) >> BlockShift;
        while (block <= last)
        {
            long runEnd = RunEnd(block, out bool data);
            if (data)
                throw new NbdException(Errno.EIO, "sparse-random: trim or write-zeroes over data");
            block = runEnd;
        }
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > _size || length > _size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), "sparse-random: the range is outside the disk");
    }

    /// <summary>Writes a data run's bytes from <paramref name="offset"/> into <paramref name="destination"/>.</summary>
    private void FillData(long offset, Span<byte> destination, Span<long> words)
    {
        while (!destination.IsEmpty)
        {
            long block = offset >> BlockShift;
            int within = (int)(offset & (BlockSize4K - 1));
            int n = Math.Min(destination.Length, BlockSize4K - within);
            if (!_randomContent)
            {
                destination[..n].Fill(BlockByte(block));
            }
            else
            {
                // SplitMix64 in counter mode: word i of a block is a hash of the block's key and i.
                ulong key = Mix(_contentKey ^ ((ulong)block * 0xd1b54a32d192ed03));
                int first = within >> 3;
                int count = ((within + n + 7) >> 3) - first;
                for (int i = 0; i < count; i++)
                    words[i] = (long)Mix(key + (ulong)(first + i + 1) * Gamma);
                if (!BitConverter.IsLittleEndian)
                    BinaryPrimitives.ReverseEndianness(words[..count], words[..count]);
                MemoryMarshal.AsBytes(words[..count]).Slice(within & 7, n).CopyTo(destination);
            }
            destination = destination[n..];
            offset += n;
        }
    }

    /// <summary>The byte a data block repeats when the content is not fully random: never zero.</summary>
    private byte BlockByte(long block) => (byte)(1 + Mix(_contentKey + (ulong)block * Gamma) % 255);

    private static void AddRun(ref long[]? boundaries, ref int count, ulong[]? bitmap, long start, long end)
    {
        if (bitmap != null)
        {
            SetBits(bitmap, start, end);
            return;
        }
        // The constructor sized the array for the expected runs; grow it if chance made more.
        if (count + 2 > boundaries!.Length)
        {
            if (boundaries.Length >= Array.MaxLength - 2)
                throw new ArgumentException("sparse-random: too many runs for this size; make runLength larger");
            Array.Resize(ref boundaries, (int)Math.Min(Array.MaxLength, (long)boundaries.Length * 2));
        }
        boundaries[count] = start;
        boundaries[count + 1] = end;
        count += 2;
    }

    /// <summary>Whether <paramref name="block"/> holds data, and the block where its run (of data or empty space) ends.</summary>
    private long RunEnd(long block, out bool data)
    {
        if (_boundaries != null)
        {
            // How many boundaries are at or before the block: odd means inside a data run.
            int lo = 0, hi = _boundaryCount;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (_boundaries[mid] <= block)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            data = (lo & 1) == 1;
            return lo < _boundaryCount ? _boundaries[lo] : _blocks;
        }

        ulong[] bitmap = _bitmap!;
        int w = (int)(block >> 6);
        data = (bitmap[w] & (1UL << (int)(block & 63))) != 0;
        // The first bit from the block on that differs from the block's.
        ulong differs = (data ? ~bitmap[w] : bitmap[w]) & (ulong.MaxValue << (int)(block & 63));
        if (differs == 0)
        {
            int next = bitmap.AsSpan(w + 1).IndexOfAnyExcept(data ? ulong.MaxValue : 0UL);
            if (next < 0)
                return _blocks;
            w += 1 + next;
            differs = data ? ~bitmap[w] : bitmap[w];
        }
        return Math.Min(_blocks, ((long)w << 6) + BitOperations.TrailingZeroCount(differs));
    }

    private bool IsData(long block)
    {
        RunEnd(block, out bool data);
        return data;
    }

    private static void SetBits(ulong[] bitmap, long start, long end)
    {
        int first = (int)(start >> 6);
        int last = (int)((end - 1) >> 6);
        ulong head = ulong.MaxValue << (int)(start & 63);
        ulong tail = ulong.MaxValue >> (int)(63 - ((end - 1) & 63));
        if (first == last)
        {
            bitmap[first] |= head & tail;
            return;
        }
        bitmap[first] |= head;
        bitmap.AsSpan(first + 1, last - first - 1).Fill(ulong.MaxValue);
        bitmap[last] |= tail;
    }

    /// <summary>SplitMix64's finaliser: a fast, well-mixed hash of 64 bits; not for secrets.</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
    }

    /// <summary>The next SplitMix64 number.</summary>
    private static ulong Next(ref ulong state) => Mix(state += Gamma);

    /// <summary>A uniform number in [0, 1).</summary>
    private static double Uniform(ref ulong state) => (Next(ref state) >> 11) * (1.0 / (1UL << 53));

    /// <summary>A geometric number of blocks, at least 1, with the given mean; <paramref name="lnFail"/> is ln(1 - 1/mean).</summary>
    private static long Geometric(ref ulong state, double mean, double lnFail)
    {
        if (mean <= 1)
            return 1;
        // U in (0, 1]: the number of failures before a success with probability 1/mean is floor(ln U / ln(1 - 1/mean)).
        double u = ((Next(ref state) >> 11) + 1) * (1.0 / (1UL << 53));
        double failures = Math.Floor(Ln(u) / lnFail);
        return failures >= 1L << 60 ? 1L << 60 : 1 + (long)failures;
    }

    /// <summary>
    /// The natural logarithm of a positive normal number, from + - * / only, so the layout is the same on every machine
    /// (the platform's <see cref="Math.Log(double)"/> may differ in the last bit).
    /// </summary>
    private static double Ln(double x)
    {
        long bits = BitConverter.DoubleToInt64Bits(x);
        int exponent = (int)((bits >> 52) & 0x7FF) - 1023;
        double m = BitConverter.Int64BitsToDouble((bits & 0xFFFFFFFFFFFFFL) | 0x3FF0000000000000L);
        if (m > 1.4142135623730951)
        {
            m *= 0.5;
            exponent++;
        }
        // ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), with |s| < 0.172.
        double s = (m - 1) / (m + 1);
        double s2 = s * s;
        double sum = 1.0 / 19;
        for (int k = 17; k >= 1; k -= 2)
            sum = sum * s2 + 1.0 / k;
        return exponent * 0.6931471805599453 + 2 * s * sum;
    }
}
