using System.IO;

namespace NbdSharp.Tools.Dump;

/// <summary>
/// stdout's reader went away (<c>nbddump ... | head</c>). libnbd's nbddump dies of SIGPIPE then, silently; .NET
/// ignores SIGPIPE, so the write fails with EPIPE and the tool ends quietly instead.
/// </summary>
internal sealed class OutputClosedException : IOException
{
    /// <summary>The exit status a shell reports for a process killed by SIGPIPE (128 + 13).</summary>
    public const int ExitCode = 141;

    private const int EPIPE = 32;

    /// <summary>Wraps the failed write.</summary>
    public OutputClosedException(IOException innerException)
        : base("stdout was closed", innerException)
    {
    }

    /// <summary>Whether <paramref name="e"/> is a write to a pipe nobody reads.</summary>
    public static bool IsBrokenPipe(IOException e) => e.HResult == EPIPE;
}
