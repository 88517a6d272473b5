using System.Runtime.InteropServices;

namespace NbdSharp.Testing;

/// <summary>libc calls the test helpers need.</summary>
public static partial class Native
{
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGCONT = 18;
    public const int SIGSTOP = 19;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    public const short POLLIN = 0x001;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int PollNative(PollFd* fds, nuint count, int timeout);

    /// <summary>poll(2) on one descriptor for reading; true when it is readable (or has an error or hang-up).</summary>
    public static unsafe bool WaitReadable(int fd, int timeoutMs)
    {
        var entry = new PollFd { Fd = fd, Events = POLLIN };
        return PollNative(&entry, 1, timeoutMs) > 0;
    }
}
