using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace NbdSharp.Tools.Server;

/// <summary>The few POSIX calls the command needs for nbdkit's process habits.</summary>
[SupportedOSPlatform("linux")]
[SupportedOSPlatform("macos")]
internal static partial class Native
{
    public const int PrSetPdeathsig = 1;
    public const int SigTerm = 15;

    [LibraryImport("libc", EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport("libc", EntryPoint = "setsid", SetLastError = true)]
    public static partial int SetSid();

    [LibraryImport("libc", EntryPoint = "getppid")]
    public static partial int GetPpid();

    [LibraryImport("libc", EntryPoint = "dup2", SetLastError = true)]
    public static partial int Dup2(int oldFd, int newFd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);
}
