using System;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// A disk that <see cref="NbdServer"/> serves: its size, what it can do, and the operations clients send. Implement
/// the members your disk supports; the server advertises only what the <c>Can*</c> properties allow, and checks every
/// request (bounds, alignment, read-only, flags) before calling the export, so an operation is only ever called with
/// a range inside the disk.
/// </summary>
/// <remarks>
/// The server calls the operations concurrently, from several connections and with several requests in flight per
/// connection. An operation fails by throwing: an <see cref="NbdException"/> carries its errno to the client (EIO,
/// ENOSPC, EPERM, ...), an <see cref="System.IO.IOException"/> or anything else becomes EIO. The exception's message
/// reaches clients that negotiated structured replies.
/// </remarks>
public abstract class NbdExport : IDisposable
{
    /// <summary>The size of the disk in bytes.</summary>
    public abstract long Size { get; }

    /// <summary>Whether clients may only read (writes, trims and write-zeroes fail with EPERM).</summary>
    public virtual bool IsReadOnly => false;

    /// <summary>Whether <see cref="FlushAsync"/> does something (<c>NBD_FLAG_SEND_FLUSH</c>).</summary>
    public virtual bool CanFlush => false;

    /// <summary>Whether writes honour forced unit access (<c>NBD_FLAG_SEND_FUA</c>).</summary>
    public virtual bool CanFua => false;

    /// <summary>Whether <see cref="TrimAsync"/> is implemented (<c>NBD_FLAG_SEND_TRIM</c>).</summary>
    public virtual bool CanTrim => false;

    /// <summary>
    /// Whether <see cref="ZeroAsync"/> is implemented (<c>NBD_FLAG_SEND_WRITE_ZEROES</c>). When false for a writable
    /// export, the server still advertises write-zeroes and writes zero bytes through <see cref="WriteAsync"/>.
    /// </summary>
    public virtual bool CanZero => false;

    /// <summary>Whether <see cref="ZeroAsync"/> can zero faster than writing, so fast-zero requests succeed (<c>NBD_FLAG_SEND_FAST_ZERO</c>).</summary>
    public virtual bool CanFastZero => false;

    /// <summary>Whether <see cref="CacheAsync"/> does something (<c>NBD_FLAG_SEND_CACHE</c>).</summary>
    public virtual bool CanCache => false;

    /// <summary>Whether every connection sees every other connection's writes once flushed (<c>NBD_FLAG_CAN_MULTI_CONN</c>).</summary>
    public virtual bool CanMultiConn => false;

    /// <summary>Whether the disk is rotational (<c>NBD_FLAG_ROTATIONAL</c>), a hint for clients' schedulers.</summary>
    public virtual bool IsRotational => false;

    /// <summary>
    /// Whether <see cref="GetExtentsAsync"/> reports holes and zeroes; when false the server answers block status
    /// with one allocated extent, as nbdkit does for plugins without extents.
    /// </summary>
    public virtual bool CanExtents => false;

    /// <summary>
    /// Whether reads may answer ranges that <see cref="GetExtentsAsync"/> reports as zero with hole chunks instead of
    /// data (structured replies without <c>NBD_CMD_FLAG_DF</c>). Only for exports whose extents are cheap to compute.
    /// </summary>
    public virtual bool CanSparseRead => false;

    /// <summary>The block-size constraints advertised in <c>NBD_INFO_BLOCK_SIZE</c> and enforced on requests.</summary>
    public virtual ExportBlockSize BlockSize => ExportBlockSize.Default;

    /// <summary>Reads <paramref name="buffer"/>'s length of bytes at <paramref name="offset"/>.</summary>
    public abstract ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>; with <paramref name="fua"/>, durably before returning.</summary>
    public virtual ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        throw new NbdException(Errno.EPERM, "the export is read-only");

    /// <summary>Makes every completed write durable.</summary>
    public virtual ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>Discards the range; reading it afterwards may return anything, as NBD_CMD_TRIM permits.</summary>
    public virtual ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) =>
        throw new NbdException(Errno.ENOTSUP, "trim is not supported");

    /// <summary>
    /// Makes the range read as zeroes. <paramref name="mayTrim"/> is false when the client sent NBD_CMD_FLAG_NO_HOLE;
    /// with <paramref name="fast"/>, fail with ENOTSUP unless zeroing is faster than writing.
    /// </summary>
    public virtual ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken) =>
        throw new NbdException(Errno.ENOTSUP, "write-zeroes is not supported");

    /// <summary>Prefetches the range (NBD_CMD_CACHE).</summary>
    public virtual ValueTask CacheAsync(long offset, long length, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>
    /// Describes the allocation of the range starting at <paramref name="offset"/> for <c>base:allocation</c>:
    /// add extents in order from <paramref name="offset"/>, covering at least one byte and at most
    /// <paramref name="length"/> bytes (more is trimmed); stop early when <see cref="ExtentList.Add"/> returns false.
    /// </summary>
    public virtual ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extents);
        extents.Add(length, ExtentFlags.None);
        return ValueTask.CompletedTask;
    }

    /// <summary>Releases the disk's resources.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the disk's resources; <paramref name="disposing"/> is false from a finalizer.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }
}

/// <summary>Flags of one <c>base:allocation</c> extent (proto.md's <c>NBD_STATE_HOLE</c> and <c>NBD_STATE_ZERO</c>).</summary>
[Flags]
public enum ExtentFlags : uint
{
    /// <summary>Allocated data.</summary>
    None = 0,

    /// <summary><c>NBD_STATE_HOLE</c>: not allocated.</summary>
    Hole = 1,

    /// <summary><c>NBD_STATE_ZERO</c>: reads as zeroes.</summary>
    Zero = 2,
}

/// <summary>
/// Block-size constraints (<c>NBD_INFO_BLOCK_SIZE</c>): requests must be aligned to <see cref="Minimum"/>, should use
/// <see cref="Preferred"/>, and reads and writes must not exceed <see cref="Maximum"/>.
/// </summary>
/// <param name="Minimum">The minimum block size, a power of two from 1 to 65536.</param>
/// <param name="Preferred">The preferred block size, a power of two of at least 512 and at least the minimum.</param>
/// <param name="Maximum">The maximum payload, a multiple of the minimum, at least the preferred size.</param>
public readonly record struct ExportBlockSize(uint Minimum, uint Preferred, uint Maximum)
{
    /// <summary>What the server advertises unless an export says otherwise: 1 byte, 4 KiB, 32 MiB (as qemu-nbd).</summary>
    public static ExportBlockSize Default => new(1, 4096, 32 * 1024 * 1024);

    /// <summary>Whether the three sizes obey proto.md's rules, as clients check them.</summary>
    public bool IsValid =>
        Minimum is >= 1 and <= 65536 && (Minimum & (Minimum - 1)) == 0 &&
        Preferred >= 512 && Preferred >= Minimum && (Preferred & (Preferred - 1)) == 0 &&
        Maximum >= Preferred && Maximum % Minimum == 0;
}
