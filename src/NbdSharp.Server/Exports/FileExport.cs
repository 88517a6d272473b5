using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Win32.SafeHandles;

namespace NbdSharp.Server;

/// <summary>
/// A regular file or a block device, like nbdkit's file plugin: reads and writes at offsets (many at once), flush and
/// FUA with fdatasync, and on Linux trim and write-zeroes with <c>fallocate</c> (punching holes, zeroing ranges) and
/// extents from <c>SEEK_DATA</c>/<c>SEEK_HOLE</c>, so sparse files stay sparse through a copy.
/// </summary>
/// <remarks>
/// <para>
/// The size is the file's length when the export is made (a block device's size from <c>BLKGETSIZE64</c>). Trim is
/// advisory: where holes cannot be punched it does nothing. Write-zeroes punches a hole when the client allows it,
/// else zeroes the range with <c>FALLOC_FL_ZERO_RANGE</c>, else writes zeroes (and fast-zero requests fail with
/// ENOTSUP instead). What the file system does not support is found on first use and remembered.
/// </para>
/// <para>
/// On other systems, and in 32-bit processes, the export reads, writes and flushes through <see cref="RandomAccess"/>
/// only: trim does nothing, write-zeroes writes zeroes, and the whole file is reported as data. Failures of the
/// system calls become <see cref="NbdException"/>s carrying the errno the system returned.
/// </para>
/// </remarks>
public sealed partial class FileExport : NbdExport
{
    private const int FALLOC_FL_KEEP_SIZE = 0x01;
    private const int FALLOC_FL_PUNCH_HOLE = 0x02;
    private const int FALLOC_FL_ZERO_RANGE = 0x10;
    private const int SEEK_END = 2;
    private const int SEEK_DATA = 3;
    private const int SEEK_HOLE = 4;
    private const int POSIX_FADV_WILLNEED = 3;
    private const int ENODEV = 19;
    private const int ENXIO = 6;
    private const int ENOSYS = 38;
    private const int EOPNOTSUPP = 95;

    /// <summary>Block devices take fallocate and discard in whole logical blocks; 4096 is a multiple of every size.</summary>
    private const int DeviceAlignment = 4096;

    private const int ZeroChunk = 1024 * 1024;

    private static byte[]? s_zeroes;

    private readonly SafeFileHandle _handle;
    private readonly bool _readOnly;
    private readonly long _size;
    private readonly bool _isBlockDevice;
    private readonly Lock _seekLock = new();

    // 1 until the operation fails as unsupported: probed on first use.
    private int _punchWorks = 1;
    private int _zeroRangeWorks = 1;
    private int _discardWorks = 1;
    private int _seekWorks = 1;

    /// <summary>Opens <paramref name="path"/>, a regular file or a block device, to serve it.</summary>
    /// <param name="path">The file or device.</param>
    /// <param name="readOnly">Whether to open it read-only and serve it read-only.</param>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty.</exception>
    /// <exception cref="IOException">It cannot be opened.</exception>
    /// <exception cref="UnauthorizedAccessException">It may not be opened as asked.</exception>
    public FileExport(string path, bool readOnly = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        _readOnly = readOnly;
        _handle = File.OpenHandle(path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite,
            OperatingSystem.IsWindows() ? FileOptions.Asynchronous : FileOptions.None);
        try
        {
            if (Native && DeviceSize(_handle, out long deviceSize))
            {
                _size = deviceSize;
                _isBlockDevice = true;
            }
            else
            {
                _size = RandomAccess.GetLength(_handle);
                if (_size == 0 && Environment.Is64BitProcess && (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD()))
                {
                    // Some device whose length the file system does not know: where does seeking to the end land?
                    long end = LSeek(_handle, 0, SEEK_END);
                    if (end > 0)
                        _size = end;
                }
            }
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
    }

    /// <summary>Whether the Linux system calls are used: on Linux, in a 64-bit process (where off_t is 64 bits).</summary>
    [SupportedOSPlatformGuard("linux")]
    private static bool Native => OperatingSystem.IsLinux() && Environment.Is64BitProcess;

    /// <inheritdoc/>
    public override long Size => _size;

    /// <inheritdoc/>
    public override bool IsReadOnly => _readOnly;

    /// <inheritdoc/>
    public override bool CanFlush => true;

    /// <inheritdoc/>
    public override bool CanFua => true;

    /// <inheritdoc/>
    public override bool CanTrim => true;

    /// <inheritdoc/>
    public override bool CanZero => true;

    /// <inheritdoc/>
    /// <remarks>True until fallocate turns out unsupported for the ways this export zeroes.</remarks>
    public override bool CanFastZero => Native && (Volatile.Read(ref _punchWorks) != 0 || (!_isBlockDevice && Volatile.Read(ref _zeroRangeWorks) != 0));

    /// <inheritdoc/>
    public override bool CanCache => true;

    /// <inheritdoc/>
    public override bool CanMultiConn => true;

    /// <inheritdoc/>
    public override bool CanExtents => Native && !_isBlockDevice;

    /// <inheritdoc/>
    /// <exception cref="NbdException">The file ended before the range did (EIO): it was truncated after the export was made.</exception>
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await RandomAccess.ReadAsync(_handle, buffer[done..], offset + done, cancellationToken).ConfigureAwait(false);
            if (n == 0)
                throw new NbdException(Errno.EIO, "file: read: end of file at offset " + (offset + done) + ", inside the " + _size +
                    " bytes served (was the file truncated?)");
            done += n;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        await RandomAccess.WriteAsync(_handle, data, offset, cancellationToken).ConfigureAwait(false);
        if (fua)
            Sync("write");
    }

    /// <inheritdoc/>
    public override async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        // fdatasync can take long: not on the caller's thread, which reads the next requests.
        await Task.Yield();
        Sync("flush");
    }

    /// <inheritdoc/>
    /// <remarks>Punches a hole (discards, on a block device); does nothing where that is not supported.</remarks>
    public override async ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        if (Native)
        {
            await Task.Yield();
            if (_isBlockDevice)
            {
                // Only the whole blocks inside the range: trimming less is allowed.
                long start = AlignUp(offset);
                long end = AlignDown(offset + length);
                if (start < end && Volatile.Read(ref _discardWorks) != 0 && Discard(_handle, start, end - start) != 0)
                    Unsupported(ref _discardWorks, Marshal.GetLastPInvokeError(), "trim: ioctl BLKDISCARD");
            }
            else if (Volatile.Read(ref _punchWorks) != 0 && Fallocate(_handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0)
            {
                Unsupported(ref _punchWorks, Marshal.GetLastPInvokeError(), "trim: fallocate");
            }
        }
        if (fua)
            Sync("trim");
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Punches a hole when <paramref name="mayTrim"/>, else (or where holes cannot be punched) zeroes the range with
    /// FALLOC_FL_ZERO_RANGE, else writes zeroes, or with <paramref name="fast"/> fails with ENOTSUP.
    /// </remarks>
    public override async ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
    {
        bool done = false;
        if (Native)
        {
            await Task.Yield();
            // A block device zeroes whole blocks only: the unaligned ends are written.
            long start = _isBlockDevice ? AlignUp(offset) : offset;
            long end = _isBlockDevice ? AlignDown(offset + length) : offset + length;
            if (start < end && ZeroNative(start, end - start, mayTrim, fast))
            {
                done = true;
                if (start > offset)
                    await WriteZeroesAsync(offset, start - offset, cancellationToken).ConfigureAwait(false);
                if (end < offset + length)
                    await WriteZeroesAsync(end, offset + length - end, cancellationToken).ConfigureAwait(false);
            }
        }
        if (!done)
        {
            if (fast)
                throw new NbdException(Errno.ENOTSUP, "file: zero: this file cannot be zeroed faster than by writing zeroes");
            await WriteZeroesAsync(offset, length, cancellationToken).ConfigureAwait(false);
        }
        if (fua)
            Sync("zero");
    }

    /// <inheritdoc/>
    /// <remarks>Asks the kernel to read the range ahead (<c>posix_fadvise</c> WILLNEED) on Linux; does nothing elsewhere.</remarks>
    public override ValueTask CacheAsync(long offset, long length, CancellationToken cancellationToken)
    {
        if (Native)
        {
            // posix_fadvise returns the error rather than setting errno.
            int error = FAdvise(_handle, offset, length, POSIX_FADV_WILLNEED);
            if (error != 0)
                throw Failure(error, "cache: posix_fadvise");
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Holes (from <c>SEEK_HOLE</c>) are reported as holes that read as zeroes, the rest as data.</remarks>
    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extents);
        if (!Native || _isBlockDevice || Volatile.Read(ref _seekWorks) == 0)
        {
            extents.Add(length, ExtentFlags.None);
            return ValueTask.CompletedTask;
        }
        long end = offset + length;
        // SEEK_DATA and SEEK_HOLE move the file position that all users of the descriptor share: one walk at a time
        // (reads and writes do not use the position).
        lock (_seekLock)
        {
            while (offset < end)
            {
                long data = LSeek(_handle, offset, SEEK_DATA);
                if (data < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == ENXIO)
                    {
                        // No data from here to the end of the file.
                        extents.Add(end - offset, ExtentFlags.Hole | ExtentFlags.Zero);
                        break;
                    }
                    if (errno == Errno.EINVAL || errno == EOPNOTSUPP)
                    {
                        // The file system cannot tell: all data.
                        Volatile.Write(ref _seekWorks, 0);
                        extents.Add(end - offset, ExtentFlags.None);
                        break;
                    }
                    throw Failure(errno, "extents: lseek SEEK_DATA");
                }
                if (data > offset && !extents.Add(Math.Min(data, end) - offset, ExtentFlags.Hole | ExtentFlags.Zero))
                    break;
                if (data >= end)
                    break;
                long hole = LSeek(_handle, data, SEEK_HOLE);
                if (hole < 0)
                    throw Failure(Marshal.GetLastPInvokeError(), "extents: lseek SEEK_HOLE");
                // SEEK_HOLE finds at least the end of the file; should it not move (the file changed), call the rest data.
                long stop = hole > data ? Math.Min(hole, end) : end;
                if (!extents.Add(stop - data, ExtentFlags.None))
                    break;
                offset = stop;
            }
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _handle.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>Zeroes the range with fallocate if it can; false when it has to be written.</summary>
    [SupportedOSPlatform("linux")]
    private bool ZeroNative(long offset, long length, bool mayTrim, bool fast)
    {
        if (mayTrim && Volatile.Read(ref _punchWorks) != 0)
        {
            if (Fallocate(_handle, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0)
                return true;
            Unsupported(ref _punchWorks, Marshal.GetLastPInvokeError(), "zero: fallocate PUNCH_HOLE");
        }
        // On a block device, punching a hole is BLKDEV_ZERO_NOFALLBACK (fast or unsupported) but zeroing a range falls
        // back to writing zeroes in the kernel: not fast.
        if (_isBlockDevice && fast)
            return false;
        if (Volatile.Read(ref _zeroRangeWorks) != 0)
        {
            if (Fallocate(_handle, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) == 0)
                return true;
            Unsupported(ref _zeroRangeWorks, Marshal.GetLastPInvokeError(), "zero: fallocate ZERO_RANGE");
        }
        return false;
    }

    private async ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken)
    {
        byte[] zeroes = LazyInitializer.EnsureInitialized(ref s_zeroes, static () => new byte[ZeroChunk]);
        while (length > 0)
        {
            int n = (int)Math.Min(length, ZeroChunk);
            await RandomAccess.WriteAsync(_handle, zeroes.AsMemory(0, n), offset, cancellationToken).ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    /// <summary>Makes completed writes durable: fdatasync on Linux, <see cref="RandomAccess.FlushToDisk"/> elsewhere.</summary>
    private void Sync(string operation)
    {
        if (_readOnly)
            return;
        if (Native)
        {
            if (FDataSync(_handle) != 0)
                throw Failure(Marshal.GetLastPInvokeError(), operation + ": fdatasync");
        }
        else
        {
            RandomAccess.FlushToDisk(_handle);
        }
    }

    /// <summary>An unsupported operation turns its flag off; any other failure throws.</summary>
    private static void Unsupported(ref int works, int errno, string operation)
    {
        if (errno is EOPNOTSUPP or ENOSYS or ENODEV)
        {
            Volatile.Write(ref works, 0);
            return;
        }
        throw Failure(errno, operation);
    }

    private static NbdException Failure(int errno, string operation) =>
        new(errno, "file: " + operation + ": " + Marshal.GetPInvokeErrorMessage(errno));

    private static long AlignUp(long offset) => (offset + DeviceAlignment - 1) & ~(long)(DeviceAlignment - 1);

    private static long AlignDown(long offset) => offset & ~(long)(DeviceAlignment - 1);

    [SupportedOSPlatform("linux")]
    private static unsafe bool DeviceSize(SafeFileHandle handle, out long size)
    {
        // BLKGETSIZE64 is _IOR(0x12, 114, size_t); powerpc puts the direction bits elsewhere. Files fail with ENOTTY.
        nuint request = RuntimeInformation.ProcessArchitecture == Architecture.Ppc64le ? 0x40081272u : 0x80081272u;
        ulong bytes = 0;
        size = 0;
        if (Ioctl(handle, request, &bytes) != 0 || bytes > long.MaxValue)
            return false;
        size = (long)bytes;
        return true;
    }

    [SupportedOSPlatform("linux")]
    private static unsafe int Discard(SafeFileHandle handle, long offset, long length)
    {
        // BLKDISCARD is _IO(0x12, 119) and takes {start, length} in bytes.
        nuint request = RuntimeInformation.ProcessArchitecture == Architecture.Ppc64le ? 0x20001277u : 0x1277u;
        ulong* range = stackalloc ulong[2];
        range[0] = (ulong)offset;
        range[1] = (ulong)length;
        return Ioctl(handle, request, range);
    }

    // 64-bit processes only (see Native): there off_t is 64 bits in every libc, so no *64 entry points are needed.

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int Fallocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int FDataSync(SafeFileHandle fd);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int FAdvise(SafeFileHandle fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static unsafe partial int Ioctl(SafeFileHandle fd, nuint request, void* argument);
}
