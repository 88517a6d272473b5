using System;
using System.IO;

namespace NbdSharp.Tools;

/// <summary>
/// The outer shell of every tool: runs its body and turns any failure into one line on stderr and a non-zero exit,
/// never a stack trace.
/// </summary>
public static class ToolMain
{
    /// <summary>Runs <paramref name="body"/> and returns the exit code to use.</summary>
    /// <param name="program">The program name that starts error lines (e.g. "nbdinfo").</param>
    /// <param name="body">The tool; returns its exit code.</param>
    /// <returns>The exit code.</returns>
    public static int Run(string program, Func<int> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        try
        {
            int code = body();
            Console.Out.Flush();
            return code;
        }
        catch (ToolException e)
        {
            return Fail(program, e.Message, e.ExitCode);
        }
        catch (NbdException e)
        {
            // libnbd's tools print nbd_get_error(): the message already names the call.
            return Fail(program, e.Message, 1);
        }
        catch (IOException e)
        {
            return Fail(program, e.Message, 1);
        }
        catch (UnauthorizedAccessException e)
        {
            return Fail(program, e.Message, 1);
        }
    }

    /// <summary>Writes <c>program: message</c> to stderr and returns <paramref name="exitCode"/>.</summary>
    /// <param name="program">The program name.</param>
    /// <param name="message">The problem.</param>
    /// <param name="exitCode">The exit code to return.</param>
    /// <returns><paramref name="exitCode"/>.</returns>
    public static int Fail(string program, string message, int exitCode)
    {
        try
        {
            Console.Out.Flush();
        }
        catch (IOException)
        {
            // stdout is gone (a closed pipe): the error line on stderr still matters.
        }
        Console.Error.WriteLine(program + ": " + message.ReplaceLineEndings(" "));
        return exitCode;
    }
}
