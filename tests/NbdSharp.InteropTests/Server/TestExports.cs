using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server;

namespace NbdSharp.InteropTests.Server;

/// <summary>
/// A <see cref="MemoryExport"/> behind capabilities the test chooses: block sizes, which commands it advertises,
/// whether it zeroes natively or fast. Operations go to the memory disk.
/// </summary>
internal sealed class ConfigurableExport(long size) : NbdExport
{
    private readonly MemoryExport _inner = new(size);

    public MemoryExport Inner => _inner;

    public override long Size => _inner.Size;

    public bool ReadOnly { get; init; }

    public override bool IsReadOnly => ReadOnly;

    public bool Flush { get; init; } = true;

    public override bool CanFlush => Flush;

    public bool Fua { get; init; } = true;

    public override bool CanFua => Fua;

    public bool Trim { get; init; } = true;

    public override bool CanTrim => Trim;

    /// <summary>Whether ZeroAsync is implemented; when false the server must write zeroes itself.</summary>
    public bool Zero { get; init; } = true;

    public override bool CanZero => Zero;

    public bool FastZero { get; init; } = true;

    public override bool CanFastZero => FastZero;

    public bool Cache { get; init; } = true;

    public override bool CanCache => Cache;

    public bool MultiConn { get; init; } = true;

    public override bool CanMultiConn => MultiConn;

    public bool Rotational { get; init; }

    public override bool IsRotational => Rotational;

    public bool Extents { get; init; } = true;

    public override bool CanExtents => Extents;

    public bool SparseRead { get; init; } = true;

    public override bool CanSparseRead => SparseRead;

    public ExportBlockSize Blocks { get; init; } = ExportBlockSize.Default;

    public override ExportBlockSize BlockSize => Blocks;

    /// <summary>How many times ZeroAsync was called, and how many of those asked for a fast zero.</summary>
    public int ZeroCalls => Volatile.Read(ref _zeroCalls);

    public int FastZeroCalls => Volatile.Read(ref _fastZeroCalls);

    /// <summary>How many writes reached the export (the server's write-zeroes fallback counts here).</summary>
    public int WriteCalls => Volatile.Read(ref _writeCalls);

    private int _zeroCalls;
    private int _fastZeroCalls;
    private int _writeCalls;

    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        _inner.ReadAsync(offset, buffer, cancellationToken);

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _writeCalls);
        return _inner.WriteAsync(offset, data, fua, cancellationToken);
    }

    public override ValueTask FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) =>
        _inner.TrimAsync(offset, length, fua, cancellationToken);

    /// <remarks>Like a plugin that implements zero but not fast zero: it never refuses a fast zero itself.</remarks>
    public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _zeroCalls);
        if (fast)
            Interlocked.Increment(ref _fastZeroCalls);
        return _inner.ZeroAsync(offset, length, mayTrim, fast, fua, cancellationToken);
    }

    public override ValueTask CacheAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.CacheAsync(offset, length, cancellationToken);

    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken) =>
        _inner.GetExtentsAsync(offset, length, extents, cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// A memory disk whose reads wait at a gate the test opens, so that requests are provably in flight inside the server
/// (for graceful stop). <see cref="ReadsEntered"/> counts the reads that reached the export.
/// </summary>
internal sealed class GatedExport(long size) : NbdExport
{
    private readonly MemoryExport _inner = new(size);
    private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _lock = new();
    private int _waiting;

    public override long Size => _inner.Size;

    public override bool CanFlush => true;

    /// <summary>How many reads have reached the export (and waited at the gate until it opened).</summary>
    public int ReadsEntered
    {
        get
        {
            lock (_lock)
                return _waiting;
        }
    }

    /// <summary>Waits until <paramref name="count"/> reads have reached the export; false after <paramref name="timeout"/>.</summary>
    public bool WaitForReads(int count, TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        lock (_lock)
        {
            while (_waiting < count)
            {
                TimeSpan left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    return false;
                Monitor.Wait(_lock, left);
            }
            return true;
        }
    }

    /// <summary>Lets every read waiting (and every later one) go.</summary>
    public void Open() => _gate.TrySetResult();

    public void Write(long offset, ReadOnlySpan<byte> data) => _inner.Write(offset, data);

    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _waiting++;
            Monitor.PulseAll(_lock);
        }
        // Not cancellable on purpose: a graceful stop must let these finish.
        await _gate.Task.ConfigureAwait(false);
        await _inner.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        _inner.WriteAsync(offset, data, fua, cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// A memory disk cut into slots of <paramref name="slotSize"/> bytes; a read in slot i waits until the test opens gate
/// i, so the test decides the order in which requests complete.
/// </summary>
internal sealed class SlotGatedExport(int slots, int slotSize) : NbdExport
{
    private readonly MemoryExport _inner = new((long)slots * slotSize);
    private readonly TaskCompletionSource[] _gates = CreateGates(slots);
    private readonly object _lock = new();
    private int _entered;

    private static TaskCompletionSource[] CreateGates(int slots)
    {
        var gates = new TaskCompletionSource[slots];
        for (int i = 0; i < slots; i++)
            gates[i] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return gates;
    }

    public override long Size => _inner.Size;

    /// <summary>Whether a waiting read gives up when the server cancels it (else it waits for its gate regardless).</summary>
    public bool HonourCancellation { get; init; }

    public void Write(long offset, ReadOnlySpan<byte> data) => _inner.Write(offset, data);

    /// <summary>Lets the reads of slot <paramref name="slot"/> go.</summary>
    public void Open(int slot) => _gates[slot].TrySetResult();

    /// <summary>Waits until <paramref name="count"/> reads have reached the export at once; false after <paramref name="timeout"/>.</summary>
    public bool WaitForReads(int count, TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        lock (_lock)
        {
            while (_entered < count)
            {
                TimeSpan left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    return false;
                Monitor.Wait(_lock, left);
            }
            return true;
        }
    }

    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            _entered++;
            Monitor.PulseAll(_lock);
        }
        Task gate = _gates[(int)(offset / (Size / _gates.Length))].Task;
        await (HonourCancellation ? gate.WaitAsync(cancellationToken) : gate).ConfigureAwait(false);
        await _inner.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}
