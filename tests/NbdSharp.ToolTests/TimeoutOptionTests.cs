using System;
using System.Diagnostics;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// --timeout, beyond libnbd's tools: a stalled server (a handshake never answered, or nbdkit's delay filter
/// holding reads for a minute) ends the tool in about the timeout with exit status 1 and one line on stderr.
/// </summary>
public class TimeoutOptionTests
{
    [Theory]
    [InlineData("nbdinfo")]
    [InlineData("nbdcopy")]
    public async Task AHandshakeNeverAnswered_EndsInTheTimeout(string tool)
    {
        await using var server = ScriptedServer.Start(c => c.DrainAsync());
        string[] args = tool == "nbdinfo" ? ["--timeout=1", server.Uri] : ["--timeout", "1", server.Uri, "null:"];
        var clock = Stopwatch.StartNew();
        ToolResult result = ToolProcess.RunOurs(tool, args);
        TimeSpan took = clock.Elapsed;
        Assert.Equal(1, result.ExitCode);
        Assert.Equal(tool + ": ", result.Stderr[..(tool.Length + 2)]);
        Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Contains("connect timeout of 1 s", result.Stderr, StringComparison.Ordinal);
        Assert.InRange(took, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(15));
    }

    [Fact]
    public void NbdcopyFromAStalledServer_FailsAfterTheTimeout_NamingTheOffset()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=delay", "pattern", "64M", "delay-read=60");
        var clock = Stopwatch.StartNew();
        ToolResult result = ToolProcess.RunOurs("nbdcopy", "--timeout=2", server.Uri, "null:");
        TimeSpan took = clock.Elapsed;
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Matches("^nbdcopy: read at offset [0-9]+ failed: Connection timed out\n$", result.Stderr);
        Assert.InRange(took, TimeSpan.FromSeconds(1.9), TimeSpan.FromSeconds(15));
    }

    [Fact]
    public void NbdinfoWithATimeout_ReportsAHealthyServerAsWithout()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "1M");
        ToolResult with = ToolProcess.RunOurs("nbdinfo", "--timeout=5", server.Uri);
        ToolResult without = ToolProcess.RunOurs("nbdinfo", server.Uri);
        Assert.Equal(0, with.ExitCode);
        Assert.Equal(without.Stdout, with.Stdout);
    }

    [Theory]
    [InlineData("nbdinfo", "--timeout=soon")]
    [InlineData("nbdcopy", "--timeout=-1")]
    public void ABadTimeout_IsOneLineAndExit1(string tool, string option)
    {
        ToolResult result = tool == "nbdinfo"
            ? ToolProcess.RunOurs(tool, option, "nbd://localhost")
            : ToolProcess.RunOurs(tool, option, "nbd://localhost", "null:");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"{tool}: --timeout: could not parse: {option["--timeout=".Length..]} (expected a number of seconds)\n", result.Stderr);
    }
}
