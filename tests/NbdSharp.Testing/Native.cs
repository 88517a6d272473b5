using System.Runtime.InteropServices;

namespace NbdSharp.Testing;

/// <summary>libc calls the test helpers need.</summary>
public static partial class Native
{
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGCONT = 18;
    public const int SIGSTOP = 19;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    public const short POLLIN = 1;
    public const short POLLOUT = 4;

    /// <summary>
    /// Whether this test run goes over the library's portable data path (NBDSHARP_PORTABLE_SOCKETS=1, as test.sh's
    /// second run does): no libc calls, and a command server reached over two pipes, which have no AioGetFd.
    /// </summary>
    public static bool PortablePath => System.Environment.GetEnvironmentVariable("NBDSHARP_PORTABLE_SOCKETS") == "1";

    /// <summary>poll(2) on one descriptor for reading (the library's own helper); true when it is readable.</summary>
    public static bool WaitReadable(int fd, int timeoutMs) => NbdSharp.Transport.Connectors.FdReadable(fd, timeoutMs);

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int PollCore(PollFd* fds, nuint count, int timeout);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static unsafe partial int IoctlCore(int fd, nuint request, int* value);

    /// <summary>The bytes sent on socket <paramref name="fd"/> that the peer has not read yet (SIOCOUTQ), or -1.</summary>
    public static unsafe int UnreadByPeer(int fd)
    {
        int queued;
        return IoctlCore(fd, 0x5411, &queued) == 0 ? queued : -1;
    }

    /// <summary>poll(2) on one descriptor for <paramref name="events"/>; the events that happened (0 on timeout).</summary>
    public static unsafe short Poll(int fd, short events, int timeoutMs)
    {
        var pfd = new PollFd { Fd = fd, Events = events };
        return PollCore(&pfd, 1, timeoutMs) > 0 ? pfd.REvents : (short)0;
    }
}
