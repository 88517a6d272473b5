using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading.Tasks;
using NbdSharp.Testing;

namespace NbdSharp.ToolTests;

/// <summary>What a tool run produced.</summary>
/// <param name="ExitCode">The exit code.</param>
/// <param name="Stdout">Everything written to stdout.</param>
/// <param name="Stderr">Everything written to stderr.</param>
public sealed record ToolResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Runs our tools (built next to this test assembly) and libnbd's (from libnbd-bin) as processes.</summary>
public static class ToolProcess
{
    /// <summary>The path of our tool <paramref name="name"/>, built in the same configuration as the tests.</summary>
    public static string Ours(string name)
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string path = Path.Combine(here.Parent!.Parent!.FullName, name, here.Name, name);
        if (!File.Exists(path))
            throw new FileNotFoundException($"our {name} is not built at {path}");
        return path;
    }

    /// <summary>The path of libnbd's tool <paramref name="name"/> (e.g. /usr/bin/nbdinfo).</summary>
    public static string Libnbd(string name) => Requires.Program("/usr/bin/" + name);

    /// <summary>Runs our <paramref name="name"/> with <paramref name="args"/>.</summary>
    public static ToolResult RunOurs(string name, params string[] args) => Run(Ours(name), args);

    /// <summary>Runs libnbd's <paramref name="name"/> with <paramref name="args"/>.</summary>
    public static ToolResult RunLibnbd(string name, params string[] args) => Run(Libnbd(name), args);

    /// <summary>
    /// Runs <paramref name="program"/> to completion (killing it after <paramref name="timeout"/>, default 60 s),
    /// with no terminal on stdout, LIBNBD_DEBUG unset and an optional environment.
    /// </summary>
    public static ToolResult Run(string program, IReadOnlyList<string> args, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string>? environment = null, string? stdin = null)
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        info.Environment.Remove("LIBNBD_DEBUG");
        if (environment != null)
        {
            foreach (var pair in environment)
                info.Environment[pair.Key] = pair.Value;
        }
        using var process = Process.Start(info)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (stdin != null)
            process.StandardInput.Write(stdin);
        process.StandardInput.Close();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish: {stderr.Result}");
        }
        process.WaitForExit();
        return new ToolResult(process.ExitCode, stdout.Result, stderr.Result);
    }
}
