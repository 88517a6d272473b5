using System;
using System.Collections.Generic;
using System.IO;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// Our nbdinfo against libnbd's (/usr/bin/nbdinfo, libnbd 1.14) on the same servers: the same stdout, byte for
/// byte, and the same exit code, for every display mode; and the 1.24 options 1.14 lacks, checked on their own.
/// </summary>
public class NbdInfoTests
{
    /// <summary>The option sets compared on every export.</summary>
    private static readonly string[][] Modes =
    [
        [], ["--json"], ["--size"], ["--map"], ["--map", "--totals"], ["--map", "--json"], ["--map", "--totals", "--json"],
        ["--can", "flush"], ["--can=trim"], ["--can", "zero"], ["--can", "fua"], ["--can", "cache"], ["--can", "df"],
        ["--can", "fast-zero"], ["--can", "multi-conn"], ["--can", "connect"], ["--can", "write"],
        ["--is", "read-only"], ["--is", "rotational"], ["--list"], ["--list", "--json"], ["--content"], ["--no-content"],
        ["--json", "--no-content"], ["--color"], ["--color", "--map"], ["--color", "--map", "--totals"],
    ];

    /// <summary>Runs libnbd's nbdinfo and ours with the same arguments; stdout and exit code must be identical.</summary>
    internal static void SameAsLibnbd(params string[] args)
    {
        ToolResult theirs = ToolProcess.RunLibnbd("nbdinfo", args);
        ToolResult ours = ToolProcess.RunOurs("nbdinfo", args);
        Assert.True(theirs.Stdout == ours.Stdout && theirs.ExitCode == ours.ExitCode,
            $"nbdinfo {string.Join(' ', args)}\n=== libnbd ===\n{theirs}\n=== ours ===\n{ours}");
        if (ours.ExitCode is 0 or 2)
            Assert.Equal("", ours.Stderr);
    }

    private static void AllModes(string uri, params string[][] more)
    {
        foreach (string[] mode in Modes)
            SameAsLibnbd([.. mode, uri]);
        foreach (string[] mode in more)
            SameAsLibnbd([.. mode, uri]);
    }

    /// <summary>nbdkit exports, by a short name that labels the test case.</summary>
    private static readonly Dictionary<string, string[]> Exports = new()
    {
        ["memory"] = ["memory", "1M"],
        ["pattern"] = ["pattern", "1M"],
        ["null"] = ["null", "1G"],
        ["sparse-random"] = ["sparse-random", "64M"],
        ["data"] = ["data", "1 2 3 @0x10000 65 66 67 @0x123456 1", "size=2M"],
        ["read-only"] = ["-r", "memory", "1M"],
        ["blocksize-policy"] = ["--filter=blocksize-policy", "memory", "1M", "blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=65536"],
        ["noextents"] = ["--filter=noextents", "memory", "1M"],
        ["nozero"] = ["--filter=nozero", "memory", "1M"],
        ["exportname"] = ["--filter=exportname", "memory", "1M", "exportname=a", "exportname=b", "exportname-list=explicit", "exportdesc=fixed:a \"quoted\" \\ description"],
        ["cacheextents"] = ["--filter=cacheextents", "sparse-random", "16M", "seed=7"],
        ["empty"] = ["memory", "0"],
        ["odd-size"] = ["memory", "1537"],
    };

    public static TheoryData<string> NbdkitExports() => new(Exports.Keys);

    [Theory]
    [MemberData(nameof(NbdkitExports))]
    public void Nbdkit_SameAsLibnbd(string export)
    {
        using ServerProcess server = Peers.Nbdkit(Exports[export]);
        AllModes(server.Uri);
    }

    [Fact]
    public void Nbdkit_Oldstyle_And_NamedExports()
    {
        using (ServerProcess server = Peers.Nbdkit(["--oldstyle", "pattern", "1M"]))
            AllModes(server.Uri);
        using (ServerProcess server = Peers.Nbdkit(["--filter=exportname", "memory", "1M", "exportname=a", "exportname=b",
                   "exportname-list=explicit", "exportname-strict=true", "default-export=a", "exportdesc=script:echo \"about $name\""]))
        {
            AllModes(server.UriFor("b"));
            // An export the server refuses: one line on stderr, exit 1, nothing on stdout, as libnbd.
            SameAsLibnbd(server.UriFor("nope"));
            ToolResult ours = ToolProcess.RunOurs("nbdinfo", server.UriFor("nope"));
            Assert.Single(ours.Stderr.TrimEnd('\n').Split('\n'));
            Assert.StartsWith("nbdinfo: ", ours.Stderr, StringComparison.Ordinal);
            Assert.Contains("nope", ours.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void SocketActivation_SameAsLibnbd()
    {
        Requires.Program("nbdkit");
        foreach (string[] mode in new[] { Array.Empty<string>(), ["--json"], ["--size"], ["--map"], ["--can", "flush"] })
            SameAsLibnbd([.. mode, "--", "[", "nbdkit", "-r", "pattern", "2M", "]"]);
    }

    [Fact]
    public void QemuNbd_Maps_SameAsLibnbd()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-B", "b0", "-A");
        AllModes(server.Uri,
            ["--map=qemu:dirty-bitmap:b0"], ["--map=qemu:dirty-bitmap:b0", "--totals"], ["--map=qemu:dirty-bitmap:b0", "--json"],
            ["--map=qemu:allocation-depth"], ["--map=qemu:allocation-depth", "--totals", "--json"], ["--map=qemu:allocation-depth", "--color"],
            ["--map=qemu:dirty-bitmap:b0", "--color"], ["--map=no:such-context"]);
    }

    [Fact]
    public void QemuNbd_Raw_And_NbdServer_SameAsLibnbd()
    {
        using (ServerProcess server = Peers.QemuNbd("raw", dir =>
               {
                   string image = dir.File("disk.img");
                   Peers.Run("qemu-img", "create", "-q", "-f", "raw", image, "8M");
                   return image;
               }, "-r"))
        {
            AllModes(server.Uri);
        }
        using (ServerProcess server = Peers.NbdServer("disk", dir =>
               {
                   string file = dir.File("disk.img");
                   File.WriteAllBytes(file, new byte[3 << 20]);
                   return file;
               }))
        {
            AllModes(server.UriFor("disk"));
        }
    }

    [Fact]
    public void TlsExport_SameAsLibnbd()
    {
        using var files = new TlsFiles();
        using ServerProcess server = Peers.Nbdkit("--tls=require", "--tls-certificates=" + files.ServerDirectory, "memory", "1M");
        string uri = $"nbds+unix:///?socket={server.Socket}&tls-certificates={files.TrustOnlyDirectory}";
        foreach (string[] mode in Modes)
            SameAsLibnbd([.. mode, uri]);
        ToolResult tls = ToolProcess.RunOurs("nbdinfo", "--is", "tls", uri);
        Assert.Equal(0, tls.ExitCode);
    }

    [Fact]
    public void Libnbd124Options_WhichLibnbd114Lacks()
    {
        using ServerProcess server = Peers.Nbdkit("-r", "memory", "1M");
        ToolResult uri = ToolProcess.RunOurs("nbdinfo", "--uri", server.Uri);
        Assert.Equal((0, server.Uri + "\n"), (uri.ExitCode, uri.Stdout));
        Assert.Equal("\"" + server.Uri + "\"\n", ToolProcess.RunOurs("nbdinfo", "--uri", "--json", server.Uri).Stdout);
        var expectations = new (string[] Args, int Exit)[]
        {
            (["--cannot", "write"], 0), (["--cannot", "flush"], 2), (["--isnt", "read-only"], 2), (["--isnt", "tls"], 0),
            (["--is", "tls"], 2), (["--has", "structured-reply"], 0), (["--hasnt", "extended-headers"], 0),
            (["--has", "extended-headers"], 2), (["--can", "block-status-payload"], 2), (["--cant", "trim"], 0),
            (["--can", "read"], 0), (["--is", "READ-ONLY"], 0),
        };
        foreach ((string[] args, int exit) in expectations)
        {
            ToolResult result = ToolProcess.RunOurs("nbdinfo", [.. args, server.Uri]);
            Assert.True(result.ExitCode == exit && result.Stdout.Length == 0 && result.Stderr.Length == 0,
                $"nbdinfo {string.Join(' ', args)}: {result}");
        }
    }

    [Theory]
    [InlineData("--can", "teleport")]
    [InlineData("--size", "--map")]
    [InlineData("--list", "--uri")]
    [InlineData("--totals")]
    [InlineData("--content", "--no-content")]
    [InlineData("--bogus")]
    [InlineData("-Z")]
    public void BadCommandLines_OneLineAndExit1(params string[] args)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        ToolResult ours = ToolProcess.RunOurs("nbdinfo", [.. args, server.Uri]);
        Assert.Equal(1, ours.ExitCode);
        Assert.Equal("", ours.Stdout);
        string[] lines = ours.Stderr.TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1 && lines[0].StartsWith("nbdinfo: ", StringComparison.Ordinal), ours.ToString());
    }

    [Fact]
    public void ConnectionErrors_OneLine_SameExitCodeAsLibnbd()
    {
        foreach (string uri in new[] { "nbd+unix:///?socket=/nonexistent/sock", "nbd://", "http://example.com/", "nbd+unix:///" })
        {
            ToolResult theirs = ToolProcess.RunLibnbd("nbdinfo", uri);
            ToolResult ours = ToolProcess.RunOurs("nbdinfo", uri);
            Assert.Equal(theirs.ExitCode, ours.ExitCode);
            Assert.Equal("", ours.Stdout);
            Assert.Single(ours.Stderr.TrimEnd('\n').Split('\n'));
            Assert.DoesNotContain("   at ", ours.Stderr, StringComparison.Ordinal);
        }
        Assert.Equal(1, ToolProcess.RunOurs("nbdinfo").ExitCode);
        Assert.Equal(1, ToolProcess.RunOurs("nbdinfo", "nbd://a", "nbd://b").ExitCode);
    }

    [Fact]
    public void HelpVersionAndOptionLists()
    {
        ToolResult help = ToolProcess.RunOurs("nbdinfo", "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("nbdinfo --map", help.Stdout, StringComparison.Ordinal);
        ToolResult version = ToolProcess.RunOurs("nbdinfo", "-V");
        Assert.Equal(0, version.ExitCode);
        Assert.StartsWith("nbdinfo " + NbdHandle.GetVersion() + "\n", version.Stdout, StringComparison.Ordinal);
        // Every long option libnbd 1.14's nbdinfo has, ours has too.
        var ours = new HashSet<string>(ToolProcess.RunOurs("nbdinfo", "--long-options").Stdout.Split('\n'));
        foreach (string option in ToolProcess.RunLibnbd("nbdinfo", "--long-options").Stdout.TrimEnd('\n').Split('\n'))
            Assert.Contains(option, ours);
        Assert.Equal(ToolProcess.RunLibnbd("nbdinfo", "--short-options").Stdout, ToolProcess.RunOurs("nbdinfo", "--short-options").Stdout);
    }

    /// <summary>
    /// A server answering block status with a zero-length extent: libnbd 1.14's nbdinfo --map asks again at the same
    /// offset forever; ours stops at once with the protocol error.
    /// </summary>
    [Fact]
    public async Task ZeroLengthExtent_FailsInsteadOfLoopingForever()
    {
        await using ScriptedServer server = ScriptedServer.Start(async connection =>
        {
            if (!await connection.NegotiateAsync(new ScriptedExport()))
                return;
            while (true)
            {
                ScriptedRequest request = await connection.ReadRequestAsync();
                if (request.IsDisconnect)
                    return;
                await connection.SendBlockStatusAsync(request, 1, [(0UL, 0UL)], done: true);
            }
        });
        ToolResult ours = ToolProcess.Run(ToolProcess.Ours("nbdinfo"), ["--map", server.Uri], TimeSpan.FromSeconds(30));
        Assert.Equal(1, ours.ExitCode);
        Assert.Equal("", ours.Stdout);
        Assert.Contains("nbdinfo: nbd_block_status_64: ", ours.Stderr, StringComparison.Ordinal);
        Assert.Single(ours.Stderr.TrimEnd('\n').Split('\n'));
    }
}
