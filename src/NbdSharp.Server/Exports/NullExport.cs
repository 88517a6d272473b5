using System;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// nbdkit's null plugin: a writable disk that reads as zeroes and throws every write away, reported as one hole. For
/// measuring clients and the protocol with no disk behind them.
/// </summary>
public sealed class NullExport : NbdExport
{
    private readonly long _size;

    /// <summary>A disk of <paramref name="size"/> bytes.</summary>
    /// <param name="size">The size in bytes, from 0 to <see cref="long.MaxValue"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    public NullExport(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        _size = size;
    }

    /// <inheritdoc/>
    public override long Size => _size;

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
        buffer.Span.Clear();
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>The data is discarded.</remarks>
    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        ValueTask.CompletedTask;

    /// <inheritdoc/>
    public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc/>
    public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken) =>
        ValueTask.CompletedTask;

    /// <inheritdoc/>
    /// <remarks>The whole range is one hole that reads as zeroes.</remarks>
    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extents);
        extents.Add(length, ExtentFlags.Hole | ExtentFlags.Zero);
        return ValueTask.CompletedTask;
    }
}
