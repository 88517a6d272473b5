using System;
using System.CommandLine;
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

    private static (ToolCommandLine, Option<string>, Option<bool>, Option<string>, Argument<string[]>) Sample()
    {
        var map = new Option<string>("--map");
        var json = new Option<bool>("--json");
        var can = new Option<string>("--can", "--is");
        var rest = new Argument<string[]>("endpoint") { Arity = ArgumentArity.ZeroOrMore };
        var root = new RootCommand("test") { map, json, can, rest };
        var line = new ToolCommandLine("test", root);
        line.OptionalValue("--map", "base:allocation");
        return (line, map, json, can, rest);
    }

    [Fact]
    public void Getopt_OptionalValue_NeedsEquals()
    {
        var (line, map, json, _, rest) = Sample();
        ParseResult result = line.Parse(["--map", "nbd://h", "--json"])!;
        Assert.Equal("base:allocation", result.GetValue(map));
        Assert.True(result.GetValue(json));
        Assert.Equal(["nbd://h"], result.GetValue(rest)!);
        result = line.Parse(["--map=qemu:allocation-depth", "nbd://h"])!;
        Assert.Equal("qemu:allocation-depth", result.GetValue(map));
    }

    [Fact]
    public void Getopt_AttachedShortValue_DoesNotTakeTheNextWord()
    {
        var n = new Option<string>("--length", "-n");
        var v = new Option<bool>("-V");
        var rest = new Argument<string[]>("endpoint") { Arity = ArgumentArity.ZeroOrMore };
        var line = new ToolCommandLine("test", new RootCommand("test") { n, v, rest });
        ParseResult result = line.Parse(["-Vn10", "nbd://h"])!;
        Assert.Equal("10", result.GetValue(n));
        Assert.True(result.GetValue(v));
        Assert.Equal(["nbd://h"], result.GetValue(rest)!);
        result = line.Parse(["-n", "10", "nbd://h"])!;
        Assert.Equal("10", result.GetValue(n));
        Assert.Equal(["nbd://h"], result.GetValue(rest)!);
    }

    [Fact]
    public void Getopt_BracketGroupsAnywhere_LeaveAPlaceholder()
    {
        var rest = new Argument<string[]>("endpoints") { Arity = ArgumentArity.ZeroOrMore };
        var line = new ToolCommandLine("test", new RootCommand("test") { rest }) { BracketGroupsAnywhere = true };
        ParseResult result = line.Parse(["--", "[", "nbdkit", "null", "1M", "]", "out.img", "[", "qemu-nbd", "x", "]"])!;
        Assert.Equal(["[", "out.img", "["], result.GetValue(rest)!);
        Assert.Equal(2, line.ServerCommands.Count);
        Assert.Equal(["nbdkit", "null", "1M"], line.ServerCommands[0]);
        Assert.Equal(["qemu-nbd", "x"], line.ServerCommands[1]);
    }

    [Fact]
    public void Getopt_ServerCommand_InBrackets()
    {
        var (line, _, _, can, rest) = Sample();
        ParseResult result = line.Parse(["--can", "flush", "--", "[", "nbdkit", "-r", "memory", "1M", "]"])!;
        Assert.Equal("flush", result.GetValue(can));
        Assert.Empty(result.GetValue(rest)!);
        Assert.Equal(["nbdkit", "-r", "memory", "1M"], line.ServerCommand);
        ServerEndpoint endpoint = ServerEndpoint.FromCommandLine(line.ServerCommand, result.GetValue(rest)!, "usage");
        Assert.Null(endpoint.Uri);
        Assert.Equal("[ nbdkit -r memory 1M ]", endpoint.ToString());
    }

    [Fact]
    public void Getopt_Errors_AreOneLine()
    {
        var (line, _, _, _, _) = Sample();
        Assert.Equal("unrecognized option '--nope'", Assert.Throws<ToolException>(() => line.Parse(["--nope", "x"])).Message);
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
