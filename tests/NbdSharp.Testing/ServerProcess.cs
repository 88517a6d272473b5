using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace NbdSharp.Testing;

/// <summary>
/// A real NBD server started by a test on a Unix socket in a private temporary folder, and stopped (killed,
/// reaped, folder removed) on dispose. Start them through <see cref="Peers"/>.
/// </summary>
public sealed class ServerProcess : IDisposable
{
    private readonly TempDirectory _dir;
    private readonly Process? _process;
    private readonly int _pid;
    private readonly StringBuilder _stderr = new();

    internal ServerProcess(TempDirectory dir, string socket, Process? process, int pid)
    {
        _dir = dir;
        Socket = socket;
        _process = process;
        _pid = pid;
    }

    /// <summary>The Unix socket path the server listens on.</summary>
    public string Socket { get; }

    /// <summary>The server's URI (with the slash libnbd prints).</summary>
    public string Uri => "nbd+unix:///?socket=" + Socket;

    /// <summary>A URI for a named export.</summary>
    public string UriFor(string export) => "nbd+unix:///" + export + "?socket=" + Socket;

    public int Pid => _pid;

    public TempDirectory Directory => _dir;

    /// <summary>What the server wrote on stderr so far.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
                return _stderr.ToString();
        }
    }

    /// <summary>Whether the server process has exited (crashed or was killed).</summary>
    public bool HasExited
    {
        get
        {
            if (_process != null)
                return _process.HasExited;
            try
            {
                using Process p = Process.GetProcessById(_pid);
                return p.HasExited;
            }
            catch (ArgumentException)
            {
                return true;
            }
        }
    }

    /// <summary>Starts a server listening on TCP loopback <paramref name="port"/> and waits until it has written its pid file and accepts connections.</summary>
    internal static ServerProcess StartTcp(TempDirectory dir, int port, string pidFile, string program, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            WorkingDirectory = dir.Path,
        };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start " + program);
        var server = new ServerProcess(dir, "", process, process.Id);
        process.ErrorDataReceived += (_, e) => server.Append(e.Data);
        process.OutputDataReceived += (_, e) => server.Append(e.Data);
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (server.HasExited)
            {
                string errors = server.Stderr;
                server.Dispose();
                throw new InvalidOperationException($"{program} exited before listening on port {port}: {errors}");
            }
            if (File.Exists(pidFile))
                return server;
            Thread.Sleep(10);
        }
        server.Dispose();
        throw new InvalidOperationException($"{program} did not start listening on port {port}");
    }

    /// <summary>Starts <paramref name="program"/> and waits until <paramref name="socket"/> accepts connections.</summary>
    internal static ServerProcess Start(TempDirectory dir, string socket, string program, IEnumerable<string> args,
        string? pidFile = null)
    {
        var info = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = false,
            WorkingDirectory = dir.Path,
        };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start " + program);
        ServerProcess server;
        if (pidFile == null)
        {
            server = new ServerProcess(dir, socket, process, process.Id);
            process.ErrorDataReceived += (_, e) => server.Append(e.Data);
            process.OutputDataReceived += (_, e) => server.Append(e.Data);
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
        }
        else
        {
            // A daemonizing server: the launcher exits, the pid file names the server.
            string launcherErrors = process.StandardError.ReadToEnd();
            process.WaitForExit();
            int pid = WaitForPidFile(pidFile, launcherErrors);
            process.Dispose();
            server = new ServerProcess(dir, socket, null, pid);
            server.Append(launcherErrors);
        }
        try
        {
            server.WaitUntilListening(program);
        }
        catch
        {
            server.Dispose();
            throw;
        }
        return server;
    }

    private void Append(string? line)
    {
        if (line == null)
            return;
        lock (_stderr)
        {
            _stderr.AppendLine(line);
            Monitor.PulseAll(_stderr);
        }
    }

    /// <summary>Waits until the server has written <paramref name="text"/> on stderr; false after <paramref name="timeout"/>.</summary>
    public bool WaitForStderr(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_stderr)
        {
            while (!_stderr.ToString().Contains(text, StringComparison.Ordinal))
            {
                TimeSpan left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !Monitor.Wait(_stderr, left))
                    return _stderr.ToString().Contains(text, StringComparison.Ordinal);
            }
            return true;
        }
    }

    private static int WaitForPidFile(string pidFile, string launcherErrors)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(pidFile))
            {
                string text = File.ReadAllText(pidFile).Trim();
                if (int.TryParse(text, out int pid))
                    return pid;
            }
            Thread.Sleep(20);
        }
        throw new InvalidOperationException("server did not write its pid file: " + launcherErrors);
    }

    private void WaitUntilListening(string program)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (HasExited)
                throw new InvalidOperationException($"{program} exited before listening: {Stderr}");
            if (File.Exists(Socket))
            {
                try
                {
                    using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    probe.Connect(new UnixDomainSocketEndPoint(Socket));
                    return;
                }
                catch (SocketException)
                {
                }
            }
            Thread.Sleep(10);
        }
        throw new InvalidOperationException($"{program} did not start listening on {Socket}: {Stderr}");
    }

    /// <summary>Sends a signal to the server (e.g. SIGKILL to simulate a crash, SIGSTOP to stall it).</summary>
    public void Signal(int signal)
    {
        _ = Native.Kill(_pid, signal);
    }

    public void Dispose()
    {
        try
        {
            if (!HasExited)
            {
                Signal(Native.SIGCONT);
                Signal(Native.SIGKILL);
            }
            if (_process != null)
            {
                _process.WaitForExit(10_000);
                _process.Dispose();
            }
            else
            {
                var deadline = DateTime.UtcNow.AddSeconds(10);
                while (!HasExited && DateTime.UtcNow < deadline)
                    Thread.Sleep(10);
            }
        }
        finally
        {
            _dir.Dispose();
        }
    }
}
