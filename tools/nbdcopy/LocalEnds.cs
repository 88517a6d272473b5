using System;
using System.IO;
using Microsoft.Win32.SafeHandles;

namespace NbdSharp.Tools.Copy;

/// <summary>A regular file or a block device, read and written with pread/pwrite at any offset (Linux: the end's calls
/// are Linux's).</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed unsafe class FileEnd : CopyEnd
{
    private readonly SafeFileHandle _handle;
    private readonly int _fd;
    private readonly bool _isBlock;
    private readonly bool _seekHole;
    private readonly object _seekLock = new();
    // Writes and zeroes of a regular file, one at a time. Linux serializes them anyway (a buffered write or a fallocate
    // holds the inode's lock exclusively), but a writer that finds the lock taken spins in the kernel for as long as
    // the holder runs: with two connections writing one file, up to a quarter of nbdcopy's CPU (4 GiB into a tmpfs
    // file, perf). Waiting here costs a short spin and a futex. Block devices take no such lock and are left alone.
    private readonly System.Threading.Lock _writeLock = new();
    // A run of data SEEK_HOLE has already walked: [_dataStart, _dataEnd). Finding the next hole walks the page
    // cache up to it, to the end of a file with none, so a dense file's extents asked range by range cost a walk of
    // the rest of the file each; ranges inside the known run are answered without a system call. Only data is
    // remembered: if the file gains a hole during the copy, the range is read and its zeroes found as ever.
    private long _dataStart;
    private long _dataEnd;
    private readonly int _sectorSize = 4096;
    private bool _canPunchHole = true;
    private bool _canZeroRange = true;
    private bool _canFallocate;
    private bool _canZeroOut;

    public FileEnd(string name, int fd, bool ownsFd, LibC.FileStatus status)
        : base(name, "file_ops")
    {
        _fd = fd;
        _handle = new SafeFileHandle(fd, ownsFd);
        _isBlock = status.IsBlockDevice;
        if (_isBlock)
        {
            Size = LibC.Lseek(fd, 0, LibC.SEEK_END);
            if (Size < 0 || LibC.Lseek(fd, 0, LibC.SEEK_SET) < 0)
                throw Failure("lseek");
            uint optimal = 0;
            Preferred = LibC.Ioctl(fd, LibC.BLKIOOPT, &optimal) == 0 && CopyOptions.IsPowerOfTwo(optimal) ? optimal : 4096;
            int sector = 0;
            if (LibC.Ioctl(fd, LibC.BLKSSZGET, &sector) == 0 && sector > 0)
                _sectorSize = sector;
            _canZeroOut = true;
        }
        else
        {
            Size = status.Size;
            Preferred = CopyOptions.IsPowerOfTwo(status.BlockSize) ? status.BlockSize : 4096;
            _canFallocate = true;
        }
        long firstHole = LibC.Lseek(fd, 0, LibC.SEEK_HOLE);
        _seekHole = firstHole >= 0;
        if (firstHole > 0)
            _dataEnd = firstHole;
    }

    public override bool CanMultiConn => true;

    public override bool CanExtents => _seekHole;

    public override bool Truncate(long size)
    {
        if (_isBlock)
            return false;
        // Empty first, so the whole file is one hole and reads as zeroes.
        if (LibC.Ftruncate(_fd, 0) != 0 || LibC.Ftruncate(_fd, size) != 0)
            throw Failure("truncate");
        Size = size;
        return true;
    }

    private void ReadExactly(Span<byte> buffer, long offset)
    {
        if (ReadFully(buffer, offset) < buffer.Length)
            throw new ToolException(Name + ": unexpected end of file");
    }

    public override int ReadSome(Span<byte> buffer, long offset) => ReadFully(buffer, offset);

    public override void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done)
    {
        ReadExactly(buffer.Span, offset);
        CompleteInline(done);
    }

    public override void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done)
    {
        Write(buffer.Span, offset);
        CompleteInline(done);
    }

    public override bool StartZero(int connection, long offset, long length, bool allocate, CompletionCallback done)
    {
        if (!Zero(offset, length, allocate))
            return false;
        CompleteInline(done);
        return true;
    }

    private int ReadFully(Span<byte> buffer, long offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(_handle, buffer[done..], offset + done);
            if (n == 0)
                break;
            done += n;
        }
        return done;
    }

    public override void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        if (_isBlock)
        {
            RandomAccess.Write(_handle, buffer, offset);
            return;
        }
        lock (_writeLock)
            RandomAccess.Write(_handle, buffer, offset);
    }

    public override bool Zero(long offset, long length, bool allocate)
    {
        if (_isBlock)
            return ZeroRange(offset, length, allocate);
        lock (_writeLock)
            return ZeroRange(offset, length, allocate);
    }

    /// <summary>libnbd's order: punch a hole (unless allocating), zero the range, punch then allocate (files),
    /// BLKZEROOUT (aligned ranges of block devices); what fails once is not tried again.</summary>
    private bool ZeroRange(long offset, long length, bool allocate)
    {
        if (!allocate && _canPunchHole)
        {
            if (LibC.Fallocate(_fd, LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset, length) == 0)
                return true;
            _canPunchHole = false;
        }
        if (_canZeroRange)
        {
            if (LibC.Fallocate(_fd, LibC.FALLOC_FL_ZERO_RANGE, offset, length) == 0)
                return true;
            _canZeroRange = false;
        }
        if (_canPunchHole && _canFallocate)
        {
            if (LibC.Fallocate(_fd, LibC.FALLOC_FL_PUNCH_HOLE | LibC.FALLOC_FL_KEEP_SIZE, offset, length) == 0)
            {
                if (LibC.Fallocate(_fd, 0, offset, length) == 0)
                    return true;
                _canFallocate = false;
            }
            else
            {
                _canPunchHole = false;
            }
        }
        else if (_canZeroOut && ((offset | length) & (_sectorSize - 1)) == 0)
        {
            ulong* range = stackalloc ulong[2];
            range[0] = (ulong)offset;
            range[1] = (ulong)length;
            if (LibC.Ioctl(_fd, LibC.BLKZEROOUT, range) == 0)
                return true;
            _canZeroOut = false;
        }
        return false;
    }

    public override void GetExtents(int connection, long offset, long count, ExtentList extents)
    {
        if (!_seekHole)
        {
            base.GetExtents(connection, offset, count, extents);
            return;
        }
        extents.Clear();
        long end = offset + count;
        lock (_seekLock)
        {
            while (offset < end)
            {
                if (offset >= _dataStart && offset < _dataEnd)
                {
                    long known = Math.Min(_dataEnd, end);
                    extents.Add(new Extent(offset, known - offset, false));
                    offset = known;
                    continue;
                }
                long data = LibC.Lseek(_fd, offset, LibC.SEEK_DATA);
                if (data < 0)
                {
                    if (LibC.Errno != LibC.ENXIO)
                        throw Failure("lseek: SEEK_DATA");
                    data = end;
                }
                data = Math.Min(data, end);
                if (data > offset)
                    extents.Add(new Extent(offset, data - offset, true));
                offset = data;
                if (offset >= end)
                    break;
                long hole = LibC.Lseek(_fd, offset, LibC.SEEK_HOLE);
                if (hole < 0)
                    throw Failure("lseek: SEEK_HOLE");
                if (hole <= offset)
                    throw new ToolException(Name + ": lseek: SEEK_HOLE made no progress");
                _dataStart = offset;
                _dataEnd = hole;
                hole = Math.Min(hole, end);
                extents.Add(new Extent(offset, hole - offset, false));
                offset = hole;
            }
        }
    }

    public override void Flush()
    {
        if (LibC.Fsync(_fd) != 0)
            throw Failure("fsync");
    }

    public override void Close() => Dispose();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _handle.Dispose();
        base.Dispose(disposing);
    }

    private ToolException Failure(string what) => new(Name + ": " + what + ": " + Errno.Describe(LibC.Errno));

    /// <summary>
    /// Opens a local name as libnbd does: "-" is stdin or stdout; a destination that does not exist is created
    /// (0644, never over an existing file: block devices are opened as they are); regular files and block devices
    /// become a <see cref="FileEnd"/>, anything else (a pipe, a socket, a character device) a <see cref="PipeEnd"/>.
    /// </summary>
    public static CopyEnd Open(string name, bool writing)
    {
        int fd;
        bool ownsFd = true;
        if (name == "-")
        {
            fd = writing ? 1 : 0;
            ownsFd = false;
            if (writing && LibC.IsATty(fd) == 1)
                throw new ToolException("refusing to write to tty");
        }
        else
        {
            fd = LibC.Open(name, (writing ? LibC.O_WRONLY : LibC.O_RDONLY) | LibC.O_CLOEXEC, 0);
            if (fd < 0 && writing)
                fd = LibC.Open(name, LibC.O_WRONLY | LibC.O_TRUNC | LibC.O_CREAT | LibC.O_EXCL | LibC.O_CLOEXEC, 0x1a4 /* 0644 */);
            if (fd < 0)
                throw new ToolException(name + ": " + Errno.Describe(LibC.Errno));
        }
        if (LibC.FStat(fd, out LibC.FileStatus status) != 0)
        {
            int errno = LibC.Errno;
            if (ownsFd)
                _ = LibC.Close(fd);
            throw new ToolException(name + ": " + Errno.Describe(errno));
        }
        // "-" redirected from or to a regular file is that file (read and written by offset), as in libnbd.
        if (status.IsRegular || status.IsBlockDevice)
            return new FileEnd(name, fd, ownsFd, status);
        if (status.IsDirectory)
        {
            _ = LibC.Close(fd);
            throw new ToolException(name + ": Is a directory");
        }
        return new PipeEnd(name, new SafeFileHandle(fd, ownsFd), writing);
    }
}

/// <summary>A stream that can only be read or written in order: stdin, stdout, a pipe, a character device.
/// Its size is unknown; it forces the synchronous copy.</summary>
internal sealed class PipeEnd : CopyEnd
{
    private readonly Stream _stream;

    public PipeEnd(string name, SafeFileHandle handle, bool writing)
        : this(name, new FileStream(handle, writing ? FileAccess.Write : FileAccess.Read, 0))
    {
    }

    public PipeEnd(string name, Stream stream)
        : base(name, "pipe_ops") =>
        _stream = stream;

    public override int ReadSome(Span<byte> buffer, long offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = _stream.Read(buffer[done..]);
            if (n == 0)
                break;
            done += n;
        }
        return done;
    }

    public override void Write(ReadOnlySpan<byte> buffer, long offset) => _stream.Write(buffer);

    public override void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done) =>
        throw new InvalidOperationException("a pipe is only copied synchronously");

    public override void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done) =>
        throw new InvalidOperationException("a pipe is only copied synchronously");

    public override void Close() => Dispose();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _stream.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary><c>null:</c>: a destination of any size that forgets what it is given.</summary>
internal sealed class NullEnd : CopyEnd
{
    public NullEnd(string name)
        : base(name, "null_ops") => Size = long.MaxValue;

    public override bool CanMultiConn => true;

    public override bool DiscardsData => true;

    public override int ReadSome(Span<byte> buffer, long offset) => 0;

    public override void Write(ReadOnlySpan<byte> buffer, long offset)
    {
    }

    public override bool Zero(long offset, long length, bool allocate) => true;

    public override void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done) =>
        throw new InvalidOperationException("null: is only a destination");

    public override void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done) =>
        CompleteInline(done);

    public override bool StartZero(int connection, long offset, long length, bool allocate, CompletionCallback done)
    {
        CompleteInline(done);
        return true;
    }
}
