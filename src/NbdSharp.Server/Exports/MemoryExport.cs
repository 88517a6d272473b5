using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// A sparse disk in memory, like nbdkit's memory plugin: 64 KiB pages are allocated when first written and freed by
/// trim and write-zeroes, so memory follows the data written, not the size (any size up to 2^63-1 is created at once).
/// Unwritten pages read as zeroes and are reported as holes, so reads of them can go out as hole chunks.
/// </summary>
/// <remarks>
/// <para>
/// Pages hang off a two-level directory: chunks of 4096 page slots (256 MiB of disk, 32 KiB of slots) allocated on
/// first write, found through a flat array for disks up to 16 TiB or a dictionary of the chunks in use beyond. Pages
/// and chunks are published with <see cref="Interlocked.CompareExchange{T}(ref T, T, T)"/>, so reads and writes from
/// many connections run in parallel without a lock; requests racing on the same bytes may see each other's data in
/// part, as on a real disk.
/// </para>
/// <para>
/// Trim and write-zeroes free the whole pages in their range and clear the partial ones at its ends; write-zeroes
/// does so even with <c>NBD_CMD_FLAG_NO_HOLE</c> (as nbdkit's memory plugin does): a memory disk has no allocation to
/// preserve, and the range reads back as zeroes either way. A write of zeroes into an unallocated page allocates
/// nothing. Chunks of slots, once allocated, stay.
/// </para>
/// </remarks>
public sealed class MemoryExport : NbdExport
{
    /// <summary>The allocation unit in bytes.</summary>
    public const int PageSize = 1 << PageShift;

    private const int PageShift = 16;
    private const int ChunkShift = 12;
    private const int ChunkPages = 1 << ChunkShift;
    private const int ChunkMask = ChunkPages - 1;
    private const long FlatChunkLimit = 1 << 16;

    private readonly long _size;

    // One of the two top levels is in use: a flat array of chunks when the disk has at most FlatChunkLimit chunks,
    // else a dictionary holding only the chunks written to.
    private readonly byte[]?[]?[]? _flat;
    private readonly ConcurrentDictionary<long, byte[]?[]>? _map;
    private long _allocatedPages;

    /// <summary>A disk of <paramref name="size"/> bytes that reads as zeroes.</summary>
    /// <param name="size">The size in bytes, from 0 to <see cref="long.MaxValue"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    public MemoryExport(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        _size = size;
        long chunkCount = (PageCount + ChunkPages - 1) >> ChunkShift;
        if (chunkCount <= FlatChunkLimit)
            _flat = new byte[]?[]?[chunkCount];
        else
            _map = new ConcurrentDictionary<long, byte[]?[]>();
    }

    /// <inheritdoc/>
    public override long Size => _size;

    /// <summary>How many bytes of pages are allocated (a multiple of <see cref="PageSize"/>).</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocatedPages) * PageSize;

    /// <inheritdoc/>
    public override bool CanFlush => true;

    /// <inheritdoc/>
    public override bool CanFua => true;

    /// <inheritdoc/>
    public override bool CanTrim => true;

    /// <inheritdoc/>
    public override bool CanZero => true;

    /// <inheritdoc/>
    public override bool CanFastZero => true;

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
        while (!destination.IsEmpty)
        {
            long page = offset >> PageShift;
            int within = (int)(offset & (PageSize - 1));
            int n = Math.Min(destination.Length, PageSize - within);
            byte[]? data = PageAt(page);
            if (data != null)
                data.AsSpan(within, n).CopyTo(destination);
            else
                destination[..n].Clear();
            destination = destination[n..];
            offset += n;
        }
    }

    /// <inheritdoc/>
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Write(offset, data.Span);
        return ValueTask.CompletedTask;
    }

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/> (what <see cref="WriteAsync"/> does).</summary>
    /// <param name="offset">Where to write, in bytes from the start of the disk.</param>
    /// <param name="source">The bytes to write.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the disk.</exception>
    public void Write(long offset, ReadOnlySpan<byte> source)
    {
        CheckRange(offset, source.Length);
        while (!source.IsEmpty)
        {
            long page = offset >> PageShift;
            int within = (int)(offset & (PageSize - 1));
            int n = Math.Min(source.Length, PageSize - within);
            ReadOnlySpan<byte> piece = source[..n];
            byte[]?[] chunk = ChunkFor(page);
            ref byte[]? slot = ref chunk[(int)(page & ChunkMask)];
            byte[]? data = Volatile.Read(ref slot);
            if (data == null && piece.ContainsAnyExcept((byte)0))
                data = AllocatePage(ref slot);
            // A page still unallocated here was written with zeroes, which it already reads as.
            if (data != null)
                piece.CopyTo(data.AsSpan(within));
            source = source[n..];
            offset += n;
        }
    }

    /// <inheritdoc/>
    public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        Zero(offset, length);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Frees whole pages whatever <paramref name="mayTrim"/> says: they read back as zeroes.</remarks>
    public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
    {
        Zero(offset, length);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extents);
        CheckRange(offset, length);
        long end = offset + length;
        long endPage = ((end - 1) >> PageShift) + 1;
        while (offset < end)
        {
            long page = offset >> PageShift;
            bool allocated = PageAt(page) != null;
            long next = NextPage(page, !allocated, endPage);
            long stop = next >= endPage ? end : next << PageShift;
            if (!extents.Add(stop - offset, allocated ? ExtentFlags.None : ExtentFlags.Hole | ExtentFlags.Zero))
                break;
            offset = stop;
        }
        return ValueTask.CompletedTask;
    }

    private void Zero(long offset, long length)
    {
        CheckRange(offset, length);
        long end = offset + length;
        // The whole pages in the range; the disk's last page, when partial, counts as whole up to the disk's end.
        long firstWhole = (offset >> PageShift) + ((offset & (PageSize - 1)) != 0 ? 1 : 0);
        long endWhole = end == _size ? PageCount : end >> PageShift;
        if (firstWhole >= endWhole)
        {
            ClearPartial(offset, end);
            return;
        }
        if ((offset & (PageSize - 1)) != 0)
            ClearPartial(offset, (offset | (PageSize - 1)) + 1);
        if (end != _size && (end & (PageSize - 1)) != 0)
            ClearPartial(end & ~(long)(PageSize - 1), end);
        FreePages(firstWhole, endWhole);
    }

    /// <summary>Clears bytes inside allocated pages (partial pages are not freed: a racing write elsewhere in the page would be lost).</summary>
    private void ClearPartial(long start, long end)
    {
        while (start < end)
        {
            long page = start >> PageShift;
            int within = (int)(start & (PageSize - 1));
            int n = (int)Math.Min(end - start, PageSize - within);
            byte[]? data = PageAt(page);
            data?.AsSpan(within, n).Clear();
            start += n;
        }
    }

    /// <summary>Frees the pages from <paramref name="first"/> up to <paramref name="end"/>, visiting only chunks that exist.</summary>
    private void FreePages(long first, long end)
    {
        long firstChunk = first >> ChunkShift;
        long lastChunk = (end - 1) >> ChunkShift;
        if (_flat != null)
        {
            for (long c = firstChunk; c <= lastChunk; c++)
            {
                byte[]?[]? chunk = Volatile.Read(ref _flat[c]);
                if (chunk != null)
                    FreeInChunk(chunk, c, first, end);
            }
        }
        else if (lastChunk - firstChunk < _map!.Count)
        {
            for (long c = firstChunk; c <= lastChunk; c++)
            {
                if (_map.TryGetValue(c, out byte[]?[]? chunk))
                    FreeInChunk(chunk, c, first, end);
            }
        }
        else
        {
            foreach (KeyValuePair<long, byte[]?[]> pair in _map)
            {
                if (pair.Key >= firstChunk && pair.Key <= lastChunk)
                    FreeInChunk(pair.Value, pair.Key, first, end);
            }
        }
    }

    private void FreeInChunk(byte[]?[] chunk, long chunkIndex, long first, long end)
    {
        long basePage = chunkIndex << ChunkShift;
        int from = (int)Math.Max(0, first - basePage);
        int to = (int)Math.Min(ChunkPages, end - basePage);
        long freed = 0;
        for (int i = from; i < to; i++)
        {
            if (Volatile.Read(ref chunk[i]) != null && Interlocked.Exchange(ref chunk[i], null) != null)
                freed++;
        }
        if (freed != 0)
            Interlocked.Add(ref _allocatedPages, -freed);
    }

    /// <summary>The page's data, or null when it is not allocated.</summary>
    private byte[]? PageAt(long page)
    {
        long c = page >> ChunkShift;
        byte[]?[]? chunk;
        if (_flat != null)
            chunk = Volatile.Read(ref _flat[c]);
        else if (!_map!.TryGetValue(c, out chunk))
            return null;
        return chunk == null ? null : Volatile.Read(ref chunk[(int)(page & ChunkMask)]);
    }

    /// <summary>The chunk holding the page's slot, allocated if need be.</summary>
    private byte[]?[] ChunkFor(long page)
    {
        long c = page >> ChunkShift;
        if (_flat != null)
        {
            ref byte[]?[]? slot = ref _flat[c];
            byte[]?[]? chunk = Volatile.Read(ref slot);
            if (chunk != null)
                return chunk;
            byte[]?[] created = new byte[]?[ChunkPages];
            return Interlocked.CompareExchange(ref slot, created, null) ?? created;
        }
        if (_map!.TryGetValue(c, out byte[]?[]? found))
            return found;
        return _map.GetOrAdd(c, static _ => new byte[]?[ChunkPages]);
    }

    private byte[] AllocatePage(ref byte[]? slot)
    {
        // On the pinned object heap: pages live long, and there the collector never copies them from generation to
        // generation (a 64 KiB array is just under the large object heap's threshold).
        byte[] created = GC.AllocateArray<byte>(PageSize, pinned: true);
        byte[]? winner = Interlocked.CompareExchange(ref slot, created, null);
        if (winner != null)
            return winner;
        Interlocked.Increment(ref _allocatedPages);
        return created;
    }

    /// <summary>
    /// The first page after <paramref name="page"/> and before <paramref name="limit"/> that is (with
    /// <paramref name="allocated"/>) or is not allocated, else <paramref name="limit"/>; skips chunks that do not exist.
    /// </summary>
    private long NextPage(long page, bool allocated, long limit)
    {
        long p = page + 1;
        while (p < limit)
        {
            long c = p >> ChunkShift;
            byte[]?[]? chunk = ChunkAt(c);
            if (chunk == null)
            {
                if (!allocated)
                    return p;
                long next = NextChunk(c + 1, limit);
                if (next < 0)
                    return limit;
                p = next << ChunkShift;
                continue;
            }
            int start = (int)(p & ChunkMask);
            int stop = (int)Math.Min(ChunkPages, limit - (c << ChunkShift));
            for (int i = start; i < stop; i++)
            {
                if ((Volatile.Read(ref chunk[i]) != null) == allocated)
                    return (c << ChunkShift) + i;
            }
            p = (c + 1) << ChunkShift;
        }
        return limit;
    }

    private byte[]?[]? ChunkAt(long c)
    {
        if (_flat != null)
            return Volatile.Read(ref _flat[c]);
        return _map!.TryGetValue(c, out byte[]?[]? chunk) ? chunk : null;
    }

    /// <summary>The first chunk at or after <paramref name="c"/> that exists and holds pages before <paramref name="limitPage"/>, or -1.</summary>
    private long NextChunk(long c, long limitPage)
    {
        long limit = ((limitPage - 1) >> ChunkShift) + 1;
        if (_flat != null)
        {
            for (long i = c; i < limit; i++)
            {
                if (Volatile.Read(ref _flat[i]) != null)
                    return i;
            }
            return -1;
        }
        long best = -1;
        foreach (KeyValuePair<long, byte[]?[]> pair in _map!)
        {
            if (pair.Key >= c && pair.Key < limit && (best < 0 || pair.Key < best))
                best = pair.Key;
        }
        return best;
    }

    private long PageCount => (long)(((ulong)_size + PageSize - 1) >> PageShift);

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > _size || length > _size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), "memory: the range is outside the disk");
    }
}
