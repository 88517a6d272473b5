using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// nbdfuse: an export mounted as a file through FUSE, against nbdkit, qemu-nbd and nbd-server, in every mode, beside
/// libnbd's nbdfuse. The tests mount for real: they need root, /dev/fuse and fusermount3.
/// </summary>
public class NbdFuseTests
{
    /// <summary>nbdkit's pattern plugin: each 8-byte word is its own offset, big-endian.</summary>
    private static void AssertPattern(ReadOnlySpan<byte> data, long offset)
    {
        for (int i = 0; i < data.Length; i += 8)
            Assert.Equal((ulong)(offset + i), System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(data.Slice(i, 8)));
    }

    private static byte[] ReadAt(string path, long offset, int count)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
        var data = new byte[count];
        file.Position = offset;
        file.ReadExactly(data);
        return data;
    }

    private static void WriteAt(string path, long offset, byte[] data, bool fsync = false)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1, FileOptions.None);
        file.Position = offset;
        file.Write(data);
        if (fsync)
            file.Flush(flushToDisk: true);
    }

    [Fact]
    public void Uri_ServesTheExport_AsOneFile_ReadWriteFsyncFallocate_ThenUnmountsCleanly()
    {
        using var dir = new TempDirectory();
        string log = dir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "memory", "16M", "logfile=" + log);
        using var mount = FuseMount.Start(dir, ["-P", dir.File("nbdfuse.pid")], [server.Uri]);

        // One file, named nbd, sized as the export, writable by everyone, owned by the user; nothing else.
        Assert.Equal(["nbd"], Directory.GetFileSystemEntries(mount.Folder).Select(entry => Path.GetFileName(entry)).ToArray());
        var info = new FileInfo(mount.File);
        Assert.Equal(16 << 20, info.Length);
        Assert.Equal("-rw-rw-rw-", Stat(mount.File, "%A"));
        Assert.Equal(Run("id", "-u").Stdout.Trim() + " " + Run("id", "-g").Stdout.Trim(), Stat(mount.File, "%u %g"));
        Assert.Equal(mount.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadAllText(dir.File("nbdfuse.pid")));

        // Written through the mount (at an odd offset), read back through it and through the library.
        byte[] data = RandomNumberGenerator.GetBytes(3 << 20);
        WriteAt(mount.File, 12345, data, fsync: true);
        Assert.Equal(data, ReadAt(mount.File, 12345, data.Length));
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            var back = new byte[data.Length];
            h.Pread(back, 12345);
            Assert.Equal(data, back);
        }

        // fsync is a flush; fallocate punches (trim) and zeroes (write zeroes); plain allocation is not supported.
        Assert.Equal(0, Run("fallocate", "-p", "-o", "4M", "-l", "64K", mount.File).ExitCode);
        Assert.Equal(0, Run("fallocate", "-z", "-o", "8M", "-l", "64K", mount.File).ExitCode);
        ToolResult allocate = Run("fallocate", "-o", "0", "-l", "4K", mount.File);
        Assert.Equal(1, allocate.ExitCode);
        Assert.Contains("Operation not supported", allocate.Stderr, StringComparison.Ordinal);
        string requests = File.ReadAllText(log);
        Assert.Contains("Flush id=", requests, StringComparison.Ordinal);
        Assert.Contains("Trim id=", requests, StringComparison.Ordinal);
        Assert.Contains("offset=0x400000 count=0x10000", requests, StringComparison.Ordinal);
        Assert.Contains("Zero id=", requests, StringComparison.Ordinal);
        Assert.Contains("offset=0x800000 count=0x10000", requests, StringComparison.Ordinal);

        // Unmounting ends nbdfuse with status 0, after disconnecting; the pid file goes with it.
        ToolResult end = mount.Unmount();
        Assert.True(end.ExitCode == 0, end.ToString());
        Assert.False(File.Exists(dir.File("nbdfuse.pid")));
        Assert.Contains("Disconnect", File.ReadAllText(log), StringComparison.Ordinal);
    }

    [Fact]
    public void EveryMode_ServesThePattern()
    {
        string nbdkit = Requires.Program("nbdkit");
        using var dir = new TempDirectory();
        using ServerProcess unix = Peers.Nbdkit("pattern", "1M");
        using ServerProcess tcp = Peers.NbdkitOnFreePort(out int port, "pattern", "1M");
        List<string[]> modes =
        [
            [unix.Uri],
            ["--uri", unix.Uri],
            ["--unix", unix.Socket],
            ["--tcp", "127.0.0.1", port.ToString(System.Globalization.CultureInfo.InvariantCulture)],
            ["[", nbdkit, "-P", dir.File("child.pid"), "pattern", "1M", "]"],
            ["--command", nbdkit, "-s", "-P", dir.File("child.pid"), "pattern", "1M"],
            ["--socket-activation", nbdkit, "-P", dir.File("child.pid"), "pattern", "1M"],
        ];
        foreach (string[] mode in modes)
        {
            File.Delete(dir.File("child.pid"));
            using var mount = FuseMount.Start(dir, [], mode);
            Assert.Equal(1 << 20, new FileInfo(mount.File).Length);
            AssertPattern(ReadAt(mount.File, 8192, 4096), 8192);
            AssertPattern(ReadAt(mount.File, (1 << 20) - 4096, 4096), (1 << 20) - 4096);
            ToolResult end = mount.Unmount();
            Assert.True(end.ExitCode == 0, string.Join(' ', mode) + ": " + end);
            // A server nbdfuse started is gone when nbdfuse is.
            if (File.Exists(dir.File("child.pid")))
            {
                int child = int.Parse(File.ReadAllText(dir.File("child.pid")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(SpinWait.SpinUntil(() => !Directory.Exists("/proc/" + child), TimeSpan.FromSeconds(10)),
                    string.Join(' ', mode) + ": the server nbdfuse started is still running");
            }
            else
            {
                Assert.Contains(mode[0], new[] { unix.Uri, "--uri", "--unix", "--tcp" });
            }
        }

        // --fd: a socket connected by someone else (python here), inherited as a number.
        string python = Requires.Program("/usr/bin/python3");
        string script = "import os, socket, sys\n" +
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.set_inheritable(True)\n" +
            "os.execv(sys.argv[2], [sys.argv[2], sys.argv[3], '--fd', str(s.fileno())])\n";
        using (var mount = FuseMount.StartProgram(dir, python, ["-c", script, unix.Socket, ToolProcess.Ours("nbdfuse")]))
        {
            AssertPattern(ReadAt(mount.File, 65536, 4096), 65536);
            Assert.Equal(0, mount.Unmount().ExitCode);
        }
    }

    [Fact]
    public void MountPointForms_FileNameAndFileMode()
    {
        using var dir = new TempDirectory();
        using ServerProcess server = Peers.Nbdkit("pattern", "64K");

        // MOUNTPOINT/FILENAME names the file; -s runs FUSE's single-threaded loop; -o goes to FUSE.
        using (var mount = FuseMount.Start(dir, ["-s", "-o", "allow_other"], [server.Uri], fileName: "disk.raw"))
        {
            Assert.Equal(["disk.raw"], Directory.GetFileSystemEntries(mount.Folder).Select(entry => Path.GetFileName(entry)).ToArray());
            Assert.Contains(File.ReadAllLines("/proc/self/mounts"), line => line.Contains(" " + mount.Folder + " ", StringComparison.Ordinal) &&
                line.Contains("allow_other", StringComparison.Ordinal));
            AssertPattern(ReadAt(mount.File, 0, 4096), 0);
            Assert.Equal(0, mount.Unmount().ExitCode);
        }

        // A regular file as the mount point: it becomes the export.
        string image = dir.File("image");
        File.WriteAllBytes(image, []);
        using (var mount = FuseMount.StartAt(dir, image, [], [server.Uri]))
        {
            Assert.Equal(65536, new FileInfo(image).Length);
            AssertPattern(ReadAt(image, 4096, 4096), 4096);
            Assert.Equal(0, mount.Unmount().ExitCode);
        }
        Assert.Equal(0, new FileInfo(image).Length);
    }

    [Fact]
    public void ReadOnly_OptionAndReadOnlyExports_RefuseWrites()
    {
        using var dir = new TempDirectory();
        using ServerProcess writable = Peers.Nbdkit("memory", "1M");
        using ServerProcess readOnly = Peers.Nbdkit("-r", "pattern", "1M");
        foreach ((string[] options, string uri) in new[] { (new[] { "-r" }, writable.Uri), ([], readOnly.Uri), (["--read-only"], readOnly.Uri) })
        {
            using var mount = FuseMount.Start(dir, options, [uri]);
            Assert.Equal("-r--r--r--", Stat(mount.File, "%A"));
            Assert.Throws<UnauthorizedAccessException>(() => WriteAt(mount.File, 0, [1, 2, 3]));
            Assert.Equal(4096, ReadAt(mount.File, 0, 4096).Length);
            Assert.Equal(0, mount.Unmount().ExitCode);
        }
    }

    /// <summary>-C 4 opens four connections to a server that allows multi-conn, one otherwise; several readers and writers at once, verified.</summary>
    [Fact]
    public void Connections_FourWithMultiConn_AndParallelReadersAndWriters()
    {
        using var dir = new TempDirectory();
        string log = dir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "memory", "64M", "logfile=" + log);
        using (var mount = FuseMount.Start(dir, ["-C", "4", "-v"], [server.Uri]))
        {
            Assert.Equal(4, CountLines(log, "Connect export="));
            var chunks = new byte[8][];
            Parallel.For(0, chunks.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
            {
                chunks[i] = RandomNumberGenerator.GetBytes(4 << 20);
                WriteAt(mount.File, (long)i * (8 << 20), chunks[i], fsync: true);
            });
            Parallel.For(0, chunks.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
                Assert.Equal(chunks[i], ReadAt(mount.File, (long)i * (8 << 20), chunks[i].Length)));

            // O_DIRECT reads: FUSE passes each 1 MiB request whole, past the page cache.
            string copied = dir.File("back.bin");
            ToolResult dd = Run("dd", "if=" + mount.File, "of=" + copied, "bs=1M", "count=4", "skip=8", "iflag=direct");
            Assert.True(dd.ExitCode == 0, dd.ToString());
            Assert.Equal(chunks[1], File.ReadAllBytes(copied));
            using var h = new NbdHandle();
            h.ConnectUri(server.Uri);
            for (int i = 0; i < chunks.Length; i++)
            {
                var back = new byte[chunks[i].Length];
                h.Pread(back, (ulong)i * (8 << 20));
                Assert.Equal(chunks[i], back);
            }
            ToolResult end = mount.Unmount();
            Assert.Equal(0, end.ExitCode);
            Assert.Contains("nbdfuse: connections=4\n", end.Stderr, StringComparison.Ordinal);
        }

        // A server nbdfuse starts itself gets one connection, whatever -C says.
        File.WriteAllText(log, "");
        string nbdkit = Requires.Program("nbdkit");
        using (var mount = FuseMount.Start(dir, ["-C", "4", "-v"], ["[", nbdkit, "memory", "1M", "]"]))
        {
            ToolResult end = mount.Unmount();
            Assert.Contains("nbdfuse: connections=1\n", end.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void QemuNbdAndNbdServer_ReadThroughTheMount_EqualsNbdcopysCopy()
    {
        using var dir = new TempDirectory();
        using ServerProcess qcow2 = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-r");
        using ServerProcess nbdServer = Peers.NbdServer("disk", images =>
        {
            string image = images.File("disk.img");
            File.WriteAllBytes(image, RandomNumberGenerator.GetBytes(2 << 20));
            return image;
        });
        foreach (string uri in new[] { qcow2.Uri, nbdServer.UriFor("disk") })
        {
            string copy = dir.File("copy.img");
            ToolResult copied = ToolProcess.RunOurs("nbdcopy", uri, copy);
            Assert.True(copied.ExitCode == 0, copied.ToString());
            using var mount = FuseMount.Start(dir, [], [uri]);
            Assert.Equal(SHA256.HashData(File.ReadAllBytes(copy)), SHA256.HashData(File.ReadAllBytes(mount.File)));
            Assert.Equal(0, mount.Unmount().ExitCode);
            File.Delete(copy);
        }
    }

    /// <summary>
    /// A server that needs 4 KiB blocks (nbdkit's blocksize-policy filter fails anything else): FUSE writes through
    /// (no write-back cache), so a small write reaches nbdfuse as it is, and nbdfuse widens it to whole blocks
    /// (read-modify-write); reads of a file whose end is not block-aligned are widened too.
    /// </summary>
    [Fact]
    public void UnalignedRequests_AreWidenedToTheServersMinimumBlockSize()
    {
        using var dir = new TempDirectory();
        string log = dir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "--filter=blocksize-policy", "memory", "1M",
            "blocksize-minimum=4096", "blocksize-error-policy=error", "logfile=" + log);
        using var mount = FuseMount.Start(dir, [], [server.Uri]);
        byte[] data = RandomNumberGenerator.GetBytes(100);
        WriteAt(mount.File, 4050, data, fsync: true);
        Assert.Equal(data, ReadAt(mount.File, 4050, 100));
        Assert.Equal(new byte[4050], ReadAt(mount.File, 0, 4050));
        Assert.Equal(0, mount.Unmount().ExitCode);
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            var back = new byte[8192];
            h.Pread(back, 0);
            Assert.Equal(data, back.AsSpan(4050, 100).ToArray());
        }
        string requests = File.ReadAllText(log);
        Assert.Contains("Write id=", requests, StringComparison.Ordinal);
        Assert.DoesNotContain("error=", requests, StringComparison.Ordinal);
    }

    [Fact]
    public void KilledServer_GivesEio_NotAHang_AndSignalsUnmount()
    {
        using var dir = new TempDirectory();
        var server = Peers.Nbdkit("memory", "16M");
        using var mount = FuseMount.Start(dir, [], [server.Uri]);
        Assert.Equal(4096, ReadAt(mount.File, 0, 4096).Length);
        server.Dispose();
        Task<Exception?> read = Task.Run(() => Record.Exception(() => ReadAt(mount.File, 8 << 20, 4096)));
        Assert.True(read.Wait(TimeSpan.FromSeconds(30)), "a read after the server died hung");
        IOException error = Assert.IsType<IOException>(read.Result);
        Assert.Contains("Input/output error", error.Message, StringComparison.Ordinal);

        // SIGTERM unmounts and ends nbdfuse as libnbd's does (status 1, one line).
        ToolResult end = mount.Signal("TERM");
        Assert.Equal(1, end.ExitCode);
        Assert.EndsWith("nbdfuse: fuse_loop: fuse loop terminated by signal 15\n", end.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(mount.Folder, File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
    }

    [Fact]
    public void ErrorsBeforeMounting_AreOneLine_AndOptionsMatchLibnbds()
    {
        using var dir = new TempDirectory();
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        foreach ((string[] args, string? message) in new (string[], string?)[]
        {
            (new[] { dir.File("no/such/dir"), server.Uri }, "nbdfuse: " + dir.File("no/such/dir") + ": mountpoint must be \"directory\" or \"directory/filename\"\n"),
            ([dir.Path, "nbd+unix:///?socket=" + dir.File("none.sock")], null),
            (["-C", "0", dir.Path, server.Uri], "nbdfuse: --connections option-argument must be an unsigned integer >= 1\n"),
            ([dir.Path, "--bogus", "x"], "nbdfuse: unknown mode: --bogus\n"),
            (["--no-such-option"], "nbdfuse: unrecognized option '--no-such-option'\n"),
            ([dir.Path], null),
            (["-o", "no_such_fuse_option", dir.Path, server.Uri], "nbdfuse: fuse_new: unknown option(s): `-o no_such_fuse_option'\n"),
        })
        {
            ToolResult result = ToolProcess.RunOurs("nbdfuse", args);
            Assert.Equal(1, result.ExitCode);
            if (message != null)
                Assert.Equal(message, result.Stderr);
            Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("nbdfuse: ", result.Stderr, StringComparison.Ordinal);
        }
        foreach (string option in new[] { "--help", "--long-options", "--short-options" })
            Assert.Equal(ToolProcess.RunLibnbd("nbdfuse", option).Stdout, ToolProcess.RunOurs("nbdfuse", option).Stdout);
        // libfuse's own options, as libnbd's nbdfuse prints them (through fuse_main).
        ToolResult fuseHelp = ToolProcess.RunOurs("nbdfuse", "--fuse-help");
        Assert.Equal(0, fuseHelp.ExitCode);
        Assert.Contains("-o allow_other", fuseHelp.Stdout, StringComparison.Ordinal);
        // (libnbd's names itself by its argv[0], /usr/bin/nbdfuse here; ours by its name.)
        Assert.Equal(ToolProcess.RunLibnbd("nbdfuse", "--fuse-help").Stdout.Replace("usage: /usr/bin/nbdfuse ", "usage: nbdfuse ", StringComparison.Ordinal),
            fuseHelp.Stdout);
    }

    /// <summary>libnbd's nbdfuse and ours on the same server: the same file, the same bytes.</summary>
    [Fact]
    public void BesideLibnbdsNbdfuse_TheSameFileAndBytes()
    {
        string theirs = ToolProcess.Libnbd("nbdfuse");
        using var dir = new TempDirectory();
        using ServerProcess server = Peers.Nbdkit("sparse-random", "8M", "seed=3");
        using var ours = FuseMount.Start(dir, ["-r"], [server.Uri]);
        using var libnbd = FuseMount.StartProgram(dir, theirs, ["-r", "MOUNT", server.Uri]);
        Assert.Equal(Stat(libnbd.File, "%A %s %u %g %h"), Stat(ours.File, "%A %s %u %g %h"));
        Assert.Equal(Stat(libnbd.Folder, "%A %h"), Stat(ours.Folder, "%A %h"));
        Assert.Equal(SHA256.HashData(File.ReadAllBytes(libnbd.File)), SHA256.HashData(File.ReadAllBytes(ours.File)));
        Assert.Equal(0, ours.Unmount().ExitCode);
        Assert.Equal(0, libnbd.Unmount().ExitCode);
    }

    private static string Stat(string path, string format) => Run("stat", "-c", format, path).Stdout.TrimEnd('\n');

    private static ToolResult Run(string program, params string[] args) => ToolProcess.Run(Requires.Program(program), args);

    private static int CountLines(string file, string text) =>
        File.ReadAllLines(file).Count(line => line.Contains(text, StringComparison.Ordinal));
}

/// <summary>
/// An nbdfuse process serving a mount point in a temporary folder: started, waited for (its pid file, or the file
/// appearing), and unmounted (fusermount3 -u) or killed at the end, whatever happened.
/// </summary>
internal sealed class FuseMount : IDisposable
{
    private readonly Process _process;
    private readonly System.Text.StringBuilder _stderr = new();
    private bool _ended;

    private FuseMount(Process process, string folder, string file)
    {
        _process = process;
        Folder = folder;
        File = file;
    }

    /// <summary>The mount point.</summary>
    public string Folder { get; }

    /// <summary>The export's file.</summary>
    public string File { get; }

    /// <summary>nbdfuse's process id.</summary>
    public int Pid => _process.Id;

    /// <summary>Mounts with our nbdfuse on a new folder: <c>nbdfuse OPTIONS FOLDER[/FILENAME] TARGET...</c>.</summary>
    public static FuseMount Start(TempDirectory dir, string[] options, string[] target, string? fileName = null)
    {
        string folder = NewFolder(dir);
        string where = fileName == null ? folder : Path.Combine(folder, fileName);
        return Launch(ToolProcess.Ours("nbdfuse"), [.. options, where, .. target], folder, Path.Combine(folder, fileName ?? "nbd"));
    }

    /// <summary>Mounts with our nbdfuse on an existing regular file (file mode).</summary>
    public static FuseMount StartAt(TempDirectory dir, string file, string[] options, string[] target) =>
        Launch(ToolProcess.Ours("nbdfuse"), [.. options, file, .. target], file, file);

    /// <summary>Runs <paramref name="program"/> with <paramref name="args"/>, "MOUNT" standing for a new folder.</summary>
    public static FuseMount StartProgram(TempDirectory dir, string program, string[] args)
    {
        string folder = NewFolder(dir);
        string[] words = args.Select(arg => arg == "MOUNT" ? folder : arg).ToArray();
        if (!words.Contains(folder))
            words = [.. words, folder];
        return Launch(program, words, folder, Path.Combine(folder, "nbd"));
    }

    private static string NewFolder(TempDirectory dir)
    {
        string folder = dir.File("mnt-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(folder);
        return folder;
    }

    private static FuseMount Launch(string program, string[] args, string folder, string file)
    {
        if (Environment.UserName != "root" || !System.IO.File.Exists("/dev/fuse"))
        {
            const string Why = "FUSE tests need root and /dev/fuse";
            if (Requires.IsCI)
                Assert.Fail(Why);
            Assert.Skip(Why);
        }
        Requires.Program("fusermount3");
        var info = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        info.Environment.Remove("LIBNBD_DEBUG");
        var process = Process.Start(info)!;
        var mount = new FuseMount(process, folder, file);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data != null)
            {
                lock (mount._stderr)
                    mount._stderr.Append(e.Data).Append('\n');
            }
        };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        // Mounted when the mount table lists the folder (or the file, in file mode).
        bool mounted = SpinWait.SpinUntil(() => process.HasExited || IsMounted(folder), TimeSpan.FromSeconds(60));
        if (!mounted || process.HasExited)
        {
            mount.Dispose();
            Assert.Fail($"{program} {string.Join(' ', args)} did not mount: {mount.Stderr}");
        }
        return mount;
    }

    private static bool IsMounted(string path) =>
        System.IO.File.ReadAllText("/proc/self/mounts").Contains(" " + path + " fuse", StringComparison.Ordinal);

    /// <summary>What nbdfuse has written to stderr.</summary>
    public string Stderr
    {
        get
        {
            lock (_stderr)
                return _stderr.ToString();
        }
    }

    /// <summary>Unmounts with fusermount3 -u and waits for nbdfuse to exit; its status and stderr.</summary>
    public ToolResult Unmount()
    {
        ToolResult unmount = ToolProcess.Run("fusermount3", ["-u", Folder], TimeSpan.FromSeconds(30));
        Assert.True(unmount.ExitCode == 0, "fusermount3 -u: " + unmount);
        return WaitForExit();
    }

    /// <summary>Sends SIGname to nbdfuse and waits for it to exit.</summary>
    public ToolResult Signal(string name)
    {
        ToolProcess.Run("kill", ["-" + name, Pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        return WaitForExit();
    }

    private ToolResult WaitForExit()
    {
        Assert.True(_process.WaitForExit(30_000), "nbdfuse did not exit: " + Stderr);
        _process.WaitForExit();
        _ended = true;
        return new ToolResult(_process.ExitCode, "", Stderr);
    }

    public void Dispose()
    {
        if (!_ended && !_process.HasExited)
        {
            ToolProcess.Run("fusermount3", ["-u", "-z", Folder], TimeSpan.FromSeconds(30));
            if (!_process.WaitForExit(10_000))
                _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        if (IsMounted(Folder))
            ToolProcess.Run("umount", ["-l", Folder], TimeSpan.FromSeconds(30));
        _process.Dispose();
    }
}
