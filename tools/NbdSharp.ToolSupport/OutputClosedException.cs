using System.IO;

namespace NbdSharp.Tools;

/// <summary>
/// stdout's reader went away (<c>nbddump ... | head</c>). libnbd's nbddump dies of SIGPIPE then, silently; .NET
/// ignores SIGPIPE, so the write fails with EPIPE and the tool ends quietly instead.
/// </summary>
public sealed class OutputClosedException : IOException
{
    /// <summary>The exit status a shell reports for a process killed by SIGPIPE (128 + 13).</summary>
    public const int ExitCode = 141;

    private const int EPIPE = 32;

    /// <summary>Wraps the failed write.</summary>
    /// <param name="innerException">The write that failed with EPIPE.</param>
    public OutputClosedException(IOException innerException)
        : base("stdout was closed", innerException)
    {
    }

    /// <summary>Whether <paramref name="e"/> is a write to a pipe nobody reads.</summary>
    /// <param name="e">The failure of a write.</param>
    /// <returns>Whether it was EPIPE.</returns>
    public static bool IsBrokenPipe(IOException e)
    {
        System.ArgumentNullException.ThrowIfNull(e);
        return e.HResult == EPIPE;
    }
}
