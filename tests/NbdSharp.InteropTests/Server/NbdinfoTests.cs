using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text.Json;
using NbdSharp.Server;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>libnbd's nbdinfo (Debian's 1.14, and 1.22 when built locally) describing exports of NbdSharp's server.</summary>
public class NbdinfoTests
{
    private const long MiB = 1 << 20;
    private const int Page = MemoryExport.PageSize;

    [Fact]
    public void Plain_DescribesAMemoryExport()
    {
        using var server = TestServer.Start(new MemoryExport(64 * MiB));
        string output = Clients.Libnbd("nbdinfo", server.Uri).Stdout;
        string[] lines = output.Split('\n');
        Assert.Equal("protocol: newstyle-fixed without TLS, using structured packets", lines[0]);
        Assert.Equal("export=\"\":", lines[1]);
        Assert.Contains("\texport-size: 67108864 (64M)", lines);
        Assert.Contains("\turi: " + server.Uri, lines);
        int contexts = Array.IndexOf(lines, "\tcontexts:");
        Assert.True(contexts > 0, output);
        Assert.Equal("\t\tbase:allocation", lines[contexts + 1]);
        foreach (string flag in new[] { "can_cache", "can_df", "can_fast_zero", "can_flush", "can_fua", "can_multi_conn", "can_trim", "can_zero" })
            Assert.Contains("\t" + flag + ": true", lines);
        Assert.Contains("\tis_read_only: false", lines);
        Assert.Contains("\tis_rotational: false", lines);
        Assert.Contains("\tblock_size_minimum: 1", lines);
        Assert.Contains("\tblock_size_preferred: 4096", lines);
        Assert.Contains("\tblock_size_maximum: 33554432", lines);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(12_345_679L)]
    [InlineData(5L << 30)]
    [InlineData(long.MaxValue)]
    public void Size_PrintsTheExactSize(long size)
    {
        using var server = TestServer.Start(new NullExport(size));
        Assert.Equal(size.ToString(CultureInfo.InvariantCulture) + "\n", Clients.Libnbd("nbdinfo", "--size", server.Uri).Stdout);
    }

    [Fact]
    public void Json_ReportsSizeFlagsContextsBlockSizesAndDescription()
    {
        var export = new ConfigurableExport(3 * MiB + 512)
        {
            Blocks = new ExportBlockSize(512, 8192, 1 << 20),
            Rotational = true,
            Trim = false,
            Cache = false,
            MultiConn = false,
            Fua = false,
            FastZero = true,
        };
        using var server = TestServer.Start(null, new ExportSpec("cfg", export, "a disk with its own block sizes"));
        JsonElement root = Json(Clients.Libnbd("nbdinfo", "--json", server.UriFor("cfg")).Stdout);
        Assert.Equal("newstyle-fixed", root.GetProperty("protocol").GetString());
        Assert.False(root.GetProperty("TLS").GetBoolean());
        Assert.True(root.GetProperty("structured").GetBoolean());
        JsonElement e = Assert.Single(root.GetProperty("exports").EnumerateArray());
        Assert.Equal("cfg", e.GetProperty("export-name").GetString());
        Assert.Equal("a disk with its own block sizes", e.GetProperty("description").GetString());
        Assert.Equal(3 * MiB + 512, e.GetProperty("export-size").GetInt64());
        Assert.Equal(["base:allocation"], e.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()));
        Assert.True(e.GetProperty("is_rotational").GetBoolean());
        Assert.False(e.GetProperty("is_read_only").GetBoolean());
        Assert.False(e.GetProperty("can_cache").GetBoolean());
        Assert.True(e.GetProperty("can_df").GetBoolean());
        Assert.True(e.GetProperty("can_fast_zero").GetBoolean());
        Assert.True(e.GetProperty("can_flush").GetBoolean());
        Assert.False(e.GetProperty("can_fua").GetBoolean());
        Assert.False(e.GetProperty("can_multi_conn").GetBoolean());
        Assert.False(e.GetProperty("can_trim").GetBoolean());
        Assert.True(e.GetProperty("can_zero").GetBoolean());
        Assert.Equal(512, e.GetProperty("block_size_minimum").GetInt64());
        Assert.Equal(8192, e.GetProperty("block_size_preferred").GetInt64());
        Assert.Equal(1 << 20, e.GetProperty("block_size_maximum").GetInt64());
    }

    [Fact]
    public void Json_ReadOnlyPattern_AdvertisesNoWriteCommands()
    {
        using var server = TestServer.Start(new PatternExport(2 * MiB));
        JsonElement e = Json(Clients.Libnbd("nbdinfo", "--json", server.Uri).Stdout).GetProperty("exports")[0];
        Assert.True(e.GetProperty("is_read_only").GetBoolean());
        foreach (string flag in new[] { "can_fast_zero", "can_flush", "can_fua", "can_trim", "can_zero" })
            Assert.False(e.GetProperty(flag).GetBoolean(), flag);
        Assert.True(e.GetProperty("can_cache").GetBoolean());
        Assert.True(e.GetProperty("can_multi_conn").GetBoolean());
        Assert.Equal(2 * MiB, e.GetProperty("export-size").GetInt64());
        // No description was given: nbdinfo prints none.
        Assert.False(e.TryGetProperty("description", out _));
    }

    [Fact]
    public void List_ShowsEveryExportWithItsDescription()
    {
        using var server = TestServer.Start(null,
            new ExportSpec("disk1", new MemoryExport(1 * MiB), "the first disk"),
            new ExportSpec("pattern", new PatternExport(2 * MiB), "nbdkit's pattern, read-only"),
            new ExportSpec("nodesc", new NullExport(3 * MiB)),
            new ExportSpec("ünïcode ✓", new NullExport(4 * MiB), "описание"));
        JsonElement root = Json(Clients.Libnbd("nbdinfo", "--list", "--json", server.Uri).Stdout);
        var exports = root.GetProperty("exports").EnumerateArray().ToDictionary(e => e.GetProperty("export-name").GetString()!);
        Assert.Equal(["disk1", "nodesc", "pattern", "ünïcode ✓"], exports.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("the first disk", exports["disk1"].GetProperty("description").GetString());
        Assert.Equal("nbdkit's pattern, read-only", exports["pattern"].GetProperty("description").GetString());
        Assert.Equal("описание", exports["ünïcode ✓"].GetProperty("description").GetString());
        Assert.False(exports["nodesc"].TryGetProperty("description", out _));
        Assert.Equal(1 * MiB, exports["disk1"].GetProperty("export-size").GetInt64());
        Assert.Equal(2 * MiB, exports["pattern"].GetProperty("export-size").GetInt64());
        Assert.Equal(3 * MiB, exports["nodesc"].GetProperty("export-size").GetInt64());
        Assert.Equal(4 * MiB, exports["ünïcode ✓"].GetProperty("export-size").GetInt64());
        Assert.True(exports["pattern"].GetProperty("is_read_only").GetBoolean());
        Assert.False(exports["disk1"].GetProperty("is_read_only").GetBoolean());

        // The plain listing names them in the server's order.
        string text = Clients.Libnbd("nbdinfo", "--list", server.Uri).Stdout;
        int[] at = new[] { "export=\"disk1\":", "export=\"pattern\":", "export=\"nodesc\":", "export=\"ünïcode ✓\":" }
            .Select(s => text.IndexOf(s, StringComparison.Ordinal)).ToArray();
        Assert.All(at, i => Assert.True(i >= 0, text));
        Assert.Equal(at.Order().ToArray(), at);
        Assert.Contains("\tdescription: the first disk\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void List_Refused_WhenListingIsNotAllowed()
    {
        using var server = TestServer.Start(new NbdServerOptions { AllowList = false },
            new ExportSpec("a", new MemoryExport(MiB)), new ExportSpec("b", new MemoryExport(MiB)));
        RunResult list = Clients.Libnbd("nbdinfo", "--list", server.Uri);
        Assert.NotEqual(0, list.ExitCode);
        Assert.DoesNotContain("export=\"b\"", list.Stdout, StringComparison.Ordinal);
        // The export itself is still reachable by name.
        Assert.Equal("1048576\n", Clients.Libnbd("nbdinfo", "--size", server.UriFor("b")).Stdout);
    }

    [Fact]
    public void Map_MatchesWhatWasWrittenAndTrimmed()
    {
        const long size = 8 * MiB;
        var memory = new MemoryExport(size);
        using var server = TestServer.Start(memory);
        var model = new bool[size / Page];
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            void Write(long offset, int length)
            {
                byte[] data = new byte[length];
                new Random((int)offset).NextBytes(data);
                data[0] = data[^1] = 0xA5;
                h.Pwrite(data, (ulong)offset);
                for (long p = offset / Page; p <= (offset + length - 1) / Page; p++)
                    model[p] = true;
            }
            Write(Page, 2 * Page);
            Write(MiB + 100, 5);
            Write(4 * MiB, (int)MiB);
            Write(size - 10, 10);
            h.Trim(2 * Page, (ulong)(4 * MiB));
            model[4 * MiB / Page] = model[4 * MiB / Page + 1] = false;
            h.Shutdown();
        }

        var expected = new List<(long Offset, long Length, int Type)>();
        for (long p = 0; p < model.Length; p++)
        {
            int type = model[p] ? 0 : 3;
            if (expected.Count > 0 && expected[^1].Type == type)
                expected[^1] = (expected[^1].Offset, expected[^1].Length + Page, type);
            else
                expected.Add((p * Page, Page, type));
        }
        Assert.Equal(8, expected.Count); // hole, data, hole, data, hole, data, hole, data

        JsonElement map = Json(Clients.Libnbd("nbdinfo", "--map", "--json", server.Uri).Stdout);
        var seen = map.EnumerateArray().Select(e =>
        {
            int type = e.GetProperty("type").GetInt32();
            Assert.Equal(type == 0 ? "data" : "hole,zero", e.GetProperty("description").GetString());
            return (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), type);
        }).ToList();
        Assert.Equal(expected, seen);

        // The plain map says the same, and the totals add up.
        string[] rows = Clients.Libnbd("nbdinfo", "--map", server.Uri).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(expected.Count, rows.Length);
        for (int i = 0; i < rows.Length; i++)
        {
            string[] f = rows[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(expected[i].Offset, long.Parse(f[0], CultureInfo.InvariantCulture));
            Assert.Equal(expected[i].Length, long.Parse(f[1], CultureInfo.InvariantCulture));
            Assert.Equal(expected[i].Type, int.Parse(f[2], CultureInfo.InvariantCulture));
        }
        JsonElement totals = Json(Clients.Libnbd("nbdinfo", "--map", "--totals", "--json", server.Uri).Stdout);
        long data = expected.Where(e => e.Type == 0).Sum(e => e.Length);
        var byType = totals.EnumerateArray().ToDictionary(t => t.GetProperty("type").GetInt32(), t => t.GetProperty("size").GetInt64());
        Assert.Equal(data, byType[0]);
        Assert.Equal(size - data, byType[3]);
        Assert.Equal(data, memory.AllocatedBytes);
    }

    public static TheoryData<string, string, string, int> CanAndIs => new()
    {
        // export, --can/--is, what, exit code (0 true, 2 false)
        { "memory", "--can", "connect", 0 },
        { "memory", "--can", "read", 0 },
        { "memory", "--can", "write", 0 },
        { "memory", "--can", "trim", 0 },
        { "memory", "--can", "zero", 0 },
        { "memory", "--can", "fast-zero", 0 },
        { "memory", "--can", "fua", 0 },
        { "memory", "--can", "flush", 0 },
        { "memory", "--can", "cache", 0 },
        { "memory", "--can", "multi-conn", 0 },
        { "memory", "--can", "df", 0 },
        { "memory", "--can", "structured-reply", 0 },
        { "memory", "--is", "read-only", 2 },
        { "memory", "--is", "rotational", 2 },
        { "memory", "--is", "tls", 2 },
        { "pattern", "--can", "read", 0 },
        { "pattern", "--can", "write", 2 },
        { "pattern", "--can", "trim", 2 },
        { "pattern", "--can", "zero", 2 },
        { "pattern", "--can", "fast-zero", 2 },
        { "pattern", "--can", "fua", 2 },
        { "pattern", "--can", "flush", 2 },
        { "pattern", "--can", "cache", 0 },
        { "pattern", "--is", "read-only", 0 },
        { "readonly-memory", "--is", "read-only", 0 },
        { "readonly-memory", "--can", "write", 2 },
        { "readonly-memory", "--can", "trim", 2 },
        // As nbdkit -r memory: a read-only export keeps flush.
        { "readonly-memory", "--can", "flush", 0 },
        { "bare", "--can", "trim", 2 },
        { "bare", "--can", "flush", 2 },
        { "bare", "--can", "fua", 2 },
        { "bare", "--can", "cache", 2 },
        { "bare", "--can", "multi-conn", 2 },
        // Write-zeroes is always offered on a writable export (the server writes zeroes itself), and fast zero with
        // it, failing fast (nbdkit does the same for a plugin without .zero).
        { "bare", "--can", "zero", 0 },
        { "bare", "--can", "fast-zero", 0 },
        { "bare", "--is", "rotational", 0 },
        { "no-sr", "--can", "structured-reply", 2 },
        { "no-sr", "--can", "df", 2 },
    };

    [Theory]
    [MemberData(nameof(CanAndIs))]
    public void CanAndIs_ExitCodesFollowTheExport(string kind, string option, string what, int exitCode)
    {
        NbdExport export = kind switch
        {
            "memory" or "no-sr" => new MemoryExport(MiB),
            "pattern" => new PatternExport(MiB),
            "readonly-memory" => new ReadOnlyExport(new MemoryExport(MiB), ownsInner: true),
            "bare" => new ConfigurableExport(MiB)
            {
                Flush = false, Fua = false, Trim = false, Zero = false, FastZero = false, Cache = false, MultiConn = false, Rotational = true,
            },
            _ => throw new ArgumentException(kind),
        };
        using var server = TestServer.Start(export, kind == "no-sr" ? new NbdServerOptions { StructuredReplies = false } : null);
        RunResult result = Clients.Libnbd("nbdinfo", option, what, server.Uri);
        Assert.True(exitCode == result.ExitCode, $"nbdinfo {option} {what} on {kind}: {result}");
    }

    /// <summary>
    /// nbdkit advertises NBD_FLAG_SEND_FAST_ZERO for a plugin that implements .zero only when its .can_fast_zero says
    /// so (sparse-random: can_fast_zero false). An export with <see cref="NbdExport.CanZero"/> and without
    /// <see cref="NbdExport.CanFastZero"/> should not advertise it either, and a fast zero sent anyway (strict mode off)
    /// should fail with ENOTSUP without reaching the export.
    /// </summary>
    [Fact]
    public void FastZero_NotAdvertised_WhenTheExportZeroesButNotFast()
    {
        var export = new ConfigurableExport(MiB) { Zero = true, FastZero = false };
        using var server = TestServer.Start(export);
        RunResult result = Clients.Libnbd("nbdinfo", "--can", "fast-zero", server.Uri);
        Assert.True(result.ExitCode == 2, "NBD_FLAG_SEND_FAST_ZERO is advertised although CanFastZero is false: " + result);
    }

    /// <summary>The same comparison nbdinfo makes against nbdkit: our sparse-random export's flags are nbdkit's.</summary>
    [Fact]
    public void SparseRandom_FlagsMatchNbdkitsSparseRandom()
    {
        using var ours = TestServer.Start(new SparseRandomExport(64 * MiB, 1));
        using var nbdkit = NbdSharp.Testing.Peers.Nbdkit("sparse-random", "64M");
        JsonElement a = Json(Clients.Libnbd("nbdinfo", "--json", ours.Uri).Stdout).GetProperty("exports")[0];
        JsonElement b = Json(Clients.Libnbd("nbdinfo", "--json", nbdkit.Uri).Stdout).GetProperty("exports")[0];
        var differences = new List<string>();
        foreach (JsonProperty p in b.EnumerateObject())
        {
            if (p.Name is "uri")
                continue;
            if (!a.TryGetProperty(p.Name, out JsonElement mine) || mine.GetRawText() != p.Value.GetRawText())
                differences.Add($"{p.Name}: nbdkit {p.Value.GetRawText()}, ours {(a.TryGetProperty(p.Name, out JsonElement m) ? m.GetRawText() : "absent")}");
        }
        Assert.True(differences.Count == 0, string.Join("; ", differences));
    }

    /// <summary>
    /// libnbd 1.22's nbdinfo negotiates extended headers with our server (Debian's 1.14, qemu 7.2 and nbdkit 1.32 here
    /// predate them), and its map of a 6 GiB disk with data past 4 GiB is what was written.
    /// </summary>
    [Fact]
    public void Libnbd122_NegotiatesExtendedHeaders_AndMapsPast4GiB()
    {
        const long size = 6L << 30;
        var memory = new MemoryExport(size);
        byte[] data = new byte[3 * Page];
        new Random(5).NextBytes(data);
        data[0] = data[^1] = 1;
        memory.Write((5L << 30) - Page, data);
        using var server = TestServer.Start(memory);
        RunResult plain = Clients.Libnbd122("nbdinfo", server.Uri);
        Assert.True(plain.ExitCode == 0, plain.ToString());
        Assert.StartsWith("protocol: newstyle-fixed without TLS, using extended packets\n", plain.Stdout, StringComparison.Ordinal);
        Assert.True(server.Log.WaitFor("with extended replies", TimeSpan.FromSeconds(10)), server.Log.ToString());

        JsonElement map = Json(Clients.Libnbd122("nbdinfo", "--map", "--json", server.Uri).Stdout);
        var seen = map.EnumerateArray().Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(),
            e.GetProperty("type").GetInt32())).ToList();
        Assert.Equal([(0L, (5L << 30) - Page, 3), ((5L << 30) - Page, 3L * Page, 0), ((5L << 30) + 2 * Page, size - (5L << 30) - 2 * Page, 3)], seen);

        using var structuredOnly = TestServer.Start(new MemoryExport(MiB), new NbdServerOptions { ExtendedHeaders = false });
        Assert.StartsWith("protocol: newstyle-fixed without TLS, using structured packets\n",
            Clients.Libnbd122("nbdinfo", structuredOnly.Uri).Stdout, StringComparison.Ordinal);
    }

    /// <summary>
    /// libnbd 1.14 (compact requests, 32-bit extents) maps a 6 GiB export with data past 4 GiB: the replies, each under
    /// 4 GiB (nbdinfo joins neighbours of one type), are together what was written.
    /// </summary>
    [Fact]
    public void Map_Past4GiB_WithCompactRequests()
    {
        const long size = 6L << 30;
        var memory = new MemoryExport(size);
        memory.Write((5L << 30) + 100, [1, 2, 3]);
        using var server = TestServer.Start(memory);
        JsonElement map = Json(Clients.Libnbd("nbdinfo", "--map", "--json", server.Uri).Stdout);
        var merged = new List<(long Offset, long Length, int Type)>();
        foreach (JsonElement e in map.EnumerateArray())
        {
            long offset = e.GetProperty("offset").GetInt64(), length = e.GetProperty("length").GetInt64();
            int type = e.GetProperty("type").GetInt32();
            Assert.Equal(merged.Count == 0 ? 0 : merged[^1].Offset + merged[^1].Length, offset);
            if (merged.Count > 0 && merged[^1].Type == type)
                merged[^1] = (merged[^1].Offset, merged[^1].Length + length, type);
            else
                merged.Add((offset, length, type));
        }
        Assert.Equal([(0L, 5L << 30, 3), (5L << 30, (long)Page, 0), ((5L << 30) + Page, size - (5L << 30) - Page, 3)], merged);
    }

    [Fact]
    public void Oldstyle_IsDescribed()
    {
        using var server = TestServer.Start(new MemoryExport(5 * MiB), new NbdServerOptions { Oldstyle = true });
        RunResult result = Clients.Libnbd("nbdinfo", "--json", server.Uri);
        Assert.True(result.ExitCode == 0, result.ToString());
        JsonElement root = Json(result.Stdout);
        Assert.Equal("oldstyle", root.GetProperty("protocol").GetString());
        Assert.False(root.GetProperty("structured").GetBoolean());
        JsonElement e = root.GetProperty("exports")[0];
        Assert.Equal(5 * MiB, e.GetProperty("export-size").GetInt64());
        Assert.True(e.GetProperty("can_trim").GetBoolean());
        Assert.False(e.GetProperty("can_df").GetBoolean());
    }

    private static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();
}
