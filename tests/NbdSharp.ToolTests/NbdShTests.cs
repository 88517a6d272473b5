using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// nbdsh, the NBD shell in C#: its command line against nbdkit and qemu-nbd, its errors, and the interactive shell
/// driven under a pseudo-terminal (tmux).
/// </summary>
public class NbdShTests
{
    /// <summary>Runs nbdsh once, with an empty cache of compiled code of its own (so the code is compiled).</summary>
    private static ToolResult Shell(params string[] args)
    {
        using var cache = new TempDirectory();
        return ShellIn(cache.Path, null, args);
    }

    /// <summary>
    /// Runs nbdsh twice with a fresh cache of compiled code: compiling, then (for code the cache keeps) from the cache;
    /// both runs must print the same and exit the same. For commands whose effects bear repeating.
    /// </summary>
    private static ToolResult BothWays(params string[] args) => BothWaysWithInput(null, args);

    private static ToolResult BothWaysWithInput(string? stdin, params string[] args)
    {
        using var cache = new TempDirectory();
        ToolResult compiled = ShellIn(cache.Path, stdin, args);
        ToolResult again = ShellIn(cache.Path, stdin, args);
        Assert.True(compiled.ExitCode == again.ExitCode && compiled.Stdout == again.Stdout && compiled.Stderr == again.Stderr,
            "compiled: " + compiled + "\nfrom the cache: " + again);
        return compiled;
    }

    private static ToolResult ShellIn(string cache, string? stdin, string[] args) =>
        ToolProcess.Run(ToolProcess.Ours("nbdsh"), args, stdin: stdin, environment: new Dictionary<string, string> { ["XDG_CACHE_HOME"] = cache });

    [Fact]
    public void Uri_AndCommand_PrintsTheTrailingExpression()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1G");
        ToolResult result = BothWays("-u", server.Uri, "-c", "h.GetSize()");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("1073741824\n", result.Stdout);
        Assert.Equal("", result.Stderr);

        // A statement prints nothing; a value of another type prints as csi prints it; void prints nothing.
        result = BothWays("-u", server.Uri, "-c", "var size = h.GetSize();", "-c", "\"size \" + size", "-c", "new byte[] { 1, 2 }", "-c", "h.Flush()");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("\"size 1073741824\"\nbyte[2] { 1, 2 }\n", result.Stdout);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BaseAllocation_TakesEffectBeforeTheConnection_WhereverItStands(bool afterTheUri)
    {
        using ServerProcess server = Peers.Nbdkit("sparse-random", "16M", "seed=7");
        string[] connect = afterTheUri ? ["-u", server.Uri, "--base-allocation"] : ["--base-allocation", "-u", server.Uri];
        ToolResult result = BothWays([.. connect, "-c",
            "h.BlockStatus(1 << 20, 0, (string context, ulong offset, ReadOnlySpan<uint> entries, ref int error) =>" +
            " { Console.WriteLine($\"{context} {entries.Length / 2} extents\"); return 0; });",
            "-c", "h.CanMetaContext(MetaContext.BaseAllocation)"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches("^base:allocation [1-9][0-9]* extents\ntrue\n$", result.Stdout);
    }

    [Fact]
    public void OptMode_WithUri_ThenOptListAndOptGo()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=exportname", "memory", "1M", "exportname=a", "exportname=b",
            "exportname-list=explicit", "default-export=a");
        ToolResult result = BothWays("--opt-mode", "-u", server.Uri,
            "-c", "h.AioIsNegotiating()",
            "-c", "h.OptList((name, description) => { Console.WriteLine(name); return 0; });",
            "-c", "h.SetExportName(\"b\"); h.OptGo();",
            "-c", "h.GetSize()");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("true\na\nb\n1048576\n", result.Stdout);
    }

    [Fact]
    public void NoHandle_LeavesHNull_AndRefusesOptionsThatNeedOne()
    {
        ToolResult result = BothWays("-n", "-c", "h == null");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("true\n", result.Stdout);

        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        result = BothWays("-n", "-c", "h = new NbdHandle(); h.ConnectUri(\"" + server.Uri + "\");", "-c", "h.GetSize()");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("1048576\n", result.Stdout);

        foreach (string[] args in new[] { new[] { "-n", "-u", server.Uri }, ["-n", "--base-allocation"], ["-n", "--opt-mode"] })
        {
            result = BothWays(args);
            Assert.Equal(1, result.ExitCode);
            Assert.Equal("nbdsh: -n option cannot be used with --base-allocation, --opt-mode or --uri\n", result.Stderr);
        }
    }

    [Fact]
    public void CommandFromStandardInput_AndCommandsSharingVariables()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1G");
        ToolResult result = BothWaysWithInput("var sectors = h.GetSize() / 512;\nsectors\n", "-u", server.Uri, "-c", "-");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("2097152\n", result.Stdout);

        result = BothWays("-u", server.Uri, "-c", "var data = new byte[512]; data[0] = 0x5a;", "-c", "h.Pwrite(data, 4096);",
            "-c", "var back = new byte[512]; h.Pread(back, 4096);", "-c", "back[0] == data[0]");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("true\n", result.Stdout);
    }

    /// <summary>
    /// The shell's references: framework types reached through forwarders (Uri, Process) resolve as in csi, hashes and
    /// sockets need nothing, other framework assemblies are a #r away, and the shell's own dependencies (the compiler)
    /// stay out of sight.
    /// </summary>
    [Fact]
    public void Scripts_SeeTheFramework_AndReferenceMoreWithHashR()
    {
        ToolResult result = BothWays("-n",
            "-c", "new Uri(\"nbd://example.com:10810/disk\").Port",
            "-c", "System.Diagnostics.Process.GetCurrentProcess().Id == Environment.ProcessId",
            "-c", "Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(new byte[512]))[..8]",
            "-c", "System.Text.RegularExpressions.Regex.IsMatch(\"nbd+unix\", \"^nbds?(\\\\+unix)?$\")",
            "-c", "new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp).Connected",
            "-c", "#r \"System.Text.Json\"\nSystem.Text.Json.JsonSerializer.Serialize(new[] { 1, 2 })");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("10810\ntrue\n\"076A27C7\"\ntrue\nfalse\n\"[1,2]\"\n", result.Stdout);

        result = BothWays("-n", "-c", "Microsoft.CodeAnalysis.SyntaxKind.None");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("error CS0234", result.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// The values nbdsh prints itself (null, booleans, integers, plain strings) print as Roslyn's C# object formatter
    /// (csi's) prints them, and so do the others, which it hands to that formatter: the script references the
    /// formatter and prints each value both ways.
    /// </summary>
    [Fact]
    public void Values_PrintAsCsiPrintsThem()
    {
        string formatter = Path.Combine(Path.GetDirectoryName(ToolProcess.Ours("nbdsh"))!, "Microsoft.CodeAnalysis.CSharp.Scripting.dll");
        var args = new List<string> { "-n", "-c", "#r \"" + formatter + "\"",
            "-c", "var formatter = Microsoft.CodeAnalysis.CSharp.Scripting.Hosting.CSharpObjectFormatter.Instance;" };
        string[] values = ["null", "true", "false", "5u", "-7L", "ulong.MaxValue", "(byte)200", "(sbyte)-3", "(short)-300",
            "(ushort)65000", "int.MinValue", "\"plain ~!@#$%^&*()\"", "\"with \\\"quotes\\\" and \\\\\"", "\"tab\\there\"", "\"\"",
            "\"caf\\u00e9\"", "1.5", "'c'", "new[] { 1L, 2L }", "(1, \"a\")"];
        foreach (string value in values)
            args.AddRange(["-c", $"object v = {value}; Console.WriteLine(formatter.FormatObject(v));", "-c", "v"]);
        ToolResult result = Shell([.. args]);
        Assert.True(result.ExitCode == 0, result.ToString());
        string[] lines = result.Stdout.Split('\n');
        Assert.Equal(2 * values.Length + 1, lines.Length);
        for (int i = 0; i < values.Length; i++)
            Assert.True(lines[2 * i] == lines[2 * i + 1], $"{values[i]}: the formatter prints {lines[2 * i]}, nbdsh {lines[2 * i + 1]}");
        Assert.Equal("18446744073709551615", lines[10]);
    }

    /// <summary>
    /// Without -c and with a pipe for input, the shell reads its lines as they come (a statement may span lines),
    /// without a banner or prompt; exit leaves; an error is reported, the next lines still run, and the status is 1.
    /// </summary>
    [Fact]
    public void PipedInput_RunsLineByLine_ExitLeaves_AndErrorsSetTheStatus()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using var cache = new TempDirectory();
        ToolResult result = ShellIn(cache.Path, "var x =\n  h.GetSize();\nx / 1024\nexit\nConsole.WriteLine(\"not reached\");\n", ["-u", server.Uri]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("1024\n", result.Stdout);
        Assert.Equal("", result.Stderr);

        result = ShellIn(cache.Path, "h.Pread(new byte[1], 1UL << 40)\nint y = ;\n\"still here\"\n", ["-u", server.Uri]);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("\"still here\"\n", result.Stdout);
        Assert.Equal("nbdsh: nbd_pread: request out of bounds: Invalid argument (EINVAL)\nnbdsh: (1,9): error CS1525: Invalid expression term ';'\n",
            result.Stderr);
    }

    [Fact]
    public void ScriptFile_WithAShebang_GetsItsArguments()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using var dir = new TempDirectory();
        string script = dir.File("size.csx");
        File.WriteAllText(script, "#!/usr/bin/env nbdsh\nConsole.WriteLine($\"{Args[0]}: {h.GetSize() / int.Parse(Args[1])}\");\n");
        ToolResult result = BothWays("-u", server.Uri, script, "blocks", "4096");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("blocks: 256\n", result.Stdout);
    }

    /// <summary>
    /// The cache of compiled code: a second run of the same code (against another server) runs what the first
    /// compiled; other code, code with #r, code that does not compile and NBDSH_NO_CACHE are not served from it; a
    /// damaged entry is compiled again.
    /// </summary>
    [Fact]
    public void CompiledCode_IsCachedPerCodeNotPerServer_AndDamageMeansCompilingAgain()
    {
        using ServerProcess first = Peers.Nbdkit("memory", "1M");
        using ServerProcess second = Peers.Nbdkit("memory", "2M");
        using var cache = new TempDirectory();
        string folder = Path.Combine(cache.Path, "nbdsh");
        const string FromCache = "nbdsh: debug: running code compiled by an earlier run";
        string[] code = ["-c", "var size = h.GetSize();", "-c", "size / 512"];

        ToolResult result = ShellIn(cache.Path, null, ["-v", "-u", first.Uri, .. code]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("2048\n", result.Stdout);
        Assert.DoesNotContain(FromCache, result.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, Directory.GetFiles(folder, "*.nbdsh").Length);

        result = ShellIn(cache.Path, null, ["-v", "-u", second.Uri, .. code]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("4096\n", result.Stdout);
        Assert.Contains(FromCache + ", from " + folder + "\n", result.Stderr, StringComparison.Ordinal);

        // One step more, or another step: compiled (and kept too).
        result = ShellIn(cache.Path, null, ["-v", "-u", second.Uri, .. code, "-c", "size"]);
        Assert.Equal("4096\n2097152\n", result.Stdout);
        Assert.DoesNotContain(FromCache, result.Stderr, StringComparison.Ordinal);
        Assert.Equal(3, Directory.GetFiles(folder, "*.nbdsh").Length);

        // #r, compile errors and NBDSH_NO_CACHE leave nothing behind.
        Assert.Equal(0, ShellIn(cache.Path, null, ["-n", "-c", "#r \"System.Text.Json\"\n1"]).ExitCode);
        Assert.Equal(1, ShellIn(cache.Path, null, ["-n", "-c", "1 +"]).ExitCode);
        var off = new Dictionary<string, string> { ["XDG_CACHE_HOME"] = cache.Path, ["NBDSH_NO_CACHE"] = "1" };
        Assert.Equal("3\n", ToolProcess.Run(ToolProcess.Ours("nbdsh"), ["-n", "-c", "1 + 2"], environment: off).Stdout);
        Assert.Equal(3, Directory.GetFiles(folder, "*.nbdsh").Length);

        // Every entry damaged (a byte of the assembly changed, or the file cut short): compiled again, and right.
        string[] entries = Directory.GetFiles(folder, "*.nbdsh");
        Array.Sort(entries, StringComparer.Ordinal);
        for (int i = 0; i < entries.Length; i++)
        {
            string entry = entries[i];
            byte[] bytes = File.ReadAllBytes(entry);
            if (i % 2 == 0)
                File.WriteAllBytes(entry, bytes.AsSpan(0, bytes.Length / 2).ToArray());
            else
            {
                bytes[^100] ^= 0xff;
                File.WriteAllBytes(entry, bytes);
            }
        }
        result = ShellIn(cache.Path, null, ["-v", "-u", first.Uri, .. code]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("2048\n", result.Stdout);
        Assert.DoesNotContain(FromCache, result.Stderr, StringComparison.Ordinal);
        result = ShellIn(cache.Path, null, ["-v", "-u", first.Uri, .. code]);
        Assert.Equal("2048\n", result.Stdout);
        Assert.Contains(FromCache, result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void CompileErrors_AreTheCompilersWithLineAndColumn_AndNothingRuns()
    {
        ToolResult result = Shell("-n", "-c", "Console.WriteLine(\"ran\");", "-c", "int x = ;", "-c", "Console.WriteLine(\"not reached\");");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("ran\n", result.Stdout);
        Assert.Equal("nbdsh: (1,9): error CS1525: Invalid expression term ';'\n", result.Stderr);

        result = Shell("-n", "-c", "var fine = 1;\nundefinedName + fine");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("nbdsh: (2,1): error CS0103: The name 'undefinedName' does not exist in the current context\n", result.Stderr);

        using var dir = new TempDirectory();
        string script = dir.File("bad.csx");
        File.WriteAllText(script, "var ok = 1;\nok +\n");
        result = Shell("-n", script);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("nbdsh: " + script + "(2,5): error CS1733: Expected expression\n", result.Stderr);
    }

    [Fact]
    public void Exceptions_AreOneLineWithTheErrnoName_AndTheStackTraceOnlyWithVerbose()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        ToolResult result = BothWays("-u", server.Uri, "-c", "h.Pread(new byte[512], 1UL << 40)", "-c", "Console.WriteLine(\"not reached\");");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("", result.Stdout);
        Assert.Equal("nbdsh: nbd_pread: request out of bounds: Invalid argument (EINVAL)\n", result.Stderr);

        result = BothWays("-n", "-c", "throw new InvalidOperationException(\"no\");");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("nbdsh: InvalidOperationException: no\n", result.Stderr);

        result = Shell("-v", "-u", server.Uri, "-c", "h.Pread(new byte[512], 1UL << 40)");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("nbdsh: nbd_pread: request out of bounds: Invalid argument (EINVAL)\n", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("   at NbdSharp.NbdHandle.", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("libnbd: debug: nbdsh:", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void DeadServers_FailWithOneLine()
    {
        ToolResult result = Shell("-u", "nbd+unix:///?socket=/nonexistent/nbd.sock", "-c", "Console.WriteLine(\"not reached\");");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("", result.Stdout);
        Assert.Matches("^nbdsh: nbd_connect_uri: .*No such file or directory \\(ENOENT\\)\n$", result.Stderr);

        // The server dies under an open handle: the next command fails, and nothing after it runs.
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        string kill = $"var server = System.Diagnostics.Process.GetProcessById({server.Pid}); server.Kill(); server.WaitForExit();";
        result = Shell("-u", server.Uri, "-c", kill, "-c", "h.Pread(new byte[512], 0);", "-c", "Console.WriteLine(\"not reached\");");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("", result.Stdout);
        Assert.Matches("^nbdsh: nbd_pread: .*\\((ENOTCONN|ECONNRESET|EPIPE)\\)\n$", result.Stderr);
    }

    [Fact]
    public void QemuNbd_Raw_AndQcow2WithABitmap()
    {
        using ServerProcess qcow2 = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-r", "-B", "b0");
        ToolResult result = BothWays("--base-allocation", "-u", qcow2.Uri,
            "-c", "h.GetSize()", "-c", "h.IsReadOnly()", "-c", "h.CanMetaContext(MetaContext.BaseAllocation)");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Matches("^[1-9][0-9]*\ntrue\ntrue\n$", result.Stdout);

        using ServerProcess raw = Peers.QemuNbd("raw", dir =>
        {
            string image = dir.File("disk.img");
            using (FileStream file = File.Create(image))
                file.SetLength(1 << 20);
            return image;
        });
        result = BothWays("-u", raw.Uri, "-c", "h.Pwrite(new byte[] { 1, 2, 3 }.Concat(new byte[509]).ToArray(), 0);",
            "-c", "var back = new byte[3]; h.Pread(back, 0); back");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("byte[3] { 1, 2, 3 }\n", result.Stdout);
    }

    [Fact]
    public void HelpVersionAndOptionLists_MatchLibnbdsNbdsh()
    {
        ToolResult ours = Shell("--long-options");
        Assert.Equal(0, ours.ExitCode);
        Assert.Equal("--base-allocation\n--command\n--opt-mode\n--uri\n--verbose\n--version\n", ours.Stdout);
        Assert.Equal("-V\n-c\n-n\n-u\n-v\n", Shell("--short-options").Stdout);
        Assert.Matches("^nbdsh [0-9.]+\nNbdSharp [0-9.]+\n$", Shell("-V").Stdout);
        Assert.StartsWith("usage: nbdsh ", Shell("--help").Stdout, StringComparison.Ordinal);
        ToolResult bad = Shell("--no-such-option");
        Assert.Equal(1, bad.ExitCode);
        Assert.Equal("nbdsh: unrecognized option '--no-such-option'\n", bad.Stderr);

        // libnbd's nbdsh (Python) lists the same options.
        ToolResult theirs = ToolProcess.Run(Requires.Program("/usr/bin/python3"), ["-m", "nbd", "--long-options"]);
        Assert.Equal(theirs.Stdout, ours.Stdout);
        Assert.Equal(ToolProcess.Run("/usr/bin/python3", ["-m", "nbd", "--short-options"]).Stdout, Shell("--short-options").Stdout);
    }

    [Fact]
    public void Helpers_HelpListsEveryCallInGroups_AndHexdumpPrintsAsNbddump()
    {
        ToolResult result = BothWays("-n", "-c", "help()");
        Assert.True(result.ExitCode == 0, result.ToString());
        foreach (string title in new[] { "Connecting:", "Option negotiation (opt mode):", "TLS:", "Commands:", "Asynchronous commands and the event loop:" })
            Assert.Contains("\n" + title + "\n", result.Stdout, StringComparison.Ordinal);
        // Every libnbd call but nbd_create and nbd_close (the constructor and Dispose) is listed under some heading.
        var listed = new HashSet<string>(result.Stdout.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries), StringComparer.Ordinal);
        int calls = 0;
        foreach (string line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "libnbd-api.tsv")))
        {
            string[] fields = line.Split('\t');
            if (line.StartsWith('#') || fields.Length < 4 || fields[3] is "Create" or "Close")
                continue;
            Assert.True(listed.Contains(fields[3]), fields[0] + " (" + fields[3] + ") is missing from help()");
            calls++;
        }
        Assert.Equal(163, calls);

        result = BothWays("-n", "-c", "help(\"pread\")", "-c", "help(\"NoSuchCall\")");
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.StartsWith("void Pread(Span<byte> buf, ulong offset, CmdFlag flags = CmdFlag.None)\n    Reads buf.Length bytes at offset", result.Stdout, StringComparison.Ordinal);
        Assert.EndsWith("NbdHandle has no call named NoSuchCall; help() lists them.\n", result.Stdout, StringComparison.Ordinal);

        // hexdump as nbddump prints it (without a terminal, no colours); the same bytes through nbddump agree.
        using ServerProcess server = Peers.Nbdkit("pattern", "64");
        result = BothWays("-u", server.Uri, "-c", "var sector = new byte[64]; h.Pread(sector, 0); hexdump(sector);");
        Assert.True(result.ExitCode == 0, result.ToString());
        ToolResult nbddump = ToolProcess.RunOurs("nbddump", server.Uri);
        Assert.Equal(nbddump.Stdout, result.Stdout);
    }

    [Fact]
    public void Interactive_UnderAPseudoTerminal_CompletesContinuesAndLeaves()
    {
        string tmux = Requires.Program("tmux");
        using ServerProcess server = Peers.Nbdkit("memory", "1G");
        using var dir = new TempDirectory();
        string socket = dir.File("tmux.sock");
        string done = dir.File("done");
        // The shell runs in a tmux pane (a pseudo-terminal); its exit status lands in a file.
        string command = $"XDG_DATA_HOME='{dir.Path}' '{ToolProcess.Ours("nbdsh")}' -u '{server.Uri}'; echo $? > '{done}'";
        // The history of earlier sessions, longer than the shell keeps (1000 lines).
        string historyFile = Path.Combine(dir.Path, "nbdsh", "history");
        Directory.CreateDirectory(Path.GetDirectoryName(historyFile)!);
        var seeded = new List<string>();
        for (int i = 0; i < 2500; i++)
            seeded.Add($"var seeded{i} = {i};");
        File.WriteAllLines(historyFile, seeded);
        Tmux(tmux, socket, "new-session", "-d", "-x", "150", "-y", "50", command);
        try
        {
            Assert.True(WaitForPane(tmux, socket, "nbd>"), Pane(tmux, socket)); // capture-pane drops trailing blanks
            Assert.Contains("there is an open NBD handle called ‘h’", Pane(tmux, socket), StringComparison.Ordinal);

            // Up recalls the last lines of earlier sessions, Down comes back; Left and Backspace edit the recalled line.
            Tmux(tmux, socket, "send-keys", "Up", "Up");
            Assert.True(WaitForPane(tmux, socket, "nbd> var seeded2498 = 2498;"), Pane(tmux, socket));
            Tmux(tmux, socket, "send-keys", "Down", "Left", "BSpace", "7", "Enter");
            Tmux(tmux, socket, "send-keys", "seeded2499", "Enter");
            Assert.True(WaitForPane(tmux, socket, "nbd> seeded2499\n2497\n"), Pane(tmux, socket));

            // Tab completes a member of h; the value of a bare expression is printed.
            Tmux(tmux, socket, "send-keys", "h.GetSi", "Tab");
            Assert.True(WaitForPane(tmux, socket, "nbd> h.GetSize"), Pane(tmux, socket));
            Tmux(tmux, socket, "send-keys", "()", "Enter");
            Assert.True(WaitForPane(tmux, socket, "1073741824"), Pane(tmux, socket));

            // An unfinished statement continues on the next line.
            Tmux(tmux, socket, "send-keys", "var twice =", "Enter");
            Assert.True(WaitForPane(tmux, socket, "...>"), Pane(tmux, socket));
            Tmux(tmux, socket, "send-keys", "  h.GetSize() * 2\\;", "Enter");
            Tmux(tmux, socket, "send-keys", "twice", "Enter");
            Assert.True(WaitForPane(tmux, socket, "2147483648"), Pane(tmux, socket));

            // An exception is reported and the session goes on.
            Tmux(tmux, socket, "send-keys", "h.Pread(new byte[1], 1UL << 40)", "Enter");
            Assert.True(WaitForPane(tmux, socket, "(EINVAL)"), Pane(tmux, socket));
            Tmux(tmux, socket, "send-keys", "hexdump(new byte[] { 0x41, 0x42 })", "Enter");
            Assert.True(WaitForPane(tmux, socket, "0000000000: 41 42"), Pane(tmux, socket));

            // Ctrl-C drops the line being typed; Ctrl-D on an empty line leaves.
            Tmux(tmux, socket, "send-keys", "this is dropped", "C-c");
            Assert.True(WaitForPane(tmux, socket, "this is dropped^C"), Pane(tmux, socket));
            Tmux(tmux, socket, "send-keys", "C-d");
            Assert.True(SpinWait.SpinUntil(() => File.Exists(done) && File.ReadAllText(done).Length > 0, TimeSpan.FromSeconds(30)), Pane(tmux, socket));
            Assert.Equal("0", File.ReadAllText(done).Trim());
            string history = File.ReadAllText(historyFile);
            Assert.Contains("h.GetSize()\n", history, StringComparison.Ordinal);
            Assert.Contains("var seeded2499 = 2497;\n", history, StringComparison.Ordinal);
            Assert.DoesNotContain("this is dropped", history, StringComparison.Ordinal);
            // The file was cut back to the 1000 lines kept, then this session's lines were added.
            string[] lines = File.ReadAllLines(historyFile);
            Assert.Equal("var seeded1500 = 1500;", lines[0]);
            Assert.InRange(lines.Length, 1001, 1020);
        }
        finally
        {
            Tmux(tmux, socket, "kill-server");
        }
    }

    private static string Tmux(string tmux, string socket, params string[] args) =>
        ToolProcess.Run(tmux, ["-S", socket, .. args], TimeSpan.FromSeconds(30)).Stdout;

    private static string Pane(string tmux, string socket) => Tmux(tmux, socket, "capture-pane", "-p", "-S", "-100");

    private static bool WaitForPane(string tmux, string socket, string text) =>
        SpinWait.SpinUntil(() => Pane(tmux, socket).Contains(text, StringComparison.Ordinal), TimeSpan.FromSeconds(60));
}
