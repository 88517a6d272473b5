using System;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// Another export seen read-only (nbdkit's <c>-r</c>): reads, extents, cache and flush go through (nbdkit keeps
/// flush on a read-only export too); clients are told the export is read-only, so writes, trims and write-zeroes fail
/// with EPERM before reaching it.
/// </summary>
public sealed class ReadOnlyExport : NbdExport
{
    private readonly NbdExport _inner;
    private readonly bool _ownsInner;

    /// <summary>Wraps <paramref name="inner"/>; with <paramref name="ownsInner"/>, disposing this disposes it.</summary>
    public ReadOnlyExport(NbdExport inner, bool ownsInner = false)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _ownsInner = ownsInner;
    }

    /// <inheritdoc/>
    public override long Size => _inner.Size;

    /// <inheritdoc/>
    public override bool IsReadOnly => true;

    /// <inheritdoc/>
    public override bool CanFlush => _inner.CanFlush;

    /// <inheritdoc/>
    public override bool CanCache => _inner.CanCache;

    /// <inheritdoc/>
    public override bool CanMultiConn => _inner.CanMultiConn;

    /// <inheritdoc/>
    public override bool IsRotational => _inner.IsRotational;

    /// <inheritdoc/>
    public override bool CanExtents => _inner.CanExtents;

    /// <inheritdoc/>
    public override bool CanSparseRead => _inner.CanSparseRead;

    /// <inheritdoc/>
    public override ExportBlockSize BlockSize => _inner.BlockSize;

    /// <inheritdoc/>
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        _inner.ReadAsync(offset, buffer, cancellationToken);

    /// <inheritdoc/>
    public override ValueTask FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    /// <inheritdoc/>
    public override ValueTask CacheAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.CacheAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken) =>
        _inner.GetExtentsAsync(offset, length, extents, cancellationToken);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && _ownsInner)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}
