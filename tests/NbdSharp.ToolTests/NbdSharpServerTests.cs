using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// nbdsharp-server, NbdSharp's nbdkit-style command, as a process: its listening modes (Unix socket, TCP, -s,
/// socket activation, --run), forking into the background, the pid file, signals, --exit-with-parent, its exports
/// checked through libnbd's tools, and its one-line errors.
/// </summary>
public class NbdSharpServerTests
{
    private static string Server => ToolProcess.Ours("nbdsharp-server");

    private static ServerProcess Start(params string[] args) => Peers.NbdSharpServer(Server, args);

    [Fact]
    public void Memory_ServesLibnbdNbdinfo_AndCopiesRoundTrip()
    {
        using var server = Start("memory", "8M");
        ToolResult info = ToolProcess.RunLibnbd("nbdinfo", "--json", server.Uri);
        Assert.True(info.ExitCode == 0, info.ToString());
        Assert.Contains("\"export-size\": 8388608", info.Stdout, StringComparison.Ordinal);
        Assert.Contains("\"is_read_only\": false", info.Stdout, StringComparison.Ordinal);

        using var dir = new TempDirectory();
        byte[] data = new byte[8 << 20];
        new Random(3).NextBytes(data);
        File.WriteAllBytes(dir.File("in"), data);
        ToolResult copyIn = ToolProcess.RunLibnbd("nbdcopy", dir.File("in"), server.Uri);
        Assert.True(copyIn.ExitCode == 0, copyIn.ToString());
        ToolResult copyOut = ToolProcess.RunLibnbd("nbdcopy", server.Uri, dir.File("out"));
        Assert.True(copyOut.ExitCode == 0, copyOut.ToString());
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("out"))), "the copy out differs from what was copied in");
    }

    [Fact]
    public void Pattern_IsByteForByteNbdkitsPattern()
    {
        Requires.Program("nbdkit");
        using var ours = Start("pattern", "3M");
        using var nbdkit = Peers.Nbdkit("pattern", "3M");
        using var dir = new TempDirectory();
        Assert.Equal(0, ToolProcess.RunLibnbd("nbdcopy", ours.Uri, dir.File("ours")).ExitCode);
        Assert.Equal(0, ToolProcess.RunLibnbd("nbdcopy", nbdkit.Uri, dir.File("nbdkit")).ExitCode);
        Assert.True(File.ReadAllBytes(dir.File("ours")).AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("nbdkit"))));
        ToolResult info = ToolProcess.RunLibnbd("nbdinfo", "--is", "read-only", ours.Uri);
        Assert.Equal(0, info.ExitCode);
    }

    [Fact]
    public void SparseRandom_SameSeedSameDisk_WithHolesInTheMap()
    {
        using var a = Start("sparse-random", "64M", "seed=7", "runlength=1M", "percent=25");
        using var b = Start("sparse-random", "size=64M", "seed=7", "runlength=1M", "percent=25");
        using var c = Start("sparse-random", "64M", "seed=8", "runlength=1M", "percent=25");
        using var dir = new TempDirectory();
        foreach (var (server, name) in new[] { (a, "a"), (b, "b"), (c, "c") })
            Assert.Equal(0, ToolProcess.RunLibnbd("nbdcopy", server.Uri, dir.File(name)).ExitCode);
        byte[] first = File.ReadAllBytes(dir.File("a"));
        Assert.True(first.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("b"))), "the same seed gave different disks");
        Assert.False(first.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("c"))), "different seeds gave the same disk");
        ToolResult map = ToolProcess.RunLibnbd("nbdinfo", "--map", a.Uri);
        Assert.Equal(0, map.ExitCode);
        Assert.Contains("hole,zero", map.Stdout, StringComparison.Ordinal);
        Assert.Contains("data", map.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void File_ServesTheFile_ReadOnlyWithR()
    {
        using var dir = new TempDirectory();
        byte[] data = new byte[1 << 20];
        new Random(5).NextBytes(data);
        string path = dir.File("disk.img");
        File.WriteAllBytes(path, data);
        using (var server = Start("-r", "file", path))
        {
            Assert.Equal(0, ToolProcess.RunLibnbd("nbdcopy", server.Uri, dir.File("copy")).ExitCode);
            Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("copy"))));
            Assert.Equal(0, ToolProcess.RunLibnbd("nbdinfo", "--is", "read-only", server.Uri).ExitCode);
            using var h = new NbdHandle();
            h.ConnectUri(server.Uri);
            var e = Assert.Throws<NbdException>(() => h.Pwrite(new byte[512], 0));
            Assert.Equal(Errno.EPERM, e.Errno);
        }
        using (var server = Start("file", "file=" + path))
        {
            using var h = new NbdHandle();
            h.ConnectUri(server.Uri);
            h.Pwrite(new byte[] { 1, 2, 3, 4 }, 100);
            h.Flush();
        }
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, File.ReadAllBytes(path).AsSpan(100, 4).ToArray());
    }

    [Fact]
    public void ExportName_IsListed()
    {
        using var server = Start("-e", "disk1", "--description", "first disk", "memory", "1M");
        ToolResult list = ToolProcess.RunLibnbd("nbdinfo", "--list", server.Uri);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Contains("export=\"disk1\":", list.Stdout, StringComparison.Ordinal);
        Assert.Contains("description: first disk", list.Stdout, StringComparison.Ordinal);
        Assert.Equal(0, ToolProcess.RunLibnbd("nbdinfo", "--size", server.UriFor("disk1")).ExitCode);
    }

    [Fact]
    public void Run_SetsUri_AndReturnsTheCommandsStatus()
    {
        ToolResult size = ToolProcess.Run(Server, ["-U", "-", "memory", "2M", "--run", "/usr/bin/nbdinfo --size \"$uri\""]);
        Assert.True(size.ExitCode == 0, size.ToString());
        Assert.Equal("2097152\n", size.Stdout);
        ToolResult status = ToolProcess.Run(Server, ["memory", "1M", "--run", "test -S \"$unixsocket\" && exit 3"]);
        Assert.Equal(3, status.ExitCode);
    }

    [Fact]
    public void Single_ServesLibnbdConnectCommand()
    {
        string python = Requires.Program("/usr/bin/python3");
        string script = "import nbd, sys\nh = nbd.NBD()\nh.connect_command([sys.argv[1], '-s', 'memory', '1M'])\n" +
            "h.pwrite(b'abc', 10)\nprint(h.get_size(), h.pread(3, 10).decode())\nh.shutdown()\n";
        ToolResult result = ToolProcess.Run(python, ["-c", script, Server]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("1048576 abc\n", result.Stdout);
    }

    [Fact]
    public void SocketActivation_ServesNbdinfosBracketCommand()
    {
        ToolResult result = ToolProcess.RunLibnbd("nbdinfo", "--size", "--", "[", Server, "memory", "5M", "]");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("5242880\n", result.Stdout);
        ToolResult ours = ToolProcess.RunOurs("nbdinfo", "--size", "--", "[", Server, "null", "7M", "]");
        Assert.True(ours.ExitCode == 0, ours.ToString());
        Assert.Equal("7340032\n", ours.Stdout);
    }

    [Fact]
    public void Tcp_OnLoopback()
    {
        int port = Peers.FreePort();
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        using Process server = StartProcess(["-f", "-p", port.ToString(CultureInfo.InvariantCulture), "-i", "127.0.0.1", "-P", pidFile,
            "--exit-with-parent", "memory", "3M"]);
        try
        {
            WaitForFile(pidFile, server);
            Assert.Equal(server.Id.ToString(CultureInfo.InvariantCulture), File.ReadAllText(pidFile).Trim());
            ToolResult size = ToolProcess.RunLibnbd("nbdinfo", "--size", "nbd://127.0.0.1:" + port);
            Assert.True(size.ExitCode == 0, size.ToString());
            Assert.Equal("3145728\n", size.Stdout);
        }
        finally
        {
            Stop(server);
        }
        Assert.Equal(0, server.ExitCode);
    }

    [Fact]
    public void Background_ParentExitsOnceListening_SigtermStopsTheServer()
    {
        using var dir = new TempDirectory();
        string socket = dir.File("sock");
        string pidFile = dir.File("pid");
        // Not through ToolProcess.Run: the background server may keep descriptors the test host passed down, and
        // reading the launcher's output to its end would then wait for the server, not the launcher.
        var info = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        foreach (string arg in new[] { "-c", "exec \"$0\" -U \"$1\" -P \"$2\" memory 1M </dev/null >\"$3\" 2>&1", Server, socket, pidFile,
            dir.File("launcher.log") })
            info.ArgumentList.Add(arg);
        using (Process launcher = Process.Start(info)!)
        {
            Assert.True(launcher.WaitForExit(60_000), "the launcher did not return");
            Assert.True(launcher.ExitCode == 0, File.ReadAllText(dir.File("launcher.log")));
        }
        // Listening before the launcher returned: no waiting needed.
        Assert.True(File.Exists(socket), "the socket is not there when the launcher exits");
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);
        using Process server = Process.GetProcessById(pid);
        try
        {
            Assert.Equal(0, ToolProcess.RunLibnbd("nbdinfo", "--size", "nbd+unix:///?socket=" + socket).ExitCode);
        }
        finally
        {
            Native.Kill(pid, 15);
            Assert.True(server.WaitForExit(20_000), "the background server did not exit on SIGTERM");
        }
        Assert.False(File.Exists(socket), "the socket was left behind");
    }

    [Fact]
    public void Sigterm_WithAClientConnected_ExitsZero()
    {
        using var dir = new TempDirectory();
        string socket = dir.File("sock");
        string pidFile = dir.File("pid");
        using Process server = StartProcess(["-f", "-U", socket, "-P", pidFile, "memory", "1M"]);
        WaitForFile(pidFile, server);
        using var h = new NbdHandle();
        h.ConnectUnix(socket);
        h.Pwrite(new byte[4096], 0);
        Native.Kill(server.Id, 15);
        Assert.True(server.WaitForExit(20_000), "nbdsharp-server did not exit on SIGTERM");
        Assert.Equal(0, server.ExitCode);
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public void ExitWithParent_ExitsWhenTheParentDoes()
    {
        using var dir = new TempDirectory();
        string socket = dir.File("sock");
        string pidFile = dir.File("pid");
        // The shell starts the server, waits until it listens, then exits: the server must follow.
        string script = "\"$0\" -f --exit-with-parent -U \"$1\" -P \"$2\" memory 1M & " +
            "for i in $(seq 1 2000); do [ -s \"$2\" ] && exit 0; sleep 0.01; done; exit 1";
        ToolResult shell = ToolProcess.Run("/bin/sh", ["-c", script, Server, socket, pidFile]);
        Assert.True(shell.ExitCode == 0, shell.ToString());
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture);
        Process? server = null;
        try
        {
            server = Process.GetProcessById(pid);
        }
        catch (ArgumentException)
        {
            return; // already gone
        }
        using (server)
        {
            bool exited = server.WaitForExit(20_000);
            if (!exited)
                server.Kill();
            Assert.True(exited, "nbdsharp-server outlived its parent");
        }
    }

    [Theory]
    [InlineData("unknown export type 'bogus'", "bogus", "1M")]
    [InlineData("memory: the size parameter is required", "memory")]
    [InlineData("memory: could not parse size string: lots", "memory", "lots")]
    [InlineData("unrecognized option '--bogus'", "--bogus", "memory", "1M")]
    [InlineData("-U, -p/-i and -s cannot be used together", "-U", "x", "-p", "1", "memory", "1M")]
    [InlineData("--tls flag must be off|on|require: maybe", "--tls=maybe", "memory", "1M")]
    [InlineData("no export type given", "-f")]
    [InlineData("memory: unknown parameter 'colour'", "memory", "1M", "colour=blue")]
    [InlineData("file: the file parameter is required", "file")]
    public void BadArguments_OneLineAndExitOne(string expected, params string[] args)
    {
        ToolResult result = ToolProcess.Run(Server, args);
        Assert.Equal(1, result.ExitCode);
        string[] lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.StartsWith("nbdsharp-server: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.Empty(result.Stdout);
    }

    [Fact]
    public void MissingFile_OneLine()
    {
        ToolResult result = ToolProcess.Run(Server, ["-f", "-U", "/nonexistent-dir/sock", "file", "/nonexistent/disk.img"]);
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("/nonexistent/disk.img", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Verbose_LogsConnections()
    {
        using var server = Start("-v", "memory", "1M");
        Assert.Equal(0, ToolProcess.RunLibnbd("nbdinfo", "--size", server.Uri).ExitCode);
        server.WaitForStderr("closed", TimeSpan.FromSeconds(10));
        Assert.Contains("accepted", server.Stderr, StringComparison.Ordinal);
        Assert.Contains("serving export", server.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void HelpAndVersion()
    {
        ToolResult help = ToolProcess.Run(Server, ["--help"]);
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("sparse-random", help.Stdout, StringComparison.Ordinal);
        ToolResult version = ToolProcess.Run(Server, ["--version"]);
        Assert.Equal(0, version.ExitCode);
        Assert.StartsWith("nbdsharp-server ", version.Stdout, StringComparison.Ordinal);
    }

    private static Process StartProcess(IEnumerable<string> args)
    {
        var info = new ProcessStartInfo(Server) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        Process process = Process.Start(info)!;
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        return process;
    }

    /// <summary>
    /// Waits for the server's pid file, which it renames into place whole: woken by the file's appearance or the
    /// server's exit, never by a timer.
    /// </summary>
    private static void WaitForFile(string path, Process server)
    {
        using var changed = new ManualResetEventSlim(false);
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!, Path.GetFileName(path));
        watcher.Created += (_, _) => changed.Set();
        watcher.Renamed += (_, _) => changed.Set();
        watcher.Changed += (_, _) => changed.Set();
        watcher.EnableRaisingEvents = true;
        server.EnableRaisingEvents = true;
        server.Exited += (_, _) => changed.Set();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!(File.Exists(path) && new FileInfo(path).Length > 0))
        {
            if (server.HasExited)
                throw new InvalidOperationException("nbdsharp-server exited with " + server.ExitCode + " before writing " + path);
            TimeSpan left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
                throw new TimeoutException("nbdsharp-server did not write " + path);
            changed.Wait(left);
            changed.Reset();
        }
    }

    private static void Stop(Process server)
    {
        if (!server.HasExited)
            Native.Kill(server.Id, 15);
        if (!server.WaitForExit(20_000))
        {
            server.Kill();
            server.WaitForExit();
        }
    }
}
