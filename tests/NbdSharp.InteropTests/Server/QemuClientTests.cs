using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using NbdSharp.Server;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>qemu's NBD client (qemu-img and qemu-io 7.2, structured replies, no extended headers) against NbdSharp's server.</summary>
public class QemuClientTests
{
    private const long MiB = 1 << 20;
    private const int Page = MemoryExport.PageSize;

    private static byte[] Random(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        data[0] = data[^1] = 0x5A;
        return data;
    }

    private static void SameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes instead of {expected.Length}");
        int at = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(at == expected.Length, $"{what}: first difference at byte {at}");
    }

    [Fact]
    public void QemuImgInfo_ReportsTheSize()
    {
        using var server = TestServer.Start(null, new ExportSpec("disk", new MemoryExport(20 * MiB + 512)));
        JsonElement info = JsonDocument.Parse(Clients.Ok("qemu-img", "info", "--output=json", server.UriFor("disk"))).RootElement;
        Assert.Equal(20 * MiB + 512, info.GetProperty("virtual-size").GetInt64());
        Assert.Equal("raw", info.GetProperty("format").GetString());
    }

    [Fact]
    public void QemuImgConvert_OutOfTheServer_IsTheExport_WithItsHoles()
    {
        const long size = 12 * MiB;
        var memory = new MemoryExport(size);
        memory.Write(3 * Page + 17, Random(5 * Page, 1));
        memory.Write(8 * MiB, Random((int)MiB, 2));
        using var server = TestServer.Start(memory);
        string file = server.Directory.File("out.raw");
        Clients.Ok("qemu-img", "convert", "-f", "raw", "-O", "raw", server.Uri, file);
        byte[] expected = new byte[size];
        memory.Read(0, expected);
        SameBytes(expected, File.ReadAllBytes(file), "qemu-img convert's copy");

        // qemu's map of the export (from base:allocation) is MemoryExport's pages, and the copy kept the holes.
        var exportMap = QemuMap(server.Uri);
        Assert.Equal(
            [(0L, 3L * Page, false), (3L * Page, 6L * Page, true), (9L * Page, 8 * MiB - 9L * Page, false), (8 * MiB, MiB, true),
                (9 * MiB, 3 * MiB, false)],
            exportMap);
        // The copy's data lies inside the export's data (qemu-img convert also skips the zero blocks it finds inside
        // data and always allocates the file's first 4 KiB, for probing), so the holes stayed holes.
        foreach (var (start, length, data) in QemuMap(file).Where(r => r.Data && r.Start >= 4096))
            Assert.Contains(exportMap, e => e.Data && e.Start <= start && start + length <= e.Start + e.Length);
        Assert.DoesNotContain(QemuMap(file), r => r.Data && r.Start < 8 * MiB && r.Start + r.Length > 2 * MiB);
    }

    [Fact]
    public void QemuImgConvert_IntoTheServer_AndCompare()
    {
        const int size = (int)(9 * MiB) + 4096;
        var memory = new MemoryExport(size);
        using var server = TestServer.Start(memory);
        string file = server.Directory.File("in.raw");
        byte[] data = Random(size, 3);
        Array.Clear(data, (int)MiB, (int)(2 * MiB)); // a zero run: qemu-img writes it as zeroes (or skips it)
        File.WriteAllBytes(file, data);
        // Out-of-order writes from 16 coroutines: many requests in flight on qemu's one connection.
        Clients.Ok("qemu-img", "convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw", file, server.Uri);
        byte[] inside = new byte[size];
        memory.Read(0, inside);
        SameBytes(data, inside, "the export after qemu-img convert -n");

        RunResult same = Clients.Run("qemu-img", ["compare", "-f", "raw", "-F", "raw", file, server.Uri]);
        Assert.True(same.ExitCode == 0 && same.Stdout == "Images are identical.\n", same.ToString());

        memory.Write(5 * MiB + 3, [(byte)(data[5 * MiB + 3] ^ 0xFF)]);
        RunResult different = Clients.Run("qemu-img", ["compare", "-f", "raw", "-F", "raw", file, server.Uri]);
        Assert.Equal(1, different.ExitCode);
        Assert.Equal($"Content mismatch at offset {5 * MiB}!\n", different.Stdout);
    }

    [Fact]
    public void QemuIo_WriteReadDiscardWriteZeroes()
    {
        var memory = new MemoryExport(4 * MiB);
        using var server = TestServer.Start(memory);
        string output = Clients.Ok("qemu-io", "-f", "raw",
            "-c", "write -P 0x55 0 64k",
            "-c", "read -P 0x55 0 64k",
            "-c", "write -f -P 0x66 64k 128k",
            "-c", "flush",
            "-c", "read -P 0x66 64k 128k",
            "-c", "discard 0 64k",
            "-c", "write -z 64k 64k",
            "-c", "read -P 0 0 128k",
            "-c", "read -P 0x66 128k 64k",
            "-c", "write -z -u 1M 64k",
            "-c", "write -P 0x77 3M 100",
            "-c", "read -P 0x77 3M 100",
            server.Uri);
        string[] expected =
        [
            "wrote 65536/65536 bytes at offset 0",
            "read 65536/65536 bytes at offset 0",
            "wrote 131072/131072 bytes at offset 65536",
            "read 131072/131072 bytes at offset 65536",
            "discard 65536/65536 bytes at offset 0",
            "wrote 65536/65536 bytes at offset 65536",
            "read 131072/131072 bytes at offset 0",
            "read 65536/65536 bytes at offset 131072",
            "wrote 65536/65536 bytes at offset 1048576",
            "wrote 100/100 bytes at offset 3145728",
            "read 100/100 bytes at offset 3145728",
        ];
        string[] lines = output.Split('\n').Where(l => l.StartsWith("wrote ", StringComparison.Ordinal) || l.StartsWith("read ", StringComparison.Ordinal)
            || l.StartsWith("discard ", StringComparison.Ordinal)).ToArray();
        Assert.Equal(expected, lines);
        Assert.DoesNotContain("Pattern verification failed", output, StringComparison.Ordinal);
        Assert.DoesNotContain("failed", output, StringComparison.OrdinalIgnoreCase);

        // What the export holds now: zeroes up to 128k (page 0 discarded, page 1 zeroed: both freed), 0x66 in page 2,
        // 100 bytes of 0x77 at 3M, and nothing else.
        byte[] all = new byte[4 * MiB];
        memory.Read(0, all);
        Assert.False(all.AsSpan(0, 2 * Page).ContainsAnyExcept((byte)0));
        Assert.False(all.AsSpan(2 * Page, Page).ContainsAnyExcept((byte)0x66));
        Assert.False(all.AsSpan(3 * Page, (int)(3 * MiB) - 3 * Page).ContainsAnyExcept((byte)0));
        Assert.False(all.AsSpan((int)(3 * MiB), 100).ContainsAnyExcept((byte)0x77));
        Assert.False(all.AsSpan((int)(3 * MiB) + 100).ContainsAnyExcept((byte)0));
        Assert.Equal(2L * Page, memory.AllocatedBytes);
    }

    /// <summary>qemu-img bench: 2000 4 KiB writes, 32 in flight, then as many reads, all succeed.</summary>
    [Fact]
    public void QemuImgBench_ManyRequestsInFlight()
    {
        var memory = new MemoryExport(64 * MiB);
        using var server = TestServer.Start(memory);
        string write = Clients.Ok("qemu-img", "bench", "-f", "raw", "-w", "-c", "2000", "-d", "32", "-s", "4k", "-S", "12k", "--pattern=0x3c", server.Uri);
        Assert.Contains("Sending 2000 write requests, 4096 bytes each, 32 in parallel", write, StringComparison.Ordinal);
        string read = Clients.Ok("qemu-img", "bench", "-f", "raw", "-c", "2000", "-d", "32", "-s", "4k", "-S", "12k", server.Uri);
        Assert.Contains("Sending 2000 read requests", read, StringComparison.Ordinal);
        byte[] block = new byte[4096];
        memory.Read(1999L * 12 * 1024, block);
        Assert.All(block, b => Assert.Equal(0x3c, b));
        memory.Read(4096, block);
        Assert.All(block, b => Assert.Equal(0, b));
    }

    [Fact]
    public void QemuIo_PatternVerification_FailsOnWrongData()
    {
        using var server = TestServer.Start(new PatternExport(MiB));
        RunResult result = Clients.Run("qemu-io", ["-r", "-f", "raw", "-c", "read -P 0x55 0 4k", server.Uri]);
        Assert.Contains("Pattern verification failed at offset 0", result.Stdout + result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void QemuIo_ReadOnlyExport_ReadsButCannotOpenForWriting()
    {
        var memory = new MemoryExport(MiB);
        memory.Write(0, Enumerable.Repeat((byte)0x42, 4096).ToArray());
        using var server = TestServer.Start(new ReadOnlyExport(memory, ownsInner: true));
        string read = Clients.Ok("qemu-io", "-r", "-f", "raw", "-c", "read -P 0x42 0 4k", server.Uri);
        Assert.Contains("read 4096/4096 bytes at offset 0", read, StringComparison.Ordinal);
        RunResult write = Clients.Run("qemu-io", ["-f", "raw", "-c", "write 0 4k", server.Uri]);
        Assert.NotEqual(0, write.ExitCode);
        Assert.Contains("Permission denied", write.Stderr, StringComparison.Ordinal);
    }

    /// <summary>qemu-img map of an image or URI as (start, length, data) runs, neighbours of the same kind merged.</summary>
    private static List<(long Start, long Length, bool Data)> QemuMap(string image)
    {
        var runs = new List<(long Start, long Length, bool Data)>();
        foreach (JsonElement e in JsonDocument.Parse(Clients.Ok("qemu-img", "map", "--output=json", "-f", "raw", image)).RootElement.EnumerateArray())
        {
            long start = e.GetProperty("start").GetInt64(), length = e.GetProperty("length").GetInt64();
            bool data = e.GetProperty("data").GetBoolean();
            if (runs.Count > 0 && runs[^1].Data == data)
                runs[^1] = (runs[^1].Start, runs[^1].Length + length, data);
            else
                runs.Add((start, length, data));
        }
        return runs;
    }
}
