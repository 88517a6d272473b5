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

    /// <summary>poll(2) on one descriptor for reading (the library's own helper); true when it is readable.</summary>
    public static bool WaitReadable(int fd, int timeoutMs) => NbdSharp.Transport.Connectors.FdReadable(fd, timeoutMs);
}
