using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;
using static NbdSharp.ToolTests.NbdDump;

namespace NbdSharp.ToolTests;

/// <summary>
/// What the nbddump tests share: running libnbd's /usr/bin/nbddump (1.14) and ours, comparing stdout and exit code
/// byte for byte, and <see cref="Reference"/>, a plain port of libnbd's dump loop (checked against libnbd itself)
/// for what 1.14 lacks: --offset and size suffixes. The tests are in several classes so that xunit runs them in
/// parallel: each one mostly waits for processes.
/// </summary>
internal static class NbdDump
{
    internal const string Tool = "nbddump";

    internal static ToolResult Ours(params string[] args) => ToolProcess.RunOurs(Tool, args);

    internal static ToolResult Theirs(params string[] args) => ToolProcess.RunLibnbd(Tool, args);

    /// <summary>libnbd's nbddump and ours print the same and exit the same; the dump worked unless said otherwise.</summary>
    internal static void AssertSameAsLibnbd(string[] args, bool expectSuccess = true)
    {
        ToolResult theirs = Theirs(args);
        ToolResult ours = Ours(args);
        if (expectSuccess)
            Assert.True(theirs.ExitCode == 0, "libnbd's nbddump failed, the test is wrong: " + theirs);
        AssertSameOutput(theirs, ours, string.Join(' ', args));
    }

    internal static void AssertSameOutput(ToolResult expected, ToolResult actual, string what)
    {
        Assert.True(expected.ExitCode == actual.ExitCode,
            $"{what}: exit {actual.ExitCode}, libnbd {expected.ExitCode}\nours: {actual}\nlibnbd: {expected}");
        AssertSameText(expected.Stdout, actual.Stdout, what);
        if (actual.ExitCode == 0)
            Assert.True(actual.Stderr.Length == 0, $"{what}: unexpected stderr: {actual.Stderr}");
    }

    /// <summary>Equal texts, or a failure that shows the first line where they part.</summary>
    internal static void AssertSameText(string expected, string actual, string what)
    {
        if (expected == actual)
            return;
        string[] e = expected.Split('\n');
        string[] a = actual.Split('\n');
        int line = 0;
        while (line < e.Length && line < a.Length && e[line] == a[line])
            line++;
        Assert.Fail($"{what}: output differs at line {line + 1} ({actual.Length} chars, expected {expected.Length})\n" +
            $"expected: {Visible(line < e.Length ? e[line] : "<end>")}\nactual:   {Visible(line < a.Length ? a[line] : "<end>")}");
    }

    private static string Visible(string text) => text.Replace("\u001b", "\\e", StringComparison.Ordinal);

    /// <summary>
    /// One line on stderr naming the program and the problem, never a stack trace. A server run as
    /// <c>[ CMD ARGS ... ]</c> shares stderr: its lines, before ours, are not counted.
    /// </summary>
    internal static void AssertFailed(ToolResult result, params string[] mentions)
    {
        Assert.True(result.ExitCode == 1, result.ToString());
        string[] lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int ours = Array.FindIndex(lines, line => line.StartsWith(Tool + ":", StringComparison.Ordinal));
        Assert.True(ours >= 0 && ours == lines.Length - 1, result.ToString());
        Assert.True(ours == 0 || lines.Take(ours).All(line => line.StartsWith("nbdkit", StringComparison.Ordinal) ||
            line.StartsWith("nbdsharp-socket-activation", StringComparison.Ordinal)), result.ToString());
        lines = lines[ours..];
        Assert.StartsWith(Tool + ": ", lines[0], StringComparison.Ordinal);
        foreach (string mention in mentions)
            Assert.Contains(mention, lines[0], StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
        Assert.Equal("", result.Stdout);
    }

    /// <summary><c>-- [ nbdkit ARGS... ]</c> after <paramref name="options"/>.</summary>
    internal static string[] Activated(string[] options, params string[] nbdkit) =>
        [.. options, "--", "[", Requires.Program("nbdkit"), .. nbdkit, "]"];

    internal static string I(long n) => n.ToString(CultureInfo.InvariantCulture);

    internal static ulong ParseTestSize(string text)
    {
        ulong scale = 1;
        char last = text[^1];
        if (last is 'k' or 'K' or 'M' or 's')
        {
            scale = last switch { 's' => 512UL, 'M' => 1UL << 20, _ => 1024UL };
            text = text[..^1];
        }
        return ulong.Parse(text, CultureInfo.InvariantCulture) * scale;
    }

    internal static byte[] ReadAll(string uri)
    {
        using var h = new NbdHandle();
        h.ConnectUri(uri);
        byte[] disk = new byte[h.GetSize()];
        for (int offset = 0; offset < disk.Length; offset += 1 << 20)
            h.Pread(disk.AsSpan(offset, Math.Min(1 << 20, disk.Length - offset)), (ulong)offset);
        return disk;
    }

    /// <summary>
    /// libnbd's do_dump, line by line over the whole export in memory: from <paramref name="skip"/> (whose line is
    /// never collapsed), at most <paramref name="limit"/> bytes; a line equal to the one printed before it becomes
    /// one marker for the run, except the line that reaches the end of the export.
    /// </summary>
    internal static string Reference(byte[] disk, ulong skip, ulong limit, bool colour)
    {
        string C(string code) => colour ? "\u001b[" + code + "m" : "";
        string restore = colour ? "\u001b[0m" : "";
        string splat = colour ? "☆" : "*", bar = colour ? "│" : "|", dot = colour ? "·" : ".";
        ulong size = (ulong)disk.Length;
        ulong count = Math.Min(size - skip, limit);
        var output = new StringBuilder();
        byte[] last = new byte[16];
        bool printedSplat = false;
        for (ulong i = 0; i < count; i += 16)
        {
            ulong position = skip + i;
            int n = (int)Math.Min(16, count - i);
            byte[] line = new byte[16];
            Array.Copy(disk, (long)position, line, 0, n);
            if (position > skip && position + 16 < size && line.AsSpan().SequenceEqual(last))
            {
                if (!printedSplat)
                    output.Append(splat).Append('\n');
                printedSplat = true;
                continue;
            }
            printedSplat = false;
            last = line;
            output.Append(C("22;32")).Append(position.ToString("x10", CultureInfo.InvariantCulture)).Append(C("22;90")).Append(": ");
            int j;
            for (j = 0; j < n; j++)
            {
                output.Append(C(line[j] != 0 ? "1;34" : "22;90")).Append(line[j].ToString("x2", CultureInfo.InvariantCulture)).Append(' ');
                if (j == 7)
                    output.Append(' ');
            }
            output.Append(C("22;90"));
            for (; j < 16; j++)
                output.Append(j == 7 ? "    " : "   ");
            output.Append(bar);
            for (j = 0; j < n; j++)
            {
                char c = (char)line[j];
                if (c < 128 && char.IsAsciiLetterOrDigit(c))
                    output.Append(C("1;31")).Append(c);
                else if (c is >= ' ' and <= '~')
                    output.Append(C("1;35")).Append(c);
                else
                    output.Append(C("22;90")).Append(dot);
            }
            output.Append(C("22;90")).Append(' ', 16 - n).Append(bar).Append('\n').Append(restore);
        }
        return output.ToString();
    }
}

/// <summary>The dump of many exports (nbdkit plugins and filters, qemu-nbd, nbd-server), the same as libnbd's.</summary>
public class NbdDumpTests
{
    // The dump itself, on many exports, through [ CMD ARGS ... ].

    public static TheoryData<string[]> NbdkitExports() => new()
    {
        new[] { "null", "0" },
        new[] { "null", "1" },
        new[] { "null", "17" },
        new[] { "null", "1M" },
        new[] { "memory", "1M" },
        new[] { "memory", "100" },
        new[] { "pattern", "1" },
        new[] { "pattern", "15" },
        new[] { "pattern", "16" },
        new[] { "pattern", "17" },
        new[] { "pattern", "1000" },
        new[] { "pattern", "1001" },
        new[] { "pattern", "4095" },
        new[] { "pattern", "1M" },
        new[] { "random", "100000", "seed=3" },
        new[] { "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192" },
        new[] { "sparse-random", "3000001", "seed=9", "percent=50", "runlength=1000" },
        // The one large case: 64 MiB, mostly holes that block status lets both tools skip.
        new[] { "sparse-random", "64M", "seed=5", "percent=5", "runlength=65536" },
        // Repeated lines: zero runs inside data, a repeated non-zero line, one that crosses 4 MiB (our read size),
        // one that runs to the end of the export (its last line is never collapsed), one byte past a line.
        new[] { "data", "1 2 3 @0x100 \"hello, world!\" @0x1000 0 0 0 33", },
        new[] { "data", "(\"abcdefghijklmnop\")*1000 @100000 (\"abcdefghijklmnop\")*3 \"x\" @200000 \"q\"", "size=300001" },
        new[] { "data", "@0x3fff00 (\"ABCDEFGHIJKLMNOP\")*64 @0x4fffc0 (\"0123456789abcdef\")*4", "size=5M" },
        new[] { "data", "(0x55 0xaa)*100000 @1000000 (1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)*40000", "size=3M" },
        new[] { "data", "(0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1)*10 @0x200 (0)*31 1", "size=544" },
        // Every byte value, for the ASCII column (letters and digits, other printables, dots).
        new[] { "data", string.Join(' ', Enumerable.Range(0, 256).Select(b => I(b))) + " @0x1000 1", "size=4111" },
        // Filters: small reads, no block status, odd sizes, a window of the export.
        new[] { "--filter=blocksize", "pattern", "1M", "maxlen=4096" },
        new[] { "--filter=blocksize", "sparse-random", "2M", "seed=2", "percent=20", "runlength=3000", "maxlen=65536" },
        new[] { "--filter=noextents", "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192" },
        new[] { "--filter=noextents", "memory", "2M" },
        new[] { "--filter=truncate", "pattern", "1M", "truncate=1000001" },
        new[] { "--filter=truncate", "sparse-random", "1M", "seed=4", "percent=10", "runlength=5000", "round-up=4096" },
        new[] { "--filter=offset", "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192", "offset=12345", "range=1000000" },
        new[] { "--filter=offset", "pattern", "4M", "offset=3", "range=4000" },
    };

    [Theory]
    [MemberData(nameof(NbdkitExports))]
    public void Dump_SameAsLibnbd(string[] nbdkit) => AssertSameAsLibnbd(Activated([], nbdkit));

    /// <summary>Colour changes every field, so a few exports with all kinds of lines are enough.</summary>
    public static TheoryData<string[]> ColourExports() => new(NbdkitExports().Select(row => row.Data).Where(args =>
        args[0] is "null" or "--filter=noextents" or "--filter=truncate" ||
        args[0] == "pattern" && args[1] is "17" or "4095" ||
        args[0] == "data" && args[1].Contains("abcdefghijklmnop", StringComparison.Ordinal) ||
        args[0] == "data" && args[1].StartsWith("0 1 2", StringComparison.Ordinal) ||
        args[0] == "sparse-random" && args[1] == "64M"));

    [Theory]
    [MemberData(nameof(ColourExports))]
    public void Dump_Colour_SameAsLibnbd(string[] nbdkit) => AssertSameAsLibnbd(Activated(["--color"], nbdkit));

    [Fact]
    public void Dump_ByUri_MemoryWithData()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            byte[] all = Enumerable.Range(0, 256).Select(b => (byte)b).ToArray();
            h.Pwrite(all, 0x2000);
            h.Pwrite("hello, world!"u8, 0x100);
            h.Pwrite(new byte[] { 0xff, 0xfe, 0xfd }, 4095);
            byte[] lines = new byte[16 * 50];
            for (int i = 0; i < lines.Length; i++)
                lines[i] = (byte)('a' + (i % 16));
            h.Pwrite(lines, 0x10000);
            h.Pwrite("end"u8, (1 << 20) - 3);
        }
        AssertSameAsLibnbd([server.Uri]);
        AssertSameAsLibnbd(["--color", server.Uri]);
        AssertSameAsLibnbd(["-n", "70000", server.Uri]);
    }

    [Fact]
    public void Dump_ByUri_EmptyMemory()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "4M");
        AssertDumpsByUri(server);
    }

    [Fact]
    public void Dump_QemuNbd_Raw()
    {
        using ServerProcess server = Peers.QemuNbd("raw", dir =>
        {
            string image = dir.File("disk.raw");
            using (var file = new FileStream(image, FileMode.Create))
            {
                file.SetLength(3 << 20);
                byte[] data = new byte[70000];
                new Random(11).NextBytes(data);
                file.Position = 0x10;
                file.Write(data);
                file.Position = (2 << 20) + 7;
                file.Write("QEMU raw"u8);
                file.Position = (3 << 20) - 20;
                file.Write(data.AsSpan(0, 20));
            }
            return image;
        }, "-r");
        AssertDumpsByUri(server);
    }

    [Fact]
    public void Dump_QemuNbd_Qcow2()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", dir =>
        {
            string image = dir.File("disk.qcow2");
            Peers.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "4M");
            Peers.Run("qemu-io", "-f", "qcow2", "-c", "write -P 0x41 65536 4096", image);
            Peers.Run("qemu-io", "-f", "qcow2", "-c", "write -P 7 1048576 100000", image);
            Peers.Run("qemu-io", "-f", "qcow2", "-c", "write -z 1081344 65536", image);
            Peers.Run("qemu-io", "-f", "qcow2", "-c", "write -P 0x7a 4190000 4304", image);
            return image;
        }, "-r");
        AssertDumpsByUri(server);
    }

    [Fact]
    public void Dump_NbdServer()
    {
        using ServerProcess server = Peers.NbdServer("disk", dir =>
        {
            string file = dir.File("disk.img");
            byte[] data = new byte[(1 << 20) + 9];
            new Random(5).NextBytes(data.AsSpan(1000, 5000));
            data.AsSpan(600000, 3000).Fill((byte)'z');
            File.WriteAllBytes(file, data);
            return file;
        });
        string uri = server.UriFor("disk");
        AssertSameAsLibnbd([uri]);
        AssertSameAsLibnbd(["--color", "-n", "7000", uri]);
    }

    private static void AssertDumpsByUri(ServerProcess server)
    {
        AssertSameAsLibnbd([server.Uri]);
        AssertSameAsLibnbd(["--color", server.Uri]);
        AssertSameAsLibnbd(["-n", "100000", server.Uri]);
    }
}

/// <summary>--length as libnbd 1.14 takes it and with size suffixes; --offset (libnbd 1.22) against the reference.</summary>
public class NbdDumpRangeTests
{
    // --length, as libnbd 1.14 takes it (plain bytes), and with the suffixes only ours takes.

    [Theory]
    [InlineData("0")]
    [InlineData("1")]
    [InlineData("15")]
    [InlineData("16")]
    [InlineData("17")]
    [InlineData("33")]
    [InlineData("100")]
    [InlineData("100000")]
    [InlineData("1048575")]
    [InlineData("1048576")]
    [InlineData("99999999")]
    public void Length_SameAsLibnbd(string length)
    {
        string[] pattern = ["pattern", "1M"];
        string[] zeroes = ["memory", "1M"];
        string[] sparse = ["sparse-random", "1M", "seed=3", "percent=40", "runlength=300"];
        AssertSameAsLibnbd(Activated(["-n", length], pattern));
        AssertSameAsLibnbd(Activated(["--length=" + length], zeroes));
        AssertSameAsLibnbd(Activated(["--limit", length, "--color"], sparse));
        AssertSameAsLibnbd(Activated(["-n" + length], zeroes));
    }

    [Fact]
    public void RepeatedOptions_LastCounts_AsLibnbd()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "1M");
        AssertSameAsLibnbd(["-n", "5", "-n", "40", server.Uri]);
        AssertSameAsLibnbd(["-n", "5", "--limit=40", server.Uri]);
        AssertSameAsLibnbd(["-n", "40", server.Uri, "--length", "17"]);
        AssertSameAsLibnbd(["-n", "100", "--color", "--no-color", "--color", server.Uri]);

        byte[] disk = ReadAll(server.Uri);
        ToolResult ours = Ours("-o", "3", "--skip=16", "-n", "20", server.Uri);
        Assert.True(ours.ExitCode == 0, ours.ToString());
        AssertSameText(Reference(disk, 16, 20, colour: false), ours.Stdout, "-o 3 --skip=16 -n 20");
    }

    [Theory]
    [InlineData("1k", "1024")]
    [InlineData("1K", "1024")]
    [InlineData("2s", "1024")]
    [InlineData("3S", "1536")]
    [InlineData("1M", "1048576")]
    [InlineData("1b", "1")]
    [InlineData("1G", "1073741824")]
    public void Length_Suffix_MeansBytes(string human, string bytes)
    {
        using ServerProcess server = Peers.Nbdkit("sparse-random", "2M", "seed=3", "percent=40", "runlength=300");
        ToolResult theirs = Theirs("-n", bytes, server.Uri);
        Assert.True(theirs.ExitCode == 0, theirs.ToString());
        AssertSameOutput(theirs, Ours("-n", human, server.Uri), "-n " + human);
        AssertSameOutput(theirs, Ours("--length=" + human, server.Uri), "--length=" + human);
    }

    [Theory]
    [InlineData("foo")]
    [InlineData("")]
    [InlineData("-5")]
    [InlineData("1X")]
    [InlineData("1MB")]
    [InlineData("99999999999999999999")]
    public void Length_Bad(string length)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        AssertFailed(Ours("-n", length, server.Uri), "--length", length);
    }

    // --offset (libnbd 1.22; 1.14 lacks it), against the reference dump.

    [Theory]
    [InlineData(new[] { "pattern", "1000" }, "0", null)]
    [InlineData(new[] { "pattern", "1000" }, "1", null)]
    [InlineData(new[] { "pattern", "1000" }, "15", null)]
    [InlineData(new[] { "pattern", "1000" }, "16", "100")]
    [InlineData(new[] { "pattern", "1000" }, "17", "17")]
    [InlineData(new[] { "pattern", "1000" }, "999", null)]
    [InlineData(new[] { "pattern", "1000" }, "1000", null)]
    [InlineData(new[] { "pattern", "1000" }, "500", "0")]
    [InlineData(new[] { "memory", "1M" }, "4096", null)]
    [InlineData(new[] { "memory", "1M" }, "5", "1000")]
    [InlineData(new[] { "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192" }, "12345", null)]
    [InlineData(new[] { "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192" }, "1k", "3M")]
    [InlineData(new[] { "sparse-random", "4M", "seed=5", "percent=30", "runlength=8192" }, "2s", "1000001")]
    [InlineData(new[] { "data", "(\"abcdefghijklmnop\")*100 @0x1000 (\"abcdefghijklmnop\")*3", "size=8192" }, "32", null)]
    [InlineData(new[] { "data", "(\"abcdefghijklmnop\")*100 @0x1000 (\"abcdefghijklmnop\")*3", "size=8192" }, "4112", null)]
    public void Offset_MatchesReference(string[] nbdkit, string offset, string? length)
    {
        using ServerProcess server = Peers.Nbdkit(nbdkit);
        byte[] disk = ReadAll(server.Uri);

        // The reference makes libnbd's dump from the start of the export: it is a faithful port.
        AssertSameText(Theirs(server.Uri).Stdout, Reference(disk, 0, ulong.MaxValue, colour: false), "reference");
        AssertSameText(Theirs("--color", server.Uri).Stdout, Reference(disk, 0, ulong.MaxValue, colour: true), "reference --color");

        ulong skip = ParseTestSize(offset);
        ulong limit = length == null ? ulong.MaxValue : ParseTestSize(length);
        string[] options = length == null ? ["-o", offset] : ["--offset=" + offset, "--length", length];
        foreach (bool colour in new[] { false, true })
        {
            ToolResult ours = Ours([.. options, .. colour ? new[] { "--color" } : [], server.Uri]);
            Assert.True(ours.ExitCode == 0, ours.ToString());
            Assert.Equal("", ours.Stderr);
            AssertSameText(Reference(disk, skip, limit, colour), ours.Stdout, $"-o {offset} -n {length} color={colour}");
        }
        ToolResult skipped = Ours("--skip", offset, server.Uri);
        AssertSameText(Reference(disk, skip, ulong.MaxValue, colour: false), skipped.Stdout, "--skip " + offset);
    }

    [Fact]
    public void Offset_AttachedShortOptions_BeforeServerCommand()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "4096");
        byte[] disk = ReadAll(server.Uri);
        ToolResult ours = Ours(Activated(["-o100", "-n50"], "pattern", "4096"));
        Assert.True(ours.ExitCode == 0, ours.ToString());
        AssertSameText(Reference(disk, 100, 50, colour: false), ours.Stdout, "-o100 -n50 [ ... ]");
    }

    [Theory]
    [InlineData("4097")]
    [InlineData("1M")]
    public void Offset_BeyondTheEnd(string offset)
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "4096");
        AssertFailed(Ours("-o", offset, server.Uri), "--offset", "4096");
    }

    [Theory]
    [InlineData("bar")]
    [InlineData("-1")]
    [InlineData("1Q")]
    public void Offset_Bad(string offset)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        AssertFailed(Ours("--offset", offset, server.Uri), "--offset", offset);
    }
}

/// <summary>Colours, the closed or full stdout, signals, the command line and errors.</summary>
public class NbdDumpCommandLineTests
{
    // Colour switches, and the automatic choice on a terminal.

    [Theory]
    [InlineData("--color")]
    [InlineData("--colour")]
    [InlineData("--colors")]
    [InlineData("--colours")]
    [InlineData("--no-color", "--color")]
    [InlineData("--color", "--no-color")]
    [InlineData("--colour", "--no-colours")]
    [InlineData("--no-colors", "--colour", "--no-colour")]
    public void Colour_Switches_SameAsLibnbd(params string[] switches) =>
        AssertSameAsLibnbd(Activated(switches, "data", "\"Hello\" 0 1 2 0x7f 0x80 0xff \" ~\" @0x100 (\"a\")*40", "size=1000"));

    [Fact]
    public void Colour_OnTerminal_SameAsLibnbd()
    {
        string script = Requires.Program("script");
        using ServerProcess server = Peers.Nbdkit("sparse-random", "1M", "seed=3", "percent=40", "runlength=300");
        foreach (string options in new[] { "-n 5000", "--no-color -n 5000", "--color -n 300" })
        {
            string Command(string tool) => $"'{tool}' {options} '{server.Uri}'";
            ToolResult theirs = ToolProcess.Run(script, ["-q", "-e", "-c", Command(ToolProcess.Libnbd(Tool)), "/dev/null"]);
            ToolResult ours = ToolProcess.Run(script, ["-q", "-e", "-c", Command(ToolProcess.Ours(Tool)), "/dev/null"]);
            Assert.True(theirs.ExitCode == 0, theirs.ToString());
            if (!options.Contains("no-color", StringComparison.Ordinal))
                Assert.Contains("\u001b[", theirs.Stdout, StringComparison.Ordinal);
            AssertSameOutput(theirs, ours, "on a terminal: " + options);
        }
    }

    // The end of stdout, signals.

    [Fact]
    public void ClosedPipe_EndsQuietly_AsLibnbd()
    {
        // As typed in a shell, where SIGPIPE has its default action (the test host ignores it, and so would every
        // process it starts: libnbd's nbddump then writes on into the void and exits 0 at the end of the export).
        string[] args = Activated([], "pattern", "16M");
        string Pipeline(string tool) => "env --default-signal=PIPE '" + tool + "' \"$@\" | head -1; exit ${PIPESTATUS[0]}";
        ToolResult theirs = ToolProcess.Run("/bin/bash", ["-c", Pipeline(ToolProcess.Libnbd(Tool)), "bash", .. args]);
        ToolResult ours = ToolProcess.Run("/bin/bash", ["-c", Pipeline(ToolProcess.Ours(Tool)), "bash", .. args]);
        Assert.Equal(141, theirs.ExitCode);
        AssertSameOutput(theirs, ours, "| head -1");
        Assert.Equal("", ours.Stderr);
    }

    [Fact]
    public void FullDisk_IsAnError()
    {
        // libnbd's nbddump loses the output and exits 0 here; ours says so.
        ToolResult ours = ToolProcess.Run("/bin/bash",
            ["-c", "\"$0\" \"$@\" > /dev/full", ToolProcess.Ours(Tool), .. Activated([], "pattern", "1M")]);
        Assert.True(ours.ExitCode == 1, ours.ToString());
        string[] lines = ours.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, ours.ToString());
        Assert.StartsWith("nbddump: write to stdout: ", lines[0], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Native.SIGINT)]
    [InlineData(Native.SIGTERM)]
    public void Signal_RestoresColours_AsLibnbd(int signal)
    {
        // A slow export, so that the dump is under way when the signal comes. libnbd 1.14's nbddump leaves the server
        // it started running when a signal ends it (a known quirk, not copied: ours stops it), and that server could
        // hold the dump's stdout open: its pid file lets the test stop it once the dump has exited.
        using var dir = new TempDirectory();
        string server = dir.File("nbdkit.pid");
        string[] args = Activated(["--color"], "--filter=delay", "-P", server, "pattern", "64M", "rdelay=100ms");
        (int theirsExit, string theirsTail, _, _) = Interrupt(ToolProcess.Libnbd(Tool), args, signal, server);
        (int oursExit, string oursTail, bool oursLeftTheServer, List<string> oursFolders) = Interrupt(ToolProcess.Ours(Tool), args, signal, server);
        Assert.Equal(1, theirsExit);
        Assert.EndsWith("\n\u001b[0m", theirsTail, StringComparison.Ordinal);
        Assert.Equal(theirsExit, oursExit);
        Assert.EndsWith("\n\u001b[0m", oursTail, StringComparison.Ordinal);
        Assert.False(oursLeftTheServer, "our nbddump left the server it started running");
        // The private folder of the activated server's socket goes with it, even on a signal (Environment.Exit).
        Assert.Single(oursFolders);
        Assert.False(Directory.Exists(oursFolders[0]), "our nbddump left its socket folder " + oursFolders[0]);
    }

    /// <summary>
    /// The folders under /tmp/nbdsharp-* of the Unix sockets that process <paramref name="pid"/> holds (the socket
    /// an activated server was handed), found through /proc/PID/fd and /proc/net/unix.
    /// </summary>
    private static List<string> SocketFolders(int pid)
    {
        var inodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (string fd in Directory.GetFiles("/proc/" + pid.ToString(CultureInfo.InvariantCulture) + "/fd"))
        {
            string? target = new FileInfo(fd).LinkTarget;
            if (target != null && target.StartsWith("socket:[", StringComparison.Ordinal))
                inodes.Add(target[8..^1]);
        }
        var folders = new List<string>();
        foreach (string line in File.ReadLines("/proc/net/unix").Skip(1))
        {
            string[] fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 8 || !inodes.Contains(fields[6]) || !fields[7].StartsWith("/tmp/nbdsharp-", StringComparison.Ordinal))
                continue;
            string folder = Path.GetDirectoryName(fields[7])!;
            if (!folders.Contains(folder))
                folders.Add(folder);
        }
        return folders;
    }

    /// <summary>
    /// Runs the dump, signals it once it has printed something, and returns its status, the end of its output, and
    /// whether the server it started was still running after it exited (that server is then stopped). Every wait is
    /// bounded: a dump that never stops fails the test instead of hanging it.
    /// </summary>
    private static (int ExitCode, string Tail, bool LeftTheServer, List<string> SocketFolders) Interrupt(string program, string[] args, int signal, string serverPidFile)
    {
        File.Delete(serverPidFile);
        var info = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        bool leftTheServer = false;
        try
        {
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            var output = new StringBuilder();
            char[] buffer = new char[65536];
            // Wait for the first output, then signal and read the rest.
            Task<int> first = process.StandardOutput.ReadAsync(buffer, 0, buffer.Length);
            Assert.True(first.Wait(TimeSpan.FromSeconds(60)), "no output within 60 s");
            if (first.Result <= 0)
                Assert.Fail("no output before the signal: " + stderr.Result);
            output.Append(buffer, 0, first.Result);
            Assert.True(int.TryParse(File.ReadAllText(serverPidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int serverPid));
            List<string> folders = SocketFolders(serverPid);
            Assert.Equal(0, Native.Kill(process.Id, signal));
            Task rest = Task.Run(async () =>
            {
                char[] more = new char[65536];
                int n;
                while ((n = await process.StandardOutput.ReadAsync(more, 0, more.Length).ConfigureAwait(false)) > 0)
                    output.Append(more, 0, n);
            });
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(30)), "the dump did not exit");
            leftTheServer = StopServer(serverPidFile);
            Assert.True(rest.Wait(TimeSpan.FromSeconds(30)), "the dump's output did not end");
            string text = output.ToString();
            return (process.ExitCode, text[Math.Max(0, text.Length - 200)..], leftTheServer, folders);
        }
        finally
        {
            if (!process.HasExited)
                process.Kill(entireProcessTree: true);
            StopServer(serverPidFile);
        }
    }

    /// <summary>Stops the server whose pid file is given if it still runs; whether it did.</summary>
    private static bool StopServer(string pidFile)
    {
        if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            return false;
        // The server may still be on its way out after its client closed the socket.
        if (SpinWaitFor(() => !Directory.Exists("/proc/" + pid), TimeSpan.FromSeconds(5)))
            return false;
        Native.Kill(pid, Native.SIGTERM);
        SpinWaitFor(() => !Directory.Exists("/proc/" + pid), TimeSpan.FromSeconds(10));
        return true;
    }

    private static bool SpinWaitFor(Func<bool> condition, TimeSpan timeout) => System.Threading.SpinWait.SpinUntil(condition, timeout);

    // The command line.

    [Fact]
    public void LongOptions_AreLibnbds_PlusOffset()
    {
        ToolResult theirs = Theirs("--long-options");
        Assert.Equal(0, theirs.ExitCode);
        Assert.Contains("--length\n", theirs.Stdout, StringComparison.Ordinal);
        ToolResult ours = Ours("--long-options");
        Assert.Equal(0, ours.ExitCode);
        // libnbd 1.22 adds --offset and --skip at the end.
        Assert.Equal(theirs.Stdout + "--offset\n--skip\n", ours.Stdout);
    }

    [Fact]
    public void ShortOptions_AreLibnbds_PlusOffset()
    {
        ToolResult theirs = Theirs("--short-options");
        Assert.Equal(0, theirs.ExitCode);
        ToolResult ours = Ours("--short-options");
        Assert.Equal(0, ours.ExitCode);
        // 1.22's "n:o:V".
        Assert.Equal(theirs.Stdout.Replace("-n\n", "-n\n-o\n", StringComparison.Ordinal), ours.Stdout);
        Assert.NotEqual(theirs.Stdout, ours.Stdout);
    }

    [Theory]
    [InlineData("--version")]
    [InlineData("-V")]
    public void Version(string option)
    {
        ToolResult theirs = Theirs(option);
        ToolResult ours = Ours(option);
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        string[] lines = ours.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.Matches(@"^nbddump \d+\.\d+\.\d+$", lines[0]);
        Assert.Matches(@"^NbdSharp \d+\.\d+\.\d+", lines[1]);
    }

    [Fact]
    public void Help()
    {
        ToolResult theirs = Theirs("--help");
        ToolResult ours = Ours("--help");
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        Assert.Equal("", ours.Stderr);
        Assert.Contains("Hexdump the content of a disk over NBD", ours.Stdout, StringComparison.Ordinal);
        foreach (string option in new[] { "--color", "--no-color", "--length", "--offset", "nbddump --version" })
            Assert.Contains(option, ours.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void HelpAndVersion_TheFirstOneCounts()
    {
        ToolResult help = Ours("--help"), version = Ours("--version");
        Assert.NotEqual(help.Stdout, version.Stdout);
        Assert.Equal(version.Stdout, Ours("--version", "--help").Stdout);
        Assert.Equal(version.Stdout, Ours("-V", "--help").Stdout);
        Assert.Equal(help.Stdout, Ours("--help", "-V").Stdout);
        Assert.Equal(help.Stdout, Ours("--help", "nbd://nowhere.invalid").Stdout);
    }

    [Theory]
    [InlineData(new string[0], "NBD URI")]
    [InlineData(new[] { "nbd://a", "nbd://b" }, "NBD URI")]
    [InlineData(new[] { "-x", "nbd://a" }, "'x'")]
    [InlineData(new[] { "--bogus", "nbd://a" }, "--bogus")]
    [InlineData(new[] { "--", "[", "]" }, "command")]
    [InlineData(new[] { "--", "[", "nbdkit", "null" }, "]")]
    public void Usage_Errors(string[] args, string mention)
    {
        ToolResult theirs = Theirs(args);
        Assert.Equal(1, theirs.ExitCode);
        AssertFailed(Ours(args), mention);
    }

    [Fact]
    public void Errors_Connecting()
    {
        string missing = "nbd+unix:///?socket=" + Path.Combine(Path.GetTempPath(), "nbddump-test-" + Guid.NewGuid().ToString("N"));
        string port = I(Peers.FreePort());
        var cases = new (string[] Args, string[] Mentions)[]
        {
            (["notauri"], ["scheme"]),
            (["nbd://[bad"], ["nbd_connect_uri"]),
            (["http://localhost/"], ["nbd_connect_uri"]),
            ([missing], ["No such file"]),
            (["nbd://127.0.0.1:" + port], ["Connection refused"]),
            (["--", "[", "/bin/false", "]"], ["nbd_connect_systemd_socket_activation"]),
            (["--", "[", "/nonexistent/server", "]"], ["nbd_connect_systemd_socket_activation"]),
        };
        foreach ((string[] args, string[] mentions) in cases)
        {
            ToolResult theirs = Theirs(args);
            Assert.True(theirs.ExitCode == 1, string.Join(' ', args) + ": " + theirs);
            ToolResult ours = Ours(args);
            Assert.Equal(theirs.Stdout, ours.Stdout);
            AssertFailed(ours, mentions);
        }
    }

    [Fact]
    public void Errors_ReadFails_AsLibnbd()
    {
        // nbdkit's error filter fails every read: libnbd prints nothing and exits 1.
        string[] args = Activated([], "--filter=error", "pattern", "1M", "error-pread=EIO", "error-pread-rate=100%");
        ToolResult theirs = Theirs(args);
        ToolResult ours = Ours(args);
        Assert.Equal(1, theirs.ExitCode);
        Assert.Equal(theirs.Stdout, ours.Stdout);
        AssertFailed(ours, "Input/output error");
    }
}
