using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// nbddiscard and nbdzero as processes against real nbdkit servers: what they erase (read back with the library),
/// what they print, their exit codes, and the requests the server saw (nbdkit's log filter).
/// </summary>
public partial class NbdDiscardTests
{
    private const int DiskSize = 1 << 20;

    // What the helpers move per request: small enough for a server that refuses more than 64K.
    private const int Chunk = 64 << 10;

    private static ToolResult Discard(params string[] args) => ToolProcess.RunOurs("nbddiscard", args);

    private static ToolResult Zero(params string[] args) => ToolProcess.RunOurs("nbdzero", args);

    private static ToolResult Answering(string tool, string answer, params string[] args) =>
        ToolProcess.Run(ToolProcess.Ours(tool), args, stdin: answer);

    /// <summary>Fills the (1M) export with bytes none of which is zero, and returns them.</summary>
    private static byte[] Fill(ServerProcess server)
    {
        byte[] data = new byte[DiskSize];
        new Random(7).NextBytes(data);
        for (int i = 0; i < data.Length; i++)
            data[i] |= 1;
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        for (int offset = 0; offset < data.Length; offset += Chunk)
            h.Pwrite(data.AsSpan(offset, Chunk), (ulong)offset);
        return data;
    }

    private static byte[] Contents(ServerProcess server)
    {
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        byte[] data = new byte[h.GetSize()];
        for (int offset = 0; offset < data.Length; offset += Chunk)
            h.Pread(data.AsSpan(offset, Math.Min(Chunk, data.Length - offset)), (ulong)offset);
        return data;
    }

    /// <summary>[offset, offset + length) reads as zeroes, every other byte is as it was.</summary>
    private static void AssertErased(byte[] before, byte[] after, int offset, int length)
    {
        Assert.Equal(before.Length, after.Length);
        int firstNonZero = Array.FindIndex(after, offset, length, b => b != 0);
        Assert.True(firstNonZero < 0, $"byte {firstNonZero} of the erased range is not zero");
        Assert.True(before.AsSpan(0, offset).SequenceEqual(after.AsSpan(0, offset)), "bytes before the range changed");
        Assert.True(before.AsSpan(offset + length).SequenceEqual(after.AsSpan(offset + length)), "bytes after the range changed");
    }

    private static void AssertSucceeded(ToolResult result, string stdout = "")
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(stdout, result.Stdout);
        Assert.Equal("", result.Stderr);
    }

    /// <summary>One line on stderr naming the program and the problem, never a stack trace.</summary>
    private static void AssertFailed(ToolResult result, string tool, string message, int exitCode = 1)
    {
        Assert.True(result.ExitCode == exitCode, result.ToString());
        string[] lines = result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.ToString());
        Assert.StartsWith(tool + ": ", lines[0], StringComparison.Ordinal);
        Assert.Contains(message, lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Stderr, StringComparison.Ordinal);
    }

    // discard: what is erased

    [Fact]
    public void Discard_WholeDisk_ReadsAsZeroes()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        AssertSucceeded(Discard("-y", server.Uri));
        AssertErased(before, Contents(server), 0, DiskSize);
        AssertSucceeded(Discard("--check", server.Uri));
    }

    [Fact]
    public void Discard_OffsetAndLength_ErasesOnlyThatRange()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        AssertSucceeded(Discard("-y", "-o", "256K", "-l", "128K", server.Uri));
        AssertErased(before, Contents(server), 256 << 10, 128 << 10);
    }

    [Theory]
    [InlineData("4k", "12K", 4096, 12288)]
    [InlineData("512K", "0k", 512 << 10, 0)]
    [InlineData("1s", "3s", 512, 1536)]
    [InlineData("1000", "24000", 1000, 24000)]
    [InlineData("0", "1m", 0, 1 << 20)]
    public void Zero_SizeSuffixes(string offsetText, string lengthText, int offset, int length)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        AssertSucceeded(Zero("-y", "--offset=" + offsetText, "--length", lengthText, server.Uri));
        AssertErased(before, Contents(server), offset, length);
    }

    [Fact]
    public void Discard_LengthPastTheEnd_WarnsAndStopsAtTheEnd()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        AssertSucceeded(Discard("-y", "-o", "768K", "-l", "1M", server.Uri), "warning: offset + length is beyond the end of the disk\n");
        AssertErased(before, Contents(server), 768 << 10, 256 << 10);
    }

    [Theory]
    [InlineData("1M")]
    [InlineData("5G")]
    public void Discard_OffsetAtOrPastTheEnd_WarnsAndChangesNothing(string offset)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        AssertSucceeded(Discard("-y", "-o", offset, server.Uri), "warning: offset at or beyond the end of the disk\n");
        AssertSucceeded(Discard("-y", "-q", "-o", offset, server.Uri));
        Assert.Equal(before, Contents(server));
    }

    [Fact]
    public void Zero_Flushes_AfterItsRequests()
    {
        using var logDir = new TempDirectory();
        string log = logDir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "memory", "1M", "logfile=" + log);
        AssertSucceeded(Zero("-y", server.Uri));
        Assert.Equal(new[] { "Zero", "Flush" }, Requests(log).Select(r => r.Command));
    }

    // --check

    [Fact]
    public void Check_ReportsTheFirstData_AndChangesNothing()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            h.Pwrite(Enumerable.Repeat((byte)0xa5, 64 << 10).ToArray(), 512 << 10);
        }
        byte[] before = Contents(server);

        ToolResult data = Discard("--check", server.Uri);
        Assert.True(data.ExitCode == 1, data.ToString());
        Assert.Equal("image has data at offset 524288\n", data.Stdout);
        Assert.Equal("", data.Stderr);
        Assert.Equal("image has data at offset 589823\n", Zero("-c", "-o", "589823", server.Uri).Stdout);

        ToolResult quiet = Zero("-c", "-q", server.Uri);
        Assert.Equal((1, "", ""), (quiet.ExitCode, quiet.Stdout, quiet.Stderr));

        AssertSucceeded(Discard("-c", "-l", "512K", server.Uri));
        AssertSucceeded(Zero("-c", "-o", "576K", server.Uri));
        Assert.Equal(before, Contents(server));
    }

    [Fact]
    public void Check_Verbose_SaysWhatItFound()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        ToolResult discard = Discard("-c", "-v", server.Uri);
        Assert.True(discard.ExitCode == 0, discard.ToString());
        Assert.Equal("extended headers = False\nblock status = True\nimage is already sparse\n", discard.Stdout);
        Assert.Contains("libnbd: debug: ", discard.Stderr, StringComparison.Ordinal);
        Assert.EndsWith("image is already zero\n", Zero("-c", "-v", server.Uri).Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_ZeroesThatAreNotAHole_PassOnlyForZeroing()
    {
        // An export whose only extent reads as zeroes but is allocated.
        using ServerProcess server = Peers.Nbdkit("eval", "get_size=echo 1048576",
            "pread=dd if=/dev/zero iflag=count_bytes count=$3 status=none", "extents=echo 0 1048576 zero");
        ToolResult discard = Discard("-c", server.Uri);
        Assert.Equal((1, "image has data at offset 0\n"), (discard.ExitCode, discard.Stdout));
        AssertSucceeded(Zero("-c", server.Uri));
        AssertSucceeded(Discard("-c", "-z", server.Uri));
    }

    [Fact]
    public void Check_ServerWithoutBlockStatus_Fails()
    {
        using ServerProcess server = Peers.Nbdkit("--no-sr", "memory", "1M");
        AssertFailed(Discard("-c", server.Uri), "nbddiscard", "this server does not support the block status operation");
    }

    // zeroing: --fast-zero

    [Fact]
    public void FastZero_ImpliesZero_OnAServerThatCan()
    {
        using var logDir = new TempDirectory();
        string log = logDir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "memory", "1M", "logfile=" + log);
        byte[] before = Fill(server);
        ToolResult result = Discard("--fast-zero", "-y", "-v", "-o", "4K", "-l", "4K", server.Uri);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.StartsWith("--fast implies --zero\n", result.Stdout, StringComparison.Ordinal);
        AssertErased(before, Contents(server), 4096, 4096);
        Assert.Contains(Requests(log), r => r.Command == "Zero" && r.Line.Contains("fast=1", StringComparison.Ordinal));
    }

    [Fact]
    public void FastZero_ServerWithoutFastZero_FailsBeforeErasing()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=nozero", "memory", "1M", "zeromode=plugin", "fastzeromode=none");
        byte[] before = Fill(server);
        AssertFailed(Zero("--fast-zero", "-y", server.Uri), "nbdzero", "fast zeroing is not supported by this server");
        Assert.Equal(before, Contents(server));
        AssertSucceeded(Zero("-y", server.Uri));
    }

    [Fact]
    public void FastZero_ServerThatRefusesIt_FailsWithTheServerError()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=nozero", "memory", "1M", "zeromode=plugin", "fastzeromode=slow");
        byte[] before = Fill(server);
        AssertFailed(Zero("--fast-zero", "-y", server.Uri), "nbdzero", "nbd_zero");
        Assert.Equal(before, Contents(server));
    }

    // servers that cannot

    [Fact]
    public void ReadOnlyServer_RefusesToErase_ButCanBeChecked()
    {
        using ServerProcess server = Peers.Nbdkit("-r", "memory", "1M");
        AssertFailed(Discard("-y", server.Uri), "nbddiscard", "this server does not support the trim/discard operation");
        AssertFailed(Zero("-y", server.Uri), "nbdzero", "this server does not support the zero operation");
        AssertSucceeded(Zero("--check", server.Uri));
    }

    [Fact]
    public void ServerWithoutTrim_RefusesDiscard_ButZeroes()
    {
        using ServerProcess server = Peers.Nbdkit("eval", "get_size=echo 1048576",
            "pread=dd if=/dev/zero iflag=count_bytes count=$3 status=none", "pwrite=cat >/dev/null");
        AssertFailed(Discard("-y", server.Uri), "nbddiscard", "this server does not support the trim/discard operation");
        AssertSucceeded(Zero("-y", server.Uri));
    }

    [Fact]
    public void ServerWithoutZero_RefusesZero()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=nozero", "memory", "1M");
        AssertFailed(Discard("-z", "-y", server.Uri), "nbddiscard", "this server does not support the zero operation");
    }

    [Fact]
    public void NoServer_FailsOnOneLine()
    {
        using var dir = new TempDirectory();
        AssertFailed(Discard("-y", "nbd+unix:///?socket=" + dir.File("none.sock")), "nbddiscard", "nbd_connect_uri");
    }

    // the question

    [Theory]
    [InlineData("y\n")]
    [InlineData("Y")]
    [InlineData("yes please\n")]
    public void Prompt_Yes_Erases(string answer)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        ToolResult result = Answering("nbddiscard", answer, "-o", "1K", "-l", "2K", server.Uri);
        AssertSucceeded(result, $"PERMANENTLY ERASE everything on {server.Uri} bytes 1024 - 3071 (y/N)? ");
        AssertErased(before, Contents(server), 1024, 2048);
    }

    [Theory]
    [InlineData("n\n")]
    [InlineData("\n")]
    [InlineData(" y\n")]
    [InlineData("")]
    public void Prompt_AnythingElse_Cancels(string answer)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        byte[] before = Fill(server);
        ToolResult result = Answering("nbdzero", answer, "-q", server.Uri);
        AssertFailed(result, "nbdzero", "operation cancelled");
        Assert.Equal($"PERMANENTLY ERASE everything on {server.Uri} bytes 0 - 1048575 (y/N)? ", result.Stdout);
        Assert.Equal(before, Contents(server));
    }

    [Fact]
    public void Prompt_SkippedWithYes_EvenWithoutInput()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        AssertSucceeded(Answering("nbdzero", "", "--yes", server.Uri));
    }

    // the command line

    [Theory]
    [InlineData("1.5M")]
    [InlineData("garbage")]
    [InlineData("1MB")]
    [InlineData("1Q")]
    [InlineData("-1")]
    [InlineData("8E")]
    [InlineData("")]
    public void BadSize_FailsBeforeConnecting(string size)
    {
        using var dir = new TempDirectory();
        string uri = "nbd+unix:///?socket=" + dir.File("none.sock");
        AssertFailed(Discard("-y", "-o", size, uri), "nbddiscard", "cannot parse offset/length parameter: " + size);
        AssertFailed(Zero("-y", "--length", size, uri), "nbdzero", "cannot parse offset/length parameter: " + size);
    }

    [Theory]
    [InlineData("unrecognized option '--nope'", "--nope", "nbd://localhost")]
    [InlineData("invalid option -- 'x'", "-x", "nbd://localhost")]
    [InlineData("unrecognized arguments: nbd://b", "nbd://a", "nbd://b")]
    [InlineData("unrecognized arguments: nbd://a", "nbd://a", "[", "nbdkit", "memory", "1M", "]")]
    public void UsageErrors_ExitWithTwo(string message, params string[] args) =>
        AssertFailed(Discard(args), "nbddiscard", message, exitCode: 2);

    [Fact]
    public void MissingUri_FailsWithOne()
    {
        AssertFailed(Discard("-y"), "nbddiscard", "NBD-URI is required.");
        AssertFailed(Zero(), "nbdzero", "NBD-URI is required.");
    }

    [Fact]
    public void HelpVersionAndOptionLists()
    {
        ToolResult help = Zero("--help");
        Assert.True(help.ExitCode == 0, help.ToString());
        Assert.StartsWith("Usage: nbdzero ", help.Stdout, StringComparison.Ordinal);
        Assert.Equal("nbddiscard " + NbdHandle.GetVersion() + "\n", Discard("-V").Stdout);
        Assert.Equal("nbdzero " + NbdHandle.GetVersion() + "\n", Zero("--version").Stdout);
        Assert.Equal(["--check", "--fast-zero", "--help", "--length", "--offset", "--quiet", "--verbose", "--version", "--yes", "--zero"],
            Discard("--long-options").Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(["-V", "-c", "-h", "-l", "-o", "-q", "-v", "-y", "-z"],
            Zero("--short-options").Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void ServerCommand_InBrackets()
    {
        using var dir = new TempDirectory();
        string disk = dir.File("disk.img");
        byte[] before = Enumerable.Repeat((byte)0x5a, DiskSize).ToArray();
        File.WriteAllBytes(disk, before);

        ToolResult result = Answering("nbdzero", "y", "-o", "4K", "-l", "8K", "--", "[", "nbdkit", "file", disk, "]");
        AssertSucceeded(result, "PERMANENTLY ERASE everything on [ nbdkit file " + disk + " ] bytes 4096 - 12287 (y/N)? ");
        AssertErased(before, File.ReadAllBytes(disk), 4096, 8192);

        // A short option's attached value is not followed by one more ("-o1M" then "[").
        AssertSucceeded(Zero("-yo1M", "-c", "[", "nbdkit", "memory", "2M", "]"));
        AssertSucceeded(Discard("-y", "-o1M", "[", "nbdkit", "memory", "2M", "]"));
    }

    // the requests

    [Fact]
    public void Requests_KeepUnderTheServersMaximumBlockSize()
    {
        using var logDir = new TempDirectory();
        string log = logDir.File("nbdkit.log");
        // The log filter sits between the client and the policy filter: it sees the requests as sent.
        using ServerProcess server = Peers.Nbdkit("--filter=log", "--filter=blocksize-policy", "memory", "1M",
            "blocksize-minimum=4K", "blocksize-maximum=64K", "blocksize-error-policy=error", "logfile=" + log);
        byte[] before = Fill(server);
        AssertSucceeded(Discard("-y", "-o", "100K", "-l", "300K", server.Uri));
        AssertErased(before, Contents(server), 100 << 10, 300 << 10);
        AssertCovers(Requests(log).Where(r => r.Command == "Trim"), 100 << 10, 300 << 10, 64 << 10);

        AssertSucceeded(Zero("-y", "--fast-zero", server.Uri));
        List<LoggedRequest> zeroes = Requests(log).Where(r => r.Command == "Zero").ToList();
        Assert.Equal(16, zeroes.Count);
        AssertCovers(zeroes, 0, DiskSize, 64 << 10);
    }

    [Fact]
    public void Requests_WithoutAMaximum_OneRequestUpToOneGiB()
    {
        using var logDir = new TempDirectory();
        string log = logDir.File("nbdkit.log");
        using ServerProcess server = Peers.Nbdkit("--filter=log", "memory", "3G", "logfile=" + log);
        AssertSucceeded(Discard("-y", "-o", "1M", server.Uri));
        AssertSucceeded(Zero("-y", "-l", "1M", server.Uri));
        List<LoggedRequest> requests = Requests(log).Where(r => r.Command is "Trim" or "Zero").ToList();
        var expected = new (string, long, long)[]
        {
            ("Trim", 1L << 20, 1L << 30),
            ("Trim", (1L << 20) + (1L << 30), 1L << 30),
            ("Trim", (1L << 20) + (2L << 30), (1L << 30) - (1L << 20)),
            ("Zero", 0, 1L << 20),
        };
        Assert.Equal(expected, requests.Select(r => (r.Command, r.Offset, r.Count)));
    }

    private sealed record LoggedRequest(string Command, long Offset, long Count, string Line);

    [GeneratedRegex(@"connection=\d+ (\w+) id=\d+(?: offset=0x([0-9a-f]+) count=0x([0-9a-f]+))?")]
    private static partial Regex LogLine();

    /// <summary>The requests nbdkit's log filter recorded, in order (not their replies).</summary>
    private static List<LoggedRequest> Requests(string log)
    {
        var requests = new List<LoggedRequest>();
        foreach (string line in File.ReadAllLines(log))
        {
            Match m = LogLine().Match(line);
            if (!m.Success)
                continue;
            long offset = m.Groups[2].Success ? long.Parse(m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture) : 0;
            long count = m.Groups[3].Success ? long.Parse(m.Groups[3].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture) : 0;
            requests.Add(new LoggedRequest(m.Groups[1].Value, offset, count, line));
        }
        return requests;
    }

    /// <summary>The requests cover [offset, offset + length) in order, without gaps or overlaps, none above <paramref name="maximum"/>.</summary>
    private static void AssertCovers(IEnumerable<LoggedRequest> requests, long offset, long length, long maximum)
    {
        long next = offset;
        foreach (LoggedRequest request in requests)
        {
            Assert.Equal(next, request.Offset);
            Assert.InRange(request.Count, 1, maximum);
            next += request.Count;
        }
        Assert.Equal(offset + length, next);
    }
}
