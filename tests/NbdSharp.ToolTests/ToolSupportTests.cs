using System;
using System.Linq;
using NbdSharp.Tools;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>The shared tool pieces: sizes, endpoints and getopt-style parsing.</summary>
public class ToolSupportTests
{
    [Theory]
    [InlineData(0UL, "0", false)]
    [InlineData(1UL, "1", false)]
    [InlineData(1023UL, "1023", false)]
    [InlineData(1024UL, "1K", true)]
    [InlineData(1536UL, "1536", false)]
    [InlineData(1048576UL, "1M", true)]
    [InlineData(3UL << 30, "3G", true)]
    [InlineData((1UL << 40) + (1UL << 30), "1025G", true)]
    [InlineData(1UL << 60, "1E", true)]
    [InlineData(ulong.MaxValue, "18446744073709551615", false)]
    public void HumanSize_Format(ulong bytes, string expected, bool abbreviated)
    {
        Assert.Equal(expected, HumanSize.Format(bytes, out bool human));
        Assert.Equal(abbreviated, human);
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("-0", 0L)]
    [InlineData("+0", 0L)]
    [InlineData(" 08", 8L)]
    [InlineData("1234567890", 1234567890L)]
    [InlineData("9223372036854775807", long.MaxValue)]
    [InlineData("1s", 512L)]
    [InlineData("2S", 1024L)]
    [InlineData("1b", 1L)]
    [InlineData("1k", 1024L)]
    [InlineData("+1M", 1048576L)]
    [InlineData("1g", 1L << 30)]
    [InlineData("1T", 1L << 40)]
    [InlineData("8191p", 8191L << 50)]
    [InlineData("1E", 1L << 60)]
    public void HumanSize_Parse(string text, long expected)
    {
        Assert.True(HumanSize.TryParse(text, out long size, out string error), error);
        Assert.Equal(expected, size);
    }

    [Theory]
    [InlineData("")]
    [InlineData("0x0")]
    [InlineData("garbage")]
    [InlineData("0garbage")]
    [InlineData("8E")]
    [InlineData("8192P")]
    [InlineData("9223372036854775808")]
    [InlineData("18446744073709551616")]
    [InlineData("-1")]
    [InlineData("-9223372036854775808")]
    [InlineData("M")]
    [InlineData("1MB")]
    [InlineData("1MiB")]
    [InlineData("1.5M")]
    public void HumanSize_Parse_Refuses(string text) => Assert.False(HumanSize.TryParse(text, out _, out _));

    private static (ToolCommandLine, ToolOption, ToolOption, ToolOption) Sample()
    {
        var map = new ToolOption("--map") { OptionalValue = true };
        var json = ToolOption.Flag("--json");
        var can = ToolOption.WithValue("--can", "--is");
        var line = new ToolCommandLine("test", map, json, can);
        return (line, map, json, can);
    }

    [Fact]
    public void Getopt_OptionalValue_NeedsEquals()
    {
        var (line, map, json, _) = Sample();
        ToolArguments result = line.Parse(["--map", "nbd://h", "--json"])!;
        Assert.True(result.Has(map));
        Assert.Null(result.Value(map));
        Assert.True(result.Has(json));
        Assert.Equal(["nbd://h"], result.Positionals);
        result = line.Parse(["--map=qemu:allocation-depth", "nbd://h"])!;
        Assert.Equal("qemu:allocation-depth", result.Value(map));
        // The last one wins, with or without its value.
        Assert.Null(line.Parse(["--map=x", "--map"])!.Value(map));
    }

    [Fact]
    public void Getopt_AttachedShortValue_DoesNotTakeTheNextWord()
    {
        var n = ToolOption.WithValue("--length", "-n");
        var v = ToolOption.Flag("-V");
        var line = new ToolCommandLine("test", n, v);
        ToolArguments result = line.Parse(["-Vn10", "nbd://h"])!;
        Assert.Equal("10", result.Value(n));
        Assert.True(result.Has(v));
        Assert.Equal(["nbd://h"], result.Positionals);
        result = line.Parse(["-n", "10", "nbd://h"])!;
        Assert.Equal("10", result.Value(n));
        Assert.Equal(["nbd://h"], result.Positionals);
        // A separate value is taken as it is, even when it looks like an option; the last one wins.
        result = line.Parse(["-n", "-V", "--length=3", "x", "--length", "--json"])!;
        Assert.Equal("--json", result.Value(n));
        Assert.False(result.Has(v));
        Assert.Equal(["x"], result.Positionals);
    }

    [Fact]
    public void Getopt_PrefixesBundlesAndTheEndOfOptions()
    {
        var check = ToolOption.Flag("--check", "-c");
        var connections = ToolOption.WithValue("--connections", "-C");
        var colour = ToolOption.Flag("--color", "--colour");
        var quiet = ToolOption.Flag("--quiet", "-q");
        var line = new ToolCommandLine("test", check, connections, colour, quiet);
        ToolArguments result = line.Parse(["--conn=4", "--che", "-qc", "--col", "a", "--", "-q", "--check", "-"])!;
        Assert.Equal("4", result.Value(connections));
        Assert.True(result.Has(check));
        Assert.True(result.Has(quiet));
        Assert.True(result.Has(colour)); // "--col" names two spellings of one option: not ambiguous
        Assert.Equal(["a", "-q", "--check", "-"], result.Positionals);
        Assert.Equal([check, quiet, check, colour], result.Uses.Select(use => use.Option).Skip(1));
        Assert.Same(colour, result.Last(check, colour));
        Assert.Same(check, result.First(colour, check));
    }

    [Fact]
    public void Getopt_BracketGroupsAnywhere_LeaveAPlaceholder()
    {
        var line = new ToolCommandLine("test") { BracketGroupsAnywhere = true };
        ToolArguments result = line.Parse(["--", "[", "nbdkit", "null", "1M", "]", "out.img", "[", "qemu-nbd", "x", "]"])!;
        Assert.Equal(["[", "out.img", "["], result.Positionals);
        Assert.Equal(2, line.ServerCommands.Count);
        Assert.Equal(["nbdkit", "null", "1M"], line.ServerCommands[0]);
        Assert.Equal(["qemu-nbd", "x"], line.ServerCommands[1]);
    }

    [Fact]
    public void Getopt_ServerCommand_InBrackets()
    {
        var (line, _, _, can) = Sample();
        ToolArguments result = line.Parse(["--can", "flush", "--", "[", "nbdkit", "-r", "memory", "1M", "]"])!;
        Assert.Equal("flush", result.Value(can));
        Assert.Empty(result.Positionals);
        Assert.Equal(["nbdkit", "-r", "memory", "1M"], line.ServerCommand);
        ServerEndpoint endpoint = ServerEndpoint.FromCommandLine(line.ServerCommand, result.Positionals, "usage");
        Assert.Null(endpoint.Uri);
        Assert.Equal("[ nbdkit -r memory 1M ]", endpoint.ToString());
    }

    [Fact]
    public void Getopt_Errors_AreGetoptsOneLine()
    {
        var (line, _, _, _) = Sample();
        Assert.Equal("unrecognized option '--nope'", Assert.Throws<ToolException>(() => line.Parse(["--nope", "x"])).Message);
        Assert.Equal("unrecognized option '--nope=1'", Assert.Throws<ToolException>(() => line.Parse(["--nope=1"])).Message);
        Assert.Equal("invalid option -- 'x'", Assert.Throws<ToolException>(() => line.Parse(["-x"])).Message);
        Assert.Equal("option '--can' requires an argument", Assert.Throws<ToolException>(() => line.Parse(["--ca"])).Message);
        Assert.Equal("option '--json' doesn't allow an argument", Assert.Throws<ToolException>(() => line.Parse(["--json=yes"])).Message);
        var n = ToolOption.WithValue("--length", "-n");
        var other = ToolOption.Flag("--list");
        var shortLine = new ToolCommandLine("test", n, other);
        Assert.Equal("option requires an argument -- 'n'", Assert.Throws<ToolException>(() => shortLine.Parse(["-n"])).Message);
        Assert.Equal("option '--l' is ambiguous; possibilities: '--length' '--list'",
            Assert.Throws<ToolException>(() => shortLine.Parse(["--l", "1"])).Message);
        Assert.Contains("']'", Assert.Throws<ToolException>(() => line.Parse(["[", "nbdkit"])).Message, StringComparison.Ordinal);
        Assert.Throws<ToolException>(() => ServerEndpoint.FromCommandLine(null, [], "need an NBD URI"));
        Assert.Equal("need an NBD URI", Assert.Throws<ToolException>(() => ServerEndpoint.FromCommandLine(null, ["a", "b"], "need an NBD URI")).Message);
    }

    [Fact]
    public void ChildOutput_FirstLine()
    {
        Assert.Equal("one", ChildOutput.FirstLine("printf", "one\r\ntwo\n"));
        Assert.Equal("no newline", ChildOutput.FirstLine("printf", "no newline"));
        Assert.Null(ChildOutput.FirstLine("true"));
        Assert.Null(ChildOutput.FirstLine("nbdsharp-no-such-program"));
        // Output past what is kept is read and dropped: the child is not left blocked on a full pipe.
        Assert.Equal(new string('y', 100), ChildOutput.FirstLine("sh", "-c", "printf '%0100d\\n' 0 | tr 0 y; head -c 4000000 /dev/zero"));
        Assert.Throws<ArgumentException>(() => ChildOutput.FirstLine());
    }
}
