using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>FileExport and StreamExport served to libnbd's tools and qemu, checked against the file itself and nbdkit's file plugin.</summary>
public class FileAndStreamExportTests
{
    private const long MiB = 1 << 20;

    private static List<(long Offset, long Length, int Type)> Map(RunResult result)
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        return [.. JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32()))];
    }

    /// <summary>
    /// qemu-io writes, discards and zeroes a sparse file through FileExport; the file holds the result, and nbdinfo's
    /// map of the export is nbdkit's file plugin's map of the same file (both from SEEK_DATA/SEEK_HOLE).
    /// </summary>
    [Fact]
    public void FileExport_QemuIoChanges_ReachTheFile_AndTheMapIsNbdkits()
    {
        using var dir = new TempDirectory();
        string path = dir.File("disk.img");
        using (FileStream f = File.Create(path))
            f.SetLength(16 * MiB);
        var export = new FileExport(path);
        using var server = TestServer.Start(export);
        string output = Clients.Ok("qemu-io", "-f", "raw",
            "-c", "write -P 0x11 1M 2M",
            "-c", "write -P 0x22 8M 1M",
            "-c", "discard 1M 1M",
            "-c", "write -z 8M 512k",
            "-c", "write -f -P 0x33 15M 4k",
            "-c", "flush",
            server.Uri);
        Assert.DoesNotContain("failed", output, StringComparison.OrdinalIgnoreCase);

        byte[] file = File.ReadAllBytes(path);
        Assert.Equal(16 * MiB, file.Length);
        Assert.False(file.AsSpan((int)MiB, (int)MiB).ContainsAnyExcept((byte)0));      // discarded (punched)
        Assert.False(file.AsSpan((int)(2 * MiB), (int)MiB).ContainsAnyExcept((byte)0x11));
        Assert.False(file.AsSpan((int)(8 * MiB), (int)(MiB / 2)).ContainsAnyExcept((byte)0));
        Assert.False(file.AsSpan((int)(8 * MiB + MiB / 2), (int)(MiB / 2)).ContainsAnyExcept((byte)0x22));
        Assert.False(file.AsSpan((int)(15 * MiB), 4096).ContainsAnyExcept((byte)0x33));

        var ours = Map(Clients.Run("/usr/bin/nbdinfo", ["--map", "--json", server.Uri]));
        string nbdkit = Requires.Program("nbdkit");
        var theirs = Map(Clients.Run("/usr/bin/nbdinfo", ["--map", "--json", "--", "[", nbdkit, "-r", "file", path, "]"]));
        Assert.Equal(theirs, ours);
        // The discarded megabyte is a hole again (ext4, tmpfs and xfs all punch holes).
        Assert.Contains(ours, e => e.Type == 3 && e.Offset <= MiB && e.Offset + e.Length >= 2 * MiB);
        Assert.Contains(ours, e => e.Type == 0 && e.Offset <= 2 * MiB && e.Offset + e.Length >= 3 * MiB);
    }

    [Fact]
    public void FileExport_NbdcopyRoundTrip_AndReadOnly()
    {
        using var dir = new TempDirectory();
        string path = dir.File("disk.img");
        string input = dir.File("in.bin");
        byte[] data = new byte[10 * MiB + 4096];
        new Random(12).NextBytes(data);
        File.WriteAllBytes(input, data);
        using (FileStream f = File.Create(path))
            f.SetLength(data.Length);
        using (var server = TestServer.Start(new FileExport(path)))
            Clients.Ok("/usr/bin/nbdcopy", "--flush", input, server.Uri);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(path)), "the file differs from what nbdcopy copied in");

        using var readOnly = TestServer.Start(new FileExport(path, readOnly: true));
        Assert.Equal(0, Clients.Libnbd("nbdinfo", "--is", "read-only", readOnly.Uri).ExitCode);
        string output = dir.File("out.bin");
        Clients.Ok("/usr/bin/nbdcopy", readOnly.Uri, output);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(output)), "the copy out differs");
        RunResult write = Clients.Run("qemu-io", ["-f", "raw", "-c", "write 0 4k", readOnly.Uri]);
        Assert.NotEqual(0, write.ExitCode);
    }

    [Fact]
    public void StreamExport_OverAMemoryStream_CopiesOutByteForByte()
    {
        byte[] data = new byte[3 * MiB + 77];
        new Random(13).NextBytes(data);
        using var server = TestServer.Start(new StreamExport(new MemoryStream(data, writable: false)));
        string output = server.Directory.File("out.bin");
        Clients.Ok("/usr/bin/nbdcopy", "--connections=4", server.Uri, output);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(output)), "the copy differs from the stream");
        Assert.Equal("Images are identical.\n", Clients.Ok("qemu-img", "compare", "-f", "raw", "-F", "raw", output, server.Uri));
        Assert.Equal(0, Clients.Libnbd("nbdinfo", "--is", "read-only", server.Uri).ExitCode);
    }

    /// <summary>An export without extents (pattern) maps as one data extent, as nbdkit's pattern does.</summary>
    [Fact]
    public void ExportWithoutExtents_MapsAsAllData()
    {
        using var server = TestServer.Start(new PatternExport(5 * MiB + 3));
        Assert.Equal([(0L, 5 * MiB + 3, 0)], Map(Clients.Run("/usr/bin/nbdinfo", ["--map", "--json", server.Uri])));
    }
}
