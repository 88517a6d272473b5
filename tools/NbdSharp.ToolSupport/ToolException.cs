using System;

namespace NbdSharp.Tools;

/// <summary>A failure a tool reports as one line on stderr (<c>prog: message</c>) before exiting with <see cref="ExitCode"/>.</summary>
public sealed class ToolException : Exception
{
    /// <summary>Creates the error.</summary>
    /// <param name="message">What went wrong, without the program name.</param>
    /// <param name="exitCode">The exit code (1 unless the tool documents another).</param>
    public ToolException(string message, int exitCode)
        : base(message)
    {
        ExitCode = exitCode;
    }

    /// <summary>Creates the error with exit code 1.</summary>
    /// <param name="message">What went wrong, without the program name.</param>
    public ToolException(string message)
        : this(message, 1)
    {
    }

    /// <summary>Creates the error with exit code 1 and a cause.</summary>
    /// <param name="message">What went wrong, without the program name.</param>
    /// <param name="innerException">The cause.</param>
    public ToolException(string message, Exception innerException)
        : base(message, innerException)
    {
        ExitCode = 1;
    }

    /// <summary>Creates an error with a generic message.</summary>
    public ToolException()
        : this("failed")
    {
    }

    /// <summary>The process exit code.</summary>
    public int ExitCode { get; }
}
