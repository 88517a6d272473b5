using System;
using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace NbdSharp.Tools.Fuse;

/// <summary>
/// The file system nbdfuse mounts: a folder holding one file (or, in file mode, the file itself) whose bytes are the
/// export's. libfuse calls these operations on its own threads, many at once; each one is a synchronous NbdSharp call
/// on one of the connections, taken in turn, so as many commands are in flight as FUSE has requests. libfuse's
/// high-level API needs static entry points, so the state is static: one file system per process.
/// </summary>
internal static unsafe class FuseFileSystem
{
    private const int ENOENT = 2, EIO = 5, EACCES = 13, EOPNOTSUPP = 95;
    private const int O_ACCMODE = 3, O_RDONLY = 0;
    private const int FALLOC_FL_PUNCH_HOLE = 0x02, FALLOC_FL_ZERO_RANGE = 0x10;
    private const uint S_IFREG = 0x8000, S_IFDIR = 0x4000;

    /// <summary>The largest request passed to the server at once (libnbd's nbdfuse: 32 MiB; FUSE sends far less).</summary>
    private const int MaxRequest = 32 * 1024 * 1024;

    private static NbdHandle[] s_handles = [];
    private static int s_next;
    private static byte[] s_fileName = [];
    private static bool s_fileMode;
    private static bool s_readOnly;
    private static bool s_verbose;
    private static ulong s_size;
    private static long s_seconds;
    private static long s_nanoseconds;
    private static uint s_uid;
    private static uint s_gid;
    private static bool s_canFlush, s_canTrim, s_canZero;
    private static ulong s_alignment;
    private static ReaderWriterLockSlim? s_alignLock;

    /// <summary>Sets what the operations serve; called once, before mounting.</summary>
    public static void Configure(NbdHandle[] handles, string fileName, bool fileMode, bool readOnly, bool verbose)
    {
        s_handles = handles;
        s_fileName = Encoding.UTF8.GetBytes(fileName);
        s_fileMode = fileMode;
        s_readOnly = readOnly;
        s_verbose = verbose;
        NbdHandle first = handles[0];
        s_size = (ulong)first.GetSize();
        s_canFlush = first.CanFlush();
        s_canTrim = first.CanTrim();
        s_canZero = first.CanZero();
        long minimum = first.GetBlockSize(SizeKind.Minimum);
        s_alignment = minimum > 1 ? (ulong)minimum : 1;
        // Read-modify-write of a partial block must not interleave with another write of the same block.
        s_alignLock = s_alignment > 1 ? new ReaderWriterLockSlim(LockRecursionPolicy.NoRecursion) : null;
        var now = DateTimeOffset.UtcNow;
        s_seconds = now.ToUnixTimeSeconds();
        s_nanoseconds = (now.ToUnixTimeMilliseconds() % 1000) * 1_000_000;
        s_uid = LibC.GetEuid();
        s_gid = LibC.GetEgid();
    }

    /// <summary>Fills <c>struct fuse_operations</c> (zeroed native memory of <see cref="Fuse3.OperationCount"/> pointers).</summary>
    public static void FillOperations(nint* operations)
    {
        operations[Fuse3.OpGetattr] = (nint)(delegate* unmanaged<byte*, byte*, void*, int>)&Getattr;
        operations[Fuse3.OpReaddir] = (nint)(delegate* unmanaged<byte*, void*, delegate* unmanaged<void*, byte*, void*, long, int, int>, long, void*, int, int>)&Readdir;
        operations[Fuse3.OpOpen] = (nint)(delegate* unmanaged<byte*, int*, int>)&Open;
        operations[Fuse3.OpRead] = (nint)(delegate* unmanaged<byte*, byte*, nuint, long, void*, int>)&Read;
        operations[Fuse3.OpWrite] = (nint)(delegate* unmanaged<byte*, byte*, nuint, long, void*, int>)&Write;
        operations[Fuse3.OpFsync] = (nint)(delegate* unmanaged<byte*, int, void*, int>)&Fsync;
        operations[Fuse3.OpFallocate] = (nint)(delegate* unmanaged<byte*, int, long, long, void*, int>)&Fallocate;
    }

    [UnmanagedCallersOnly]
    private static int Getattr(byte* path, byte* stat, void* fileInfo)
    {
        Debug("getattr", path, "");
        uint mode = s_readOnly ? 0x124u /* 0444 */ : 0x1b6u /* 0666 */;
        if (IsTheFile(path))
            NativeStat.Fill(stat, S_IFREG | mode, 1, (long)s_size, s_uid, s_gid, s_seconds, s_nanoseconds);
        else if (path[0] == '/' && path[1] == 0)
            NativeStat.Fill(stat, S_IFDIR | (mode & 0x49u /* 0111 */), 2, 0, s_uid, s_gid, s_seconds, s_nanoseconds);
        else
            return -ENOENT;
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int Readdir(byte* path, void* buffer, delegate* unmanaged<void*, byte*, void*, long, int, int> filler, long offset,
        void* fileInfo, int flags)
    {
        Debug("readdir", path, "");
        if (!(path[0] == '/' && path[1] == 0))
            return -ENOENT;
        byte* name = stackalloc byte[s_fileName.Length + 1];
        s_fileName.CopyTo(new Span<byte>(name, s_fileName.Length));
        name[s_fileName.Length] = 0;
        byte* dot = stackalloc byte[] { (byte)'.', 0, (byte)'.', (byte)'.', 0 };
        filler(buffer, dot, null, 0, 0);
        filler(buffer, dot + 2, null, 0, 0);
        filler(buffer, name, null, 0, 0);
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int Open(byte* path, int* fileInfo)
    {
        // struct fuse_file_info starts with the open(2) flags.
        int flags = *fileInfo;
        Debug("open", path, "flags=" + flags);
        if (!IsTheFile(path))
            return -ENOENT;
        if (s_readOnly && (flags & O_ACCMODE) != O_RDONLY)
            return -EACCES;
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int Read(byte* path, byte* buffer, nuint count, long offset, void* fileInfo) =>
        ReadOrWrite("read", path, buffer, count, offset, write: false);

    [UnmanagedCallersOnly]
    private static int Write(byte* path, byte* buffer, nuint count, long offset, void* fileInfo) =>
        s_readOnly ? -EACCES : ReadOrWrite("write", path, buffer, count, offset, write: true);

    /// <summary>A read or a write of the file: the bytes transferred (fewer at the end of the export), or -errno.</summary>
    private static int ReadOrWrite(string operation, byte* path, byte* buffer, nuint count, long offset, bool write)
    {
        if (s_verbose)
            Debug(operation, path, $"count={count}, offset={offset}");
        if (!IsTheFile(path))
            return -ENOENT;
        int length = Clamp(count, offset);
        if (length == 0)
            return 0;
        try
        {
            Transfer(new Span<byte>(buffer, length), (ulong)offset, write);
            return length;
        }
#pragma warning disable CA1031 // Whatever went wrong is an errno for the program using the file.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Failed(e);
        }
    }

    [UnmanagedCallersOnly]
    private static int Fsync(byte* path, int dataSync, void* fileInfo)
    {
        Debug("fsync", path, "datasync=" + dataSync);
        if (s_readOnly || !s_canFlush)
            return 0;
        try
        {
            Next().Flush();
            return 0;
        }
#pragma warning disable CA1031
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Failed(e);
        }
    }

    [UnmanagedCallersOnly]
    private static int Fallocate(byte* path, int mode, long offset, long length, void* fileInfo)
    {
        Debug("fallocate", path, $"mode={mode}, offset={offset}, len={length}");
        if (s_readOnly)
            return -EACCES;
        if (offset < 0 || length <= 0 || (ulong)offset >= s_size)
            return 0;
        ulong count = Math.Min((ulong)length, s_size - (ulong)offset);
        try
        {
            if ((mode & FALLOC_FL_PUNCH_HOLE) != 0)
            {
                if (!s_canTrim)
                    return -EOPNOTSUPP;
                Next().Trim(count, (ulong)offset);
                return 0;
            }
            if ((mode & FALLOC_FL_ZERO_RANGE) != 0)
            {
                if (s_canZero)
                {
                    Next().Zero(count, (ulong)offset);
                    return 0;
                }
                // Emulated with writes of zeroes, as libnbd's nbdfuse does.
                byte[] zeroes = ArrayPool<byte>.Shared.Rent(1 << 20);
                try
                {
                    Array.Clear(zeroes);
                    for (ulong done = 0; done < count;)
                    {
                        int n = (int)Math.Min((ulong)zeroes.Length, count - done);
                        Transfer(zeroes.AsSpan(0, n), (ulong)offset + done, write: true);
                        done += (ulong)n;
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(zeroes);
                }
                return 0;
            }
            return -EOPNOTSUPP;
        }
#pragma warning disable CA1031
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Failed(e);
        }
    }

    /// <summary>
    /// Reads or writes <paramref name="data"/> at <paramref name="offset"/>. A request the server's minimum block size
    /// does not allow is widened to whole blocks: read, merged and written back for a write (read-modify-write).
    /// </summary>
    private static void Transfer(Span<byte> data, ulong offset, bool write)
    {
        ulong alignment = s_alignment;
        bool aligned = alignment == 1 || (offset % alignment == 0 && (ulong)data.Length % alignment == 0);
        if (aligned)
        {
            if (s_alignLock == null)
            {
                Direct(data, offset, write);
                return;
            }
            s_alignLock.EnterReadLock();
            try
            {
                Direct(data, offset, write);
            }
            finally
            {
                s_alignLock.ExitReadLock();
            }
            return;
        }
        ulong start = offset / alignment * alignment;
        ulong end = Math.Min((offset + (ulong)data.Length + alignment - 1) / alignment * alignment, RoundUp(s_size, alignment));
        int span = checked((int)(end - start));
        byte[] block = ArrayPool<byte>.Shared.Rent(span);
        try
        {
            Span<byte> whole = block.AsSpan(0, span);
            Span<byte> part = whole.Slice((int)(offset - start), data.Length);
            if (!write)
            {
                s_alignLock!.EnterReadLock();
                try
                {
                    Direct(whole, start, write: false);
                }
                finally
                {
                    s_alignLock.ExitReadLock();
                }
                part.CopyTo(data);
                return;
            }
            s_alignLock!.EnterWriteLock();
            try
            {
                Direct(whole, start, write: false);
                data.CopyTo(part);
                Direct(whole, start, write: true);
            }
            finally
            {
                s_alignLock.ExitWriteLock();
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(block);
        }
    }

    private static void Direct(Span<byte> data, ulong offset, bool write)
    {
        NbdHandle handle = Next();
        if (write)
            handle.Pwrite(data, offset);
        else
            handle.Pread(data, offset);
    }

    private static ulong RoundUp(ulong value, ulong alignment) => (value + alignment - 1) / alignment * alignment;

    /// <summary>The connections in turn.</summary>
    private static NbdHandle Next()
    {
        NbdHandle[] handles = s_handles;
        return handles.Length == 1 ? handles[0] : handles[(int)((uint)Interlocked.Increment(ref s_next) % (uint)handles.Length)];
    }

    /// <summary>The length to transfer: at most <see cref="MaxRequest"/>, and never past the end of the export.</summary>
    private static int Clamp(nuint count, long offset)
    {
        if (offset < 0 || (ulong)offset >= s_size)
            return 0;
        ulong n = Math.Min((ulong)count, MaxRequest);
        return (int)Math.Min(n, s_size - (ulong)offset);
    }

    /// <summary>
    /// The errno for a failed command, reported as libnbd's nbdfuse reports it (its message on stderr): the server's
    /// own error for a command it failed, EIO otherwise.
    /// </summary>
    private static int Failed(Exception exception)
    {
        try
        {
            Console.Error.WriteLine(exception.Message);
        }
#pragma warning disable CA1031 // stderr being gone must not hide the errno.
        catch
#pragma warning restore CA1031
        {
        }
        // A command the server failed carries its error (EIO, ENOSPC, EPERM, ...); anything else (the connection
        // broke, the handle is dead) is an I/O error for the program using the file.
        return exception is NbdServerException { Errno: > 0 } server ? -server.Errno : -EIO;
    }

    /// <summary>Whether <paramref name="path"/> names the file ("/NAME"; any path in file mode).</summary>
    private static bool IsTheFile(byte* path)
    {
        if (s_fileMode)
            return true;
        if (path[0] != '/')
            return false;
        ReadOnlySpan<byte> rest = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(path + 1);
        return rest.SequenceEqual(s_fileName);
    }

    private static void Debug(string operation, byte* path, string detail)
    {
        if (!s_verbose)
            return;
        string name = Marshal.PtrToStringUTF8((nint)path) ?? "";
        Console.Error.WriteLine($"nbdfuse: {operation}: path={name}" + (detail.Length > 0 ? ", " + detail : ""));
    }
}

/// <summary>Writes <c>struct stat</c> as glibc lays it out on Linux x86-64 and arm64.</summary>
internal static unsafe class NativeStat
{
    /// <summary>Fills the structure at <paramref name="stat"/> (zeroing what is not given).</summary>
    public static void Fill(byte* stat, uint mode, uint links, long size, uint uid, uint gid, long seconds, long nanoseconds)
    {
        if (RuntimeInformation.ProcessArchitecture == Architecture.X64)
        {
            new Span<byte>(stat, 144).Clear();
            *(ulong*)(stat + 16) = links;
            *(uint*)(stat + 24) = mode;
            *(uint*)(stat + 28) = uid;
            *(uint*)(stat + 32) = gid;
        }
        else
        {
            // The generic layout (arm64, and others that use it).
            new Span<byte>(stat, 128).Clear();
            *(uint*)(stat + 16) = mode;
            *(uint*)(stat + 20) = links;
            *(uint*)(stat + 24) = uid;
            *(uint*)(stat + 28) = gid;
        }
        *(long*)(stat + 48) = size;
        for (int time = 72; time <= 104; time += 16)
        {
            *(long*)(stat + time) = seconds;
            *(long*)(stat + time + 8) = nanoseconds;
        }
    }

    /// <summary>Whether this machine's <c>struct stat</c> is one <see cref="Fill"/> knows.</summary>
    public static bool Supported => OperatingSystem.IsLinux() &&
        RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.Arm64;
}
