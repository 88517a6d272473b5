using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>An export to serve: its name, the disk, the description <c>--list</c> shows, and whether the empty name selects it.</summary>
internal sealed record ExportSpec(string Name, NbdExport Export, string? Description = null, bool IsDefault = false);

/// <summary>
/// NbdSharp's <see cref="NbdServer"/> running in this process on a Unix socket in a private temporary folder, for
/// clients that nobody here wrote (libnbd's tools and Python bindings, qemu) and for NbdSharp's own client. Dispose
/// stops the server (gracefully, cutting connections still open after 20 s), disposes the exports and removes the
/// folder.
/// </summary>
internal sealed class TestServer : IDisposable
{
    private readonly TempDirectory _dir;
    private readonly List<NbdExport> _exports = [];
    private bool _disposed;

    private TestServer(NbdServerOptions? options)
    {
        _dir = new TempDirectory();
        Log = new RecordingLogger();
        Server = new NbdServer(options, Log);
        Socket = _dir.File("nbdsharp.sock");
    }

    /// <summary>The server itself.</summary>
    public NbdServer Server { get; }

    /// <summary>Everything the server logged.</summary>
    public RecordingLogger Log { get; }

    /// <summary>The Unix socket the server listens on.</summary>
    public string Socket { get; }

    /// <summary>The URI <see cref="NbdServer.ListenUnix"/> returned (the default export).</summary>
    public string Uri { get; private set; } = "";

    /// <summary>The private folder (for files the test makes).</summary>
    public TempDirectory Directory => _dir;

    /// <summary>A URI for the export called <paramref name="name"/>.</summary>
    public string UriFor(string name) => "nbd+unix:///" + System.Uri.EscapeDataString(name) + "?socket=" + Socket;

    /// <summary>Serves <paramref name="export"/> as the default export "" with <paramref name="options"/>.</summary>
    public static TestServer Start(NbdExport export, NbdServerOptions? options = null) => Start(options, new ExportSpec("", export));

    /// <summary>Serves <paramref name="exports"/> with <paramref name="options"/> on a new Unix socket.</summary>
    public static TestServer Start(NbdServerOptions? options, params ExportSpec[] exports)
    {
        var server = new TestServer(options);
        try
        {
            foreach (ExportSpec spec in exports)
            {
                server._exports.Add(spec.Export);
                server.Server.AddExport(spec.Name, spec.Export, spec.Description, spec.IsDefault);
            }
            server.Uri = server.Server.ListenUnix(server.Socket);
        }
        catch
        {
            server.Dispose();
            throw;
        }
        return server;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try
        {
            using var cut = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            Task stop = Server.StopAsync(cut.Token);
            if (!stop.Wait(TimeSpan.FromSeconds(40)))
                throw new TimeoutException("the server did not stop within 40 s even after cutting its connections");
        }
        finally
        {
            foreach (NbdExport export in _exports)
                export.Dispose();
            _dir.Dispose();
        }
    }
}

/// <summary>What a program run produced.</summary>
internal sealed record RunResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Runs the third-party clients: each with a timeout, killed (with its children) when it runs over.</summary>
internal static class Clients
{
    /// <summary>libnbd 1.22 built by /work/shared/bench/build-libnbd.sh, or null when it is not there.</summary>
    public static string? Libnbd122Prefix
    {
        get
        {
            string cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg
                ? xdg
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            string prefix = Path.Combine(cache, "libnbd-1.22");
            return File.Exists(Path.Combine(prefix, "bin", "nbdinfo")) && File.Exists(Path.Combine(prefix, "lib", "libnbd.so.0"))
                ? prefix : null;
        }
    }

    /// <summary>
    /// Runs one of Debian's libnbd 1.14 tools (/usr/bin/<paramref name="tool"/>). A missing tool skips the test, or
    /// fails it under CI.
    /// </summary>
    public static RunResult Libnbd(string tool, params string[] args) => Run(Requires.Program("/usr/bin/" + tool), args);

    /// <summary>
    /// Runs libnbd 1.22's <paramref name="tool"/> from <see cref="Libnbd122Prefix"/>; skips the test when that optional
    /// local build is absent (it is no Debian package, so CI is not expected to have it).
    /// </summary>
    public static RunResult Libnbd122(string tool, params string[] args)
    {
        string? prefix = Libnbd122Prefix;
        if (prefix == null)
            Assert.Skip("libnbd 1.22 is not built in ~/.cache/libnbd-1.22 (see /work/shared/bench/build-libnbd.sh)");
        return Run(Path.Combine(prefix, "bin", tool), args,
            environment: new Dictionary<string, string> { ["LD_LIBRARY_PATH"] = Path.Combine(prefix, "lib") });
    }

    /// <summary>Runs <paramref name="program"/> (a name on PATH or a path) and returns what it did; throws when it runs over <paramref name="timeout"/>.</summary>
    public static RunResult Run(string program, IReadOnlyList<string> args, TimeSpan? timeout = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        string path = Requires.Program(program);
        var info = new System.Diagnostics.ProcessStartInfo(path)
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
            foreach (KeyValuePair<string, string> pair in environment)
                info.Environment[pair.Key] = pair.Value;
        }
        using var process = System.Diagnostics.Process.Start(info)!;
        process.StandardInput.Close();
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromSeconds(120)))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in time: {stderr.Result}");
        }
        process.WaitForExit();
        return new RunResult(process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs <paramref name="program"/> and returns its stdout, failing the test with its stderr unless it exits 0.</summary>
    public static string Ok(string program, params string[] args)
    {
        RunResult result = Run(program, args);
        Assert.True(result.ExitCode == 0, $"{program} {string.Join(' ', args)}: {result}");
        return result.Stdout;
    }

    /// <summary>
    /// Runs a python3-libnbd script (Debian's, libnbd 1.14) with <paramref name="args"/> as sys.argv[1:] and returns
    /// its stdout; fails the test with its stderr unless it exits 0.
    /// </summary>
    public static string Python(string script, params string[] args)
    {
        var all = new List<string> { "-c", script };
        all.AddRange(args);
        RunResult result = Run("/usr/bin/python3", all);
        Assert.True(result.ExitCode == 0, "python3-libnbd failed: " + result);
        return result.Stdout;
    }
}
