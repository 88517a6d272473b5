using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.Json;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>libnbd's nbdcopy and nbddump reading from and writing to NbdSharp's server.</summary>
public class NbdcopyTests
{
    private const long MiB = 1 << 20;

    private static byte[] RandomFile(string path, int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        File.WriteAllBytes(path, data);
        return data;
    }

    private static void SameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes instead of {expected.Length}");
        int at = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(at == expected.Length, $"{what}: first difference at byte {at}");
    }

    [Theory]
    [InlineData(4 * MiB, "1", true)]
    [InlineData(64 * MiB, "4", true)]
    [InlineData(64 * MiB, "4", false)]
    [InlineData(5 * MiB + 123, "2", true)]
    public void RandomFile_IntoTheServerAndBackOut_IsByteForByte(long size, string connections, bool threadPerConnection)
    {
        var memory = new MemoryExport(size);
        using var server = TestServer.Start(memory, new NbdServerOptions { ThreadPerConnection = threadPerConnection });
        string input = server.Directory.File("in.bin");
        string output = server.Directory.File("out.bin");
        byte[] data = RandomFile(input, (int)size, (int)size);

        Clients.Ok("/usr/bin/nbdcopy", "--flush", "--connections=" + connections, input, server.Uri);
        // What reached the export, read in-process without NBD.
        byte[] inside = new byte[size];
        memory.Read(0, inside);
        SameBytes(data, inside, "the export after nbdcopy in");

        Clients.Ok("/usr/bin/nbdcopy", "--connections=" + connections, server.Uri, output);
        SameBytes(data, File.ReadAllBytes(output), "the file nbdcopy copied out");
        // Every connection nbdcopy opened disconnected cleanly (NBD_CMD_DISC).
        Assert.True(server.Log.Count("closed: the client disconnected") >= 2, server.Log.ToString());
        Assert.Equal(0, server.Log.Count("Warning:"));
    }

    [Theory]
    [InlineData(16 * MiB)]
    [InlineData(3 * MiB + 5)]
    public void Pattern_IsByteForByteNbdkitsPattern(long size)
    {
        using var ours = TestServer.Start(new PatternExport(size));
        using ServerProcess nbdkit = Peers.Nbdkit("pattern", size.ToString(CultureInfo.InvariantCulture));
        string a = ours.Directory.File("ours.bin");
        string b = ours.Directory.File("nbdkit.bin");
        Clients.Ok("/usr/bin/nbdcopy", ours.Uri, a);
        Clients.Ok("/usr/bin/nbdcopy", nbdkit.Uri, b);
        byte[] mine = File.ReadAllBytes(a);
        Assert.Equal(size, mine.Length);
        SameBytes(File.ReadAllBytes(b), mine, "our pattern against nbdkit's");
        // And the pattern is what its definition says: the big-endian offset of each 8-byte word.
        Assert.Equal(0x123458UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(mine.AsSpan(0x123458)));
    }

    /// <summary>
    /// A sparse-random export copied to a file: by default nbdcopy leaves the export's holes as holes in the file, so
    /// the file's map (through nbdkit's file plugin) equals the export's map from nbdinfo, and the file occupies only
    /// the data's bytes; with --allocated it occupies more. The bytes are the same either way, and data blocks are
    /// exactly the non-zero ones.
    /// </summary>
    [Fact]
    public void SparseRandom_ToAFile_KeepsTheHoles_UnlessAllocated()
    {
        const long size = 32 * MiB;
        var export = new SparseRandomExport(size, seed: 42, percent: 30, runLength: 256 * 1024);
        using var server = TestServer.Start(export);
        List<(long Offset, long Length, int Type)> exportMap = Map(server.Uri);
        Assert.Contains(exportMap, e => e.Type == 0);
        Assert.Contains(exportMap, e => e.Type == 3);
        Assert.Equal(export.DataBytes, exportMap.Where(e => e.Type == 0).Sum(e => e.Length));

        string sparse = server.Directory.File("sparse.bin");
        Clients.Ok("/usr/bin/nbdcopy", server.Uri, sparse);
        byte[] bytes = File.ReadAllBytes(sparse);
        // The map agrees with the bytes: data extents hold no zero block, holes hold only zeroes.
        foreach (var (offset, length, type) in exportMap)
        {
            for (long block = offset; block < offset + length; block += SparseRandomExport.BlockSize4K)
            {
                bool zero = !bytes.AsSpan((int)block, SparseRandomExport.BlockSize4K).ContainsAnyExcept((byte)0);
                Assert.True(zero == (type == 3), $"block at {block} is {(zero ? "zero" : "data")} in an extent of type {type}");
            }
        }
        Assert.Equal(exportMap, FileMap(sparse));
        long sparseBytes = AllocatedBytes(sparse);
        Assert.InRange(sparseBytes, export.DataBytes, export.DataBytes + MiB);

        // --allocated: the same bytes, with (some of) the holes written out.
        string allocated = server.Directory.File("allocated.bin");
        Clients.Ok("/usr/bin/nbdcopy", "--allocated", server.Uri, allocated);
        SameBytes(bytes, File.ReadAllBytes(allocated), "--allocated against the sparse copy");
        Assert.True(AllocatedBytes(allocated) > sparseBytes, "--allocated allocated no more than the sparse copy");
    }

    /// <summary>The bytes of disk a file occupies (st_blocks * 512).</summary>
    private static long AllocatedBytes(string file) =>
        long.Parse(Clients.Ok("stat", "-c", "%b", file).Trim(), CultureInfo.InvariantCulture) * 512;

    /// <summary>
    /// nbdcopy from one sparse-random export into another with the same seed: the destination accepts only writes of
    /// the bytes it already holds and zeroes over its holes, so the copy succeeding proves every byte and hole arrived
    /// where it belongs; with another seed it fails.
    /// </summary>
    [Fact]
    public void SparseRandom_IntoTheSameSparseRandom_SelfChecks()
    {
        const long size = 64 * MiB;
        using var source = TestServer.Start(new SparseRandomExport(size, seed: 9, percent: 25, runLength: MiB, randomContent: true));
        using var same = TestServer.Start(new SparseRandomExport(size, seed: 9, percent: 25, runLength: MiB, randomContent: true));
        using var other = TestServer.Start(new SparseRandomExport(size, seed: 10, percent: 25, runLength: MiB, randomContent: true));
        Clients.Ok("/usr/bin/nbdcopy", source.Uri, same.Uri);
        Assert.Equal(0, same.Log.Count("Warning:"));
        RunResult wrong = Clients.Run("/usr/bin/nbdcopy", [source.Uri, other.Uri]);
        Assert.True(wrong.ExitCode != 0, "a copy into a different sparse-random disk succeeded: " + wrong);
        Assert.Contains("Input/output error", wrong.Stderr, StringComparison.Ordinal);
    }

    /// <summary>nbdcopy from our server into our server (two exports, same server), then compared with qemu-img compare.</summary>
    [Fact]
    public void ExportToExport_OnOneServer()
    {
        var from = new MemoryExport(8 * MiB);
        var to = new MemoryExport(8 * MiB);
        byte[] data = new byte[3 * MiB];
        new Random(77).NextBytes(data);
        from.Write(MiB, data);
        using var server = TestServer.Start(null, new ExportSpec("from", from), new ExportSpec("to", to));
        Clients.Ok("/usr/bin/nbdcopy", server.UriFor("from"), server.UriFor("to"));
        byte[] back = new byte[3 * MiB];
        to.Read(MiB, back);
        SameBytes(data, back, "the destination export");
        Assert.Equal(from.AllocatedBytes, to.AllocatedBytes);
        Assert.Equal("Images are identical.\n", Clients.Ok("qemu-img", "compare", "-f", "raw", "-F", "raw",
            server.UriFor("from"), server.UriFor("to")));
    }

    [Fact]
    public void Nbddump_OfPattern_IsNbddumpOfNbdkitsPattern()
    {
        const string size = "8200";
        using var ours = TestServer.Start(new PatternExport(8200));
        using ServerProcess nbdkit = Peers.Nbdkit("pattern", size);
        string mine = Clients.Ok("/usr/bin/nbddump", ours.Uri);
        Assert.Equal(Clients.Ok("/usr/bin/nbddump", nbdkit.Uri), mine);
        Assert.StartsWith("0000000000: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 08 |................|\n", mine, StringComparison.Ordinal);
        Assert.Contains("0000002000: 00 00 00 00 00 00 20 00                          |...... .        |\n", mine, StringComparison.Ordinal);
    }

    [Fact]
    public void Nbddump_ShowsWhatWasWritten_AndCollapsesZeroes()
    {
        var memory = new MemoryExport(MiB);
        memory.Write(0x10000 + 3, "Hello, NBD!"u8);
        using var server = TestServer.Start(memory);
        string dump = Clients.Ok("/usr/bin/nbddump", server.Uri);
        Assert.Contains("0000010000: 00 00 00 48 65 6c 6c 6f  2c 20 4e 42 44 21 00 00 |...Hello, NBD!..|\n", dump, StringComparison.Ordinal);
        // Runs of zero lines are collapsed to one "*" line: a 1 MiB disk with one line of data dumps in a few lines.
        Assert.True(dump.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length <= 6, dump);
        Assert.Contains("*\n", dump, StringComparison.Ordinal);
    }

    /// <summary>libnbd 1.22's nbddump over extended headers prints what 1.14's prints over structured replies.</summary>
    [Fact]
    public void Nbddump122_OverExtendedHeaders_Agrees()
    {
        var memory = new MemoryExport(256 * 1024);
        byte[] data = new byte[5000];
        new Random(3).NextBytes(data);
        memory.Write(70_001, data);
        using var server = TestServer.Start(memory);
        RunResult newer = Clients.Libnbd122("nbddump", server.Uri);
        Assert.True(newer.ExitCode == 0, newer.ToString());
        Assert.Equal(Clients.Ok("/usr/bin/nbddump", server.Uri), newer.Stdout);
        Assert.True(server.Log.WaitFor("with extended replies", TimeSpan.FromSeconds(10)), server.Log.ToString());
    }

    /// <summary>
    /// libnbd 1.22's nbdcopy over extended headers between two 6 GiB exports with data on both sides of 4 GiB: the
    /// destination ends up holding the same data in the same places, and nothing else.
    /// </summary>
    [Fact]
    public void Nbdcopy122_OverExtendedHeaders_Past4GiB()
    {
        const long size = 6L << 30;
        var from = new MemoryExport(size);
        var to = new MemoryExport(size);
        byte[] low = new byte[MiB];
        byte[] high = new byte[3 * MiB + 17];
        new Random(1).NextBytes(low);
        new Random(2).NextBytes(high);
        long highAt = (4L << 30) - MiB - 5; // straddles 4 GiB
        from.Write(12345, low);
        from.Write(highAt, high);
        using var server = TestServer.Start(null, new ExportSpec("from", from), new ExportSpec("to", to));
        RunResult copy = Clients.Libnbd122("nbdcopy", server.UriFor("from"), server.UriFor("to"));
        Assert.True(copy.ExitCode == 0, copy.ToString());
        Assert.True(server.Log.Count("with extended replies") >= 2, server.Log.ToString());
        byte[] back = new byte[high.Length];
        to.Read(highAt, back);
        SameBytes(high, back, "past 4 GiB");
        back = new byte[low.Length];
        to.Read(12345, back);
        SameBytes(low, back, "below 4 GiB");
        Assert.Equal(from.AllocatedBytes, to.AllocatedBytes);
    }

    private static List<(long Offset, long Length, int Type)> Map(string uri, params string[] before)
    {
        var args = new List<string> { "--map", "--json" };
        args.AddRange(before);
        args.Add(uri);
        RunResult result = Clients.Run("/usr/bin/nbdinfo", args);
        Assert.True(result.ExitCode == 0, result.ToString());
        return [.. JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32()))];
    }

    /// <summary>A file's allocation as nbdinfo maps it through nbdkit's file plugin (SEEK_HOLE/SEEK_DATA), started by socket activation.</summary>
    private static List<(long Offset, long Length, int Type)> FileMap(string file)
    {
        string nbdkit = Requires.Program("nbdkit");
        RunResult result = Clients.Run("/usr/bin/nbdinfo", ["--map", "--json", "--", "[", nbdkit, "-r", "file", file, "]"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        return [.. JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray().Select(e =>
            (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32()))];
    }
}
