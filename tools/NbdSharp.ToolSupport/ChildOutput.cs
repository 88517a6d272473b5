using System;
using System.Diagnostics;
using System.Text;

namespace NbdSharp.Tools;

/// <summary>Runs a helper program and reads what it prints, as a shell's <c>$(...)</c> does.</summary>
public static class ChildOutput
{
    /// <summary>The most output kept; a helper that says more is read to its end, the rest dropped.</summary>
    private const int Limit = 64 * 1024;

    /// <summary>
    /// Runs <paramref name="argv"/> (the program found on PATH) with our stdin and stderr, waits for it, and returns the
    /// first line it wrote to stdout: null when it cannot be started or writes nothing. On Linux it is started with
    /// posix_spawn and read through a pipe (no thread, none of <see cref="Process"/>'s set-up, which costs a JIT-compiled
    /// tool about 20 ms); elsewhere with <see cref="Process"/>.
    /// </summary>
    /// <param name="argv">The program and its arguments.</param>
    /// <returns>The first line, without its line ending, or null.</returns>
    public static string? FirstLine(params string[] argv)
    {
        ArgumentNullException.ThrowIfNull(argv);
        if (argv.Length == 0)
            throw new ArgumentException("the command must not be empty", nameof(argv));
        string? text = OperatingSystem.IsLinux() ? RunWithSpawn(argv) : RunWithProcess(argv);
        if (string.IsNullOrEmpty(text))
            return null;
        int end = text.IndexOf('\n', StringComparison.Ordinal);
        return (end < 0 ? text : text[..end]).TrimEnd('\r');
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static string? RunWithSpawn(string[] argv)
    {
        try
        {
            return Encoding.UTF8.GetString(NbdSharp.Transport.Subprocess.RunForOutput(argv, Limit, argv[0]));
        }
        catch (NbdException)
        {
            return null; // not on PATH
        }
    }

    private static string? RunWithProcess(string[] argv)
    {
        var info = new ProcessStartInfo(argv[0]) { UseShellExecute = false, RedirectStandardOutput = true };
        for (int i = 1; i < argv.Length; i++)
            info.ArgumentList.Add(argv[i]);
        try
        {
            using Process? child = Process.Start(info);
            if (child == null)
                return null;
            string output = child.StandardOutput.ReadToEnd();
            child.WaitForExit();
            return output.Length > Limit ? output[..Limit] : output;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null; // not on PATH
        }
    }
}
