using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// The copy itself, as libnbd's nbdcopy does it. Workers (one per connection) take the source in 128 MiB ranges,
/// ask for its extents, and turn each range into requests of --request-size bytes: runs of zeroes become one zero
/// request (or nothing, when the destination already reads as zeroes), data is read into one of the worker's
/// buffers and written out, with zero blocks found in the data (--sparse) zeroed instead of written. At most
/// --requests requests per worker are in flight, and the buffers in use never exceed --queue-size per worker, so
/// memory stays bounded whatever the size of the disk. The first failure ends the copy.
/// </summary>
internal sealed class Copier
{
    /// <summary>How much of the source one worker takes at a time (libnbd's THREAD_WORK_SIZE).</summary>
    public const long WorkSize = 128L << 20;

    private readonly CopyEnd _source;
    private readonly CopyEnd _destination;
    private readonly CopyOptions _options;
    private readonly ProgressBar _progress;
    private readonly byte[] _zeroes;
    private readonly CancellationTokenSource _failed = new();
    private readonly object _lock = new();
    private long _nextOffset;
    private string? _failure;

    public Copier(CopyEnd source, CopyEnd destination, CopyOptions options, ProgressBar progress)
    {
        _source = source;
        _destination = destination;
        _options = options;
        _progress = progress;
        _zeroes = new byte[options.RequestSize];
    }

    /// <summary>How many bytes a source of unknown size turned out to hold (after the synchronous copy).</summary>
    public long CopiedSize { get; private set; } = -1;

    /// <summary>Why the copy failed (one line), or null while it has not.</summary>
    public string? Failure => Volatile.Read(ref _failure);

    /// <summary>Signalled at the first failure.</summary>
    public CancellationToken FailedToken => _failed.Token;

    /// <summary>Runs the multi-connection copy: <paramref name="workers"/> workers, one per connection.</summary>
    public Task RunAsync(int workers)
    {
        var tasks = new Task[workers];
        for (int i = 0; i < workers; i++)
        {
            int connection = i;
            tasks[i] = Task.Run(() => WorkerAsync(connection));
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>Records the first failure and stops everything else.</summary>
    public void Fail(string message)
    {
        if (Interlocked.CompareExchange(ref _failure, message, null) == null)
            _failed.Cancel();
    }

    private bool NextRange(out long offset, out long count)
    {
        lock (_lock)
        {
            offset = _nextOffset;
            if (offset >= _source.Size || _failed.IsCancellationRequested)
            {
                count = 0;
                return false;
            }
            count = Math.Min(WorkSize, _source.Size - offset);
            _nextOffset += WorkSize;
            // Like libnbd, the bar shows requests issued rather than completed.
            _progress.Update(offset, _source.Size);
            return true;
        }
    }

    private async Task WorkerAsync(int connection)
    {
        int slots = (int)Math.Max(1, Math.Min(_options.MaxRequests, _options.QueueSize / _options.RequestSize));
        Channel<Extent> work = Channel.CreateBounded<Extent>(new BoundedChannelOptions(slots)
        {
            SingleWriter = true,
            SingleReader = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var consumers = new Task[slots];
        for (int i = 0; i < slots; i++)
            consumers[i] = Task.Run(() => ConsumeAsync(connection, work.Reader));
        try
        {
            await ProduceAsync(connection, work.Writer).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_failed.IsCancellationRequested)
        {
        }
        catch (ToolException e)
        {
            Fail(e.Message);
        }
        catch (NbdException e)
        {
            Fail(_source.Name + ": " + e.Message);
        }
        finally
        {
            work.Writer.TryComplete();
        }
        await Task.WhenAll(consumers).ConfigureAwait(false);
    }

    /// <summary>Cuts each range into requests: whole zero requests coalesced, data requests as they are.</summary>
    private async Task ProduceAsync(int connection, ChannelWriter<Extent> work)
    {
        var extents = new List<Extent>();
        long requestSize = _options.RequestSize;
        while (NextRange(out long offset, out long count))
        {
            if (_options.Extents)
                await _source.GetExtentsAsync(connection, offset, count, extents).ConfigureAwait(false);
            else
                CopyEnd.DefaultExtents(offset, count, extents);

            int index = 0;
            long zeroStart = -1;
            while (count > 0)
            {
                long length = Math.Min(count, requestSize);
                if (OnlyZeroes(extents, ref index, offset, length))
                {
                    if (zeroStart < 0)
                        zeroStart = offset;
                }
                else
                {
                    if (zeroStart >= 0)
                    {
                        await work.WriteAsync(new Extent(zeroStart, offset - zeroStart, true), _failed.Token).ConfigureAwait(false);
                        zeroStart = -1;
                    }
                    await work.WriteAsync(new Extent(offset, length, false), _failed.Token).ConfigureAwait(false);
                }
                offset += length;
                count -= length;
            }
            if (zeroStart >= 0)
                await work.WriteAsync(new Extent(zeroStart, offset - zeroStart, true), _failed.Token).ConfigureAwait(false);
        }
    }

    /// <summary>Whether every extent overlapping <c>[offset, offset + length)</c> reads as zeroes; moves
    /// <paramref name="index"/> forward to the extent holding <paramref name="offset"/>.</summary>
    private static bool OnlyZeroes(List<Extent> extents, ref int index, long offset, long length)
    {
        while (index + 1 < extents.Count && extents[index + 1].Offset <= offset)
            index++;
        for (int j = index; j < extents.Count; j++)
        {
            Extent extent = extents[j];
            if (extent.Offset >= offset + length)
                break;
            if (!extent.Zero)
                return false;
        }
        return true;
    }

    private async Task ConsumeAsync(int connection, ChannelReader<Extent> work)
    {
        byte[] buffer = GC.AllocateUninitializedArray<byte>(_options.RequestSize, pinned: true);
        try
        {
            while (await work.WaitToReadAsync(_failed.Token).ConfigureAwait(false))
            {
                while (work.TryRead(out Extent item))
                {
                    if (item.Zero)
                    {
                        _options.BlockHash?.Add(item.Offset, item.Length, default, zero: true);
                        await ZeroAsync(connection, item.Offset, item.Length).ConfigureAwait(false);
                    }
                    else
                        await CopyDataAsync(connection, buffer.AsMemory(0, (int)item.Length), item.Offset).ConfigureAwait(false);
                    if (_failed.IsCancellationRequested)
                        return;
                }
            }
        }
        catch (OperationCanceledException) when (_failed.IsCancellationRequested)
        {
        }
        catch (CopyFailedException)
        {
        }
    }

    private async ValueTask CopyDataAsync(int connection, Memory<byte> data, long offset)
    {
        try
        {
            await _source.ReadAsync(connection, data, offset).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Failed(Describe("read", offset, e));
        }
        _options.BlockHash?.Add(offset, data.Length, data.Span, zero: false);

        long sparse = _options.SparseSize;
        if (_options.Allocated || sparse == 0)
        {
            await WriteAsync(connection, data, offset).ConfigureAwait(false);
            return;
        }

        // Sparseness detection on whole --sparse blocks; a tail shorter than a block is always written.
        long start = offset;
        long end = offset + data.Length;
        long runStart = start;
        bool runIsZero = false;
        long block = Math.Min(RoundUp(start, sparse), end);
        for (; block + sparse <= end; block += sparse)
        {
            bool zero = IsZero(data.Span.Slice((int)(block - start), (int)sparse));
            if (zero == runIsZero)
                continue;
            if (block > runStart)
                await FlushRunAsync(connection, data, start, runStart, block, runIsZero).ConfigureAwait(false);
            runStart = block;
            runIsZero = zero;
        }
        if (block > runStart)
            await FlushRunAsync(connection, data, start, runStart, block, runIsZero).ConfigureAwait(false);
        if (end > block)
            await WriteAsync(connection, data[(int)(block - start)..], block).ConfigureAwait(false);
    }

    /// <summary>
    /// The synchronous copy (--synchronous, and whenever a side is a pipe): one request at a time, in order. A
    /// source of unknown size is copied until its end; otherwise extents still let holes be zeroed, not read.
    /// </summary>
    public async Task RunSynchronousAsync()
    {
        byte[] buffer = GC.AllocateUninitializedArray<byte>(_options.RequestSize, pinned: true);
        long offset = 0;
        if (_source.Size < 0)
        {
            while (true)
            {
                int n;
                try
                {
                    n = await _source.ReadSomeAsync(buffer, offset).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not CopyFailedException)
                {
                    throw Failed(Describe("read", offset, e));
                }
                if (n == 0)
                {
                    CopiedSize = offset;
                    return;
                }
                _options.BlockHash?.Add(offset, n, buffer.AsSpan(0, n), zero: false);
                await WriteAsync(0, buffer.AsMemory(0, n), offset).ConfigureAwait(false);
                offset += n;
            }
        }

        var extents = new List<Extent>();
        while (offset < _source.Size)
        {
            long count = Math.Min(_source.Size - offset, buffer.Length);
            if (_options.Extents)
            {
                try
                {
                    await _source.GetExtentsAsync(0, offset, count, extents).ConfigureAwait(false);
                }
                catch (NbdException e)
                {
                    throw new ToolException(_source.Name + ": " + e.Message, e);
                }
            }
            else
            {
                CopyEnd.DefaultExtents(offset, count, extents);
            }
            foreach (Extent extent in extents)
            {
                if (extent.Zero)
                {
                    _options.BlockHash?.Add(offset, extent.Length, default, zero: true);
                    await ZeroAsync(0, offset, extent.Length).ConfigureAwait(false);
                    offset += extent.Length;
                    continue;
                }
                Memory<byte> data = buffer.AsMemory(0, (int)extent.Length);
                int n;
                try
                {
                    n = await _source.ReadSomeAsync(data, offset).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not CopyFailedException)
                {
                    throw Failed(Describe("read", offset, e));
                }
                if (n < data.Length)
                    throw Failed(_source.Name + ": unexpected end of file");
                _options.BlockHash?.Add(offset, n, data.Span, zero: false);
                await WriteAsync(0, data, offset).ConfigureAwait(false);
                offset += n;
                _progress.Update(offset, _source.Size);
            }
        }
    }

    private ValueTask FlushRunAsync(int connection, Memory<byte> data, long start, long from, long to, bool zero) =>
        zero ? ZeroAsync(connection, from, to - from)
             : WriteAsync(connection, data.Slice((int)(from - start), (int)(to - from)), from);

    private static long RoundUp(long value, long multiple) => (value + multiple - 1) & ~(multiple - 1);

    private static bool IsZero(ReadOnlySpan<byte> block) => !block.ContainsAnyExcept((byte)0);

    private async ValueTask WriteAsync(int connection, ReadOnlyMemory<byte> data, long offset)
    {
        try
        {
            await _destination.WriteAsync(connection, data, offset).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Failed(Describe("write", offset, e));
        }
    }

    /// <summary>Makes a range of the destination read as zeroes: nothing when it already does, a zero request
    /// when the destination has one, else zeroes written the hard way.</summary>
    private async ValueTask ZeroAsync(int connection, long offset, long length)
    {
        if (_options.DestinationIsZero)
            return;
        try
        {
            if (await _destination.ZeroAsync(connection, offset, length, _options.Allocated).ConfigureAwait(false))
                return;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Failed(Describe("write", offset, e));
        }
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, _zeroes.Length);
            await WriteAsync(connection, _zeroes.AsMemory(0, chunk), offset).ConfigureAwait(false);
            offset += chunk;
            length -= chunk;
        }
    }

    private CopyFailedException Failed(string message)
    {
        Fail(message);
        return new CopyFailedException();
    }

    /// <summary>One line for a failed request, libnbd's words: "read at offset N failed: strerror".</summary>
    public static string Describe(string what, long offset, Exception e)
    {
        string reason = e switch
        {
            ToolException t => t.Message,
            NbdException n => n.Errno != 0 ? Errno.Describe(n.Errno) + DetailOf(n) : n.Message,
            _ => e.Message,
        };
        return offset < 0 ? what + " failed: " + reason
            : what + " at offset " + offset.ToString(CultureInfo.InvariantCulture) + " failed: " + reason;
    }

    /// <summary>When the connection itself failed, what happened to it (libnbd's strerror alone would hide it).</summary>
    private static string DetailOf(NbdException e) => e is NbdProtocolException ? " (" + e.Message + ")" : "";

    /// <summary>Unwinds a worker after its failure was recorded in <see cref="Failure"/>.</summary>
    internal sealed class CopyFailedException : Exception
    {
    }
}
