using System.Runtime.InteropServices;

namespace NbdSharp.Tools.Copy;

/// <summary>The few Linux calls .NET does not expose: open with a mode, statx, lseek's SEEK_DATA/SEEK_HOLE,
/// fallocate, ftruncate and the block-device ioctls.</summary>
internal static unsafe partial class LibC
{
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_TRUNC = 0x200;
    public const int O_CLOEXEC = 0x80000;

    public const int SEEK_SET = 0;
    public const int SEEK_END = 2;
    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    public const int FALLOC_FL_ZERO_RANGE = 0x10;

    public const nuint BLKSSZGET = 0x1268;
    public const nuint BLKIOOPT = 0x1279;
    public const nuint BLKZEROOUT = 0x127f;

    public const int ENXIO = 6;

    private const int AT_EMPTY_PATH = 0x1000;
    private const uint STATX_BASIC_STATS = 0x7ff;

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags, int mode);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long length);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int fd);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, void* argument);

    public const int MADV_HUGEPAGE = 14;

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(void* address, nuint length, int advice);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buffer, nuint count);

    public const short POLLIN = 1;
    public const short POLLOUT = 4;

    /// <summary>struct pollfd.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [System.Runtime.Versioning.SupportedOSPlatform("macos")] // struct pollfd and the POLL* bits are the same there
    [LibraryImport("libc", EntryPoint = "poll")] // its errno is never read: a failed poll is retried
    public static partial int Poll(PollFd* fds, nuint count, int timeout);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "isatty")]
    public static partial int IsATty(int fd);

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static partial int Statx(int dirfd, byte* path, int flags, uint mask, byte* buffer);

    /// <summary>What fstat says about a descriptor: its type bits, size and preferred I/O size.</summary>
    public readonly record struct FileStatus(uint Mode, long Size, uint BlockSize)
    {
        public bool IsRegular => (Mode & 0xF000) == 0x8000;
        public bool IsBlockDevice => (Mode & 0xF000) == 0x6000;
        public bool IsDirectory => (Mode & 0xF000) == 0x4000;
    }

    /// <summary>fstat through statx (whose layout is the same on every architecture).</summary>
    /// <returns>0 and the status, or -1 with errno set.</returns>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static int FStat(int fd, out FileStatus status)
    {
        byte* buffer = stackalloc byte[256];
        byte empty = 0;
        int r = Statx(fd, &empty, AT_EMPTY_PATH, STATX_BASIC_STATS, buffer);
        status = r == 0 ? new FileStatus(*(ushort*)(buffer + 28), *(long*)(buffer + 40), *(uint*)(buffer + 4)) : default;
        return r;
    }

    /// <summary>The errno of the last call made through this class.</summary>
    public static int Errno => Marshal.GetLastPInvokeError();
}
