using System;
using System.Collections.Generic;

namespace NbdSharp.Tools.Dump;

/// <summary>What to dump and how: the parsed command line.</summary>
/// <param name="Endpoint">The export.</param>
/// <param name="Offset">The first byte to dump (<c>--offset</c>).</param>
/// <param name="Length">The most bytes to dump (<c>--length</c>); unlimited by default.</param>
/// <param name="Colour">Whether to write ANSI colours (and the Unicode markers that go with them).</param>
internal sealed record DumpOptions(ServerEndpoint Endpoint, ulong Offset, ulong Length, bool Colour);

/// <summary>nbddump's command line, as libnbd 1.22's: <c>nbddump [-n LEN] [-o OFF] [--color] NBD-URI | [ CMD ARGS ... ]</c>.</summary>
internal static class DumpCommandLine
{
    private const string Program = "nbddump";
    private const string UsageHint = "expecting an NBD URI or [ CMD ARGS ... ]; see 'nbddump --help'";

    // libnbd 1.22's usage text, plus the size suffixes only ours accepts.
    private const string HelpText = """

        Hexdump the content of a disk over NBD:

            nbddump [ OPTIONS ...] NBD-URI | [ CMD ARGS ... ]

        Options include:
            --color, --colour     Force ANSI color on output to non-terminal
            --no-color, --no-colour
                                  Suppress ANSI color even on output to terminal
            -n LEN, --length=LEN  Truncate output after LEN bytes dumped
            -o OFF, --offset=OFF  Skip to offset OFF bytes before dumping

        LEN and OFF are bytes, or have a suffix: s (512-byte sectors),
        k, M, G, T, P or E (powers of 1024).

        Other options:

            nbddump --help
            nbddump --version

        Examples:

            nbddump nbd://localhost
            nbddump -- [ qemu-nbd -r -f qcow2 file.qcow2 ]

        Please read the nbddump(1) manual page for full usage.

        """;

    /// <summary>
    /// Parses <paramref name="args"/>; prints help, the version or the option lists itself and returns null for
    /// them.
    /// </summary>
    /// <exception cref="ToolException">A command line nbddump cannot use.</exception>
    public static DumpOptions? Parse(IReadOnlyList<string> args)
    {
        // Declared in libnbd's order, which --long-options and --short-options print: -V is separate from
        // --version so that it comes last among the short options, as in libnbd's "n:o:V".
        var help = ToolOption.Flag("--help");
        var version = ToolOption.Flag("--version");
        var colour = ToolOption.Flag("--color", "--colors", "--colour", "--colours");
        var noColour = ToolOption.Flag("--no-color", "--no-colors", "--no-colour", "--no-colours");
        // Repeatable, as getopt lets them be: the last one counts.
        var length = ToolOption.WithValue("--length", "--limit", "-n");
        var offset = ToolOption.WithValue("--offset", "--skip", "-o");
        var shortVersion = ToolOption.Flag("-V");
        var commandLine = new ToolCommandLine(Program, help, version, colour, noColour, length, offset, shortVersion);

        ToolArguments? result = commandLine.Parse(args);
        if (result == null)
            return null;
        // getopt acts on the first of them: "--version --help" prints the version.
        ToolOption? first = result.First(help, version, shortVersion);
        if (first == help)
        {
            Console.Write(HelpText.ReplaceLineEndings("\n"));
            return null;
        }
        if (first != null)
        {
            Version? ours = typeof(DumpCommandLine).Assembly.GetName().Version;
            Console.WriteLine(Program + " " + (ours == null ? "0.0.0" : ours.ToString(3)));
            Console.WriteLine(NbdHandle.GetPackageName() + " " + NbdHandle.GetVersion());
            return null;
        }

        // The last of --color and --no-color wins; without either, colour when stdout is a terminal.
        ToolOption? colourOption = result.Last(colour, noColour);
        return new DumpOptions(
            ServerEndpoint.FromCommandLine(commandLine.ServerCommand, result.Positionals, UsageHint),
            ParseSize(result.Value(offset), "--offset", 0),
            ParseSize(result.Value(length), "--length", ulong.MaxValue),
            colourOption == null ? !Console.IsOutputRedirected : colourOption == colour);
    }

    private static ulong ParseSize(string? text, string option, ulong unset)
    {
        if (text == null)
            return unset;
        if (!HumanSize.TryParse(text, out long size, out string error))
        {
            // libnbd's wording, and why when HumanSize says more than that it could not.
            const string Prefix = "could not parse size: ";
            string reason = error.StartsWith(Prefix, StringComparison.Ordinal) ? error[Prefix.Length..] : error;
            if (reason.EndsWith(": " + text, StringComparison.Ordinal))
                reason = reason[..^(text.Length + 2)];
            bool says = !reason.StartsWith("could not parse", StringComparison.Ordinal);
            throw new ToolException($"could not parse {option} option: {text}" + (says ? " (" + reason + ")" : ""));
        }
        return (ulong)size;
    }
}
