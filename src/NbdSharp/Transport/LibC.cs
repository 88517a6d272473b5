using System;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace NbdSharp.Transport;

/// <summary>
/// The few libc calls the Linux socket transport makes directly, and the process calls (posix_spawn, waitpid, kill)
/// that Linux and macOS share.
/// </summary>
internal static unsafe partial class LibC
{
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_NOSIGNAL = 0x4000;
    public const short POLLIN = 0x001;
    public const short POLLOUT = 0x004;
    public const short POLLERR = 0x008;
    public const short POLLHUP = 0x010;
    public const short POLLNVAL = 0x020;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    // The data path's calls return errno themselves (read only when they fail) rather than through SetLastError,
    // whose generated wrapper clears errno before every call and stores it after, three calls into the runtime per
    // system call that ReadyToRun code cannot inline (docs/benchmarks.md). The runtime keeps errno across the return
    // from native code, which is what SetLastError's own wrapper relies on as well.

    /// <summary>recv(2): the bytes received, or -1 with the reason in <paramref name="errno"/>.</summary>
    [SupportedOSPlatform("linux")]
    public static nint Recv(int fd, byte* buffer, nuint length, int flags, out int errno)
    {
        nint n = RecvCall(fd, buffer, length, flags);
        errno = ErrnoIfFailed(n);
        return n;
    }

    /// <summary>sendmsg(2): the bytes sent, or -1 with the reason in <paramref name="errno"/>.</summary>
    [SupportedOSPlatform("linux")]
    public static nint SendMsg(int fd, MsgHdr* message, int flags, out int errno)
    {
        nint n = SendMsgCall(fd, message, flags);
        errno = ErrnoIfFailed(n);
        return n;
    }

    /// <summary>poll(2): the number of ready descriptors, 0 on timeout, or -1 with the reason in <paramref name="errno"/>.</summary>
    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")] // struct pollfd and the POLL* bits are the same there
    public static int Poll(PollFd* fds, nuint count, int timeoutMs, out int errno)
    {
        int r = PollCall(fds, count, timeoutMs);
        errno = ErrnoIfFailed(r);
        return r;
    }

    /// <summary>errno after a call that returned <paramref name="result"/>: read only when it failed (-1), else 0.</summary>
    private static int ErrnoIfFailed(nint result) => result < 0 ? Marshal.GetLastSystemError() : 0;

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "recv")]
    private static partial nint RecvCall(int fd, byte* buffer, nuint length, int flags);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "sendmsg")]
    private static partial nint SendMsgCall(int fd, MsgHdr* message, int flags);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "poll")]
    private static partial int PollCall(PollFd* fds, nuint count, int timeoutMs);

    public const int AF_UNIX = 1;
    public const int AF_VSOCK = 40;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int WNOHANG = 1;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int ECHILD = 10;
    public const short POSIX_SPAWN_SETSIGDEF = 0x04;
    public const short POSIX_SPAWN_SETSIGMASK = 0x08;

    /// <summary>
    /// glibc's posix_spawn_file_actions_t is 80 bytes and posix_spawnattr_t 336; macOS's are a pointer each. Room to
    /// spare for both. (The POSIX_SPAWN_* bits, WNOHANG, ECHILD, SIGKILL and SIGTERM have the same values on both.)
    /// </summary>
    public const int SpawnStructSize = 512;

    /// <summary>sigset_t is 128 bytes on Linux and 4 on macOS.</summary>
    public const int SigSetSize = 128;

    [StructLayout(LayoutKind.Sequential)]
    public struct SockAddrVm
    {
        public ushort Family;
        public ushort Reserved1;
        public uint Port;
        public uint Cid;
        public byte Flags;
        public byte Zero0;
        public byte Zero1;
        public byte Zero2;
    }

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    public static partial int Socket(int domain, int type, int protocol);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* fds);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "connect", SetLastError = true)]
    public static partial int Connect(int fd, void* address, uint length);

    public const int SOCK_NONBLOCK = 0x800;
    public const int SHUT_WR = 1;
    public const int SHUT_RDWR = 2;

    /// <summary>The size of sockaddr_un's sun_path on Linux: a name and its terminating NUL.</summary>
    public const int UnixPathSize = 108;

    public const int O_CLOEXEC = 0x80000;

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe2(int* fds, int flags);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buffer, nuint count);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    public static partial int Bind(int fd, void* address, uint length);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "listen", SetLastError = true)]
    public static partial int Listen(int fd, int backlog);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, int* value, uint length);

    /// <summary>ioctl request: bytes in a socket's send queue, not yet taken by the peer (TCP and Unix sockets).</summary>
    public const uint SIOCOUTQ = 0x5411;
    public const int SOL_SOCKET = 1;
    public const int SO_SNDBUF = 7;

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, nuint request, int* value);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "getsockopt", SetLastError = true)]
    public static partial int GetSockOpt(int fd, int level, int name, int* value, uint* length);

    [SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")] // the same call and signal numbers there
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, int* status, int options);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnp", SetLastError = true)]
    public static partial int PosixSpawnp(int* pid, byte* file, void* fileActions, void* attributes, byte** argv, byte** envp);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_init")]
    public static partial int SpawnFileActionsInit(void* fileActions);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_adddup2")]
    public static partial int SpawnFileActionsAddDup2(void* fileActions, int fd, int newFd);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_addclose")]
    public static partial int SpawnFileActionsAddClose(void* fileActions, int fd);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_destroy")]
    public static partial int SpawnFileActionsDestroy(void* fileActions);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnattr_init")]
    public static partial int SpawnAttrInit(void* attributes);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setflags")]
    public static partial int SpawnAttrSetFlags(void* attributes, short flags);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigdefault")]
    public static partial int SpawnAttrSetSigDefault(void* attributes, void* signals);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnattr_setsigmask")]
    public static partial int SpawnAttrSetSigMask(void* attributes, void* signals);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "posix_spawnattr_destroy")]
    public static partial int SpawnAttrDestroy(void* attributes);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "sigfillset")]
    public static partial int SigFillSet(void* set);

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    [LibraryImport("libc", EntryPoint = "sigemptyset")]
    public static partial int SigEmptySet(void* set);
}

/// <summary>A file descriptor this process opened with libc (a socket), closed with close(2) when released.</summary>
internal sealed class FileDescriptorHandle : SafeHandle
{
    public FileDescriptorHandle(int fd)
        : base(new IntPtr(-1), ownsHandle: true)
    {
        SetHandle(fd);
    }

    public override bool IsInvalid => handle.ToInt64() < 0;

    protected override bool ReleaseHandle() => !OperatingSystem.IsLinux() || LibC.Close((int)handle) == 0;
}
