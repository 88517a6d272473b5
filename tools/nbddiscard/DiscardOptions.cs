using System;
using System.Collections.Generic;
using System.CommandLine;

namespace NbdSharp.Tools.Discard;

/// <summary>What a command line of nbddiscard or nbdzero asks for.</summary>
/// <param name="Endpoint">The export.</param>
/// <param name="Zero">Zero instead of discarding (nbdzero's default; implied by --fast-zero).</param>
/// <param name="FastZero">Zero only if the server can do it fast.</param>
/// <param name="Check">Only check that the range already reads as wanted.</param>
/// <param name="Quiet">No warnings.</param>
/// <param name="Verbose">Debug messages and the facts the tool decides on.</param>
/// <param name="Yes">No confirmation prompt.</param>
/// <param name="Offset">Where to start, or null for the start of the disk.</param>
/// <param name="Length">How much, or null for up to the end of the disk.</param>
internal sealed record DiscardOptions(ServerEndpoint Endpoint, bool Zero, bool FastZero, bool Check, bool Quiet, bool Verbose,
    bool Yes, long? Offset, long? Length)
{
    // libnbd's tool is a Python argparse script: a command line it cannot parse exits with 2, not 1.
    private const int UsageExitCode = 2;

    /// <summary>
    /// Reads <paramref name="args"/> in the order libnbd's tool does: usage errors (exit 2), --help and --version, the
    /// export, --fast-zero's implication, then the sizes.
    /// </summary>
    /// <param name="program">nbddiscard or nbdzero: the name decides the default mode.</param>
    /// <param name="args">The command line.</param>
    /// <returns>The options, or null when the command line was fully handled (help, version, option lists).</returns>
    /// <exception cref="ToolException">The command line is wrong.</exception>
    public static DiscardOptions? Parse(string program, IReadOnlyList<string> args)
    {
        // Declared in the order of their long names, which is the order --long-options lists them.
        var check = new Option<bool>("--check", "-c");
        var fastZero = new Option<bool>("--fast-zero");
        var help = new Option<bool>("--help", "-h");
        var length = new Option<string>("--length", "-l");
        var offset = new Option<string>("--offset", "-o");
        var quiet = new Option<bool>("--quiet", "-q");
        var verbose = new Option<bool>("--verbose", "-v");
        var version = new Option<bool>("--version", "-V");
        var yes = new Option<bool>("--yes", "-y");
        var zero = new Option<bool>("--zero", "-z");
        var uris = new Argument<string[]>("NBD-URI") { Arity = ArgumentArity.ZeroOrMore };
        var root = new RootCommand("Discard or zero a range of a Network Block Device.")
        {
            check, fastZero, help, length, offset, quiet, verbose, version, yes, zero, uris,
        };
        var commandLine = new ToolCommandLine(program, root);
        ParseResult? result;
        try
        {
            result = commandLine.Parse(args);
        }
        catch (ToolException e)
        {
            throw new ToolException(e.Message, UsageExitCode);
        }
        if (result == null)
            return null;
        if (result.GetValue(help))
        {
            Console.Out.Write(Help(program));
            return null;
        }
        if (result.GetValue(version))
        {
            string extra = NbdHandle.GetVersionExtra();
            Console.WriteLine(program + " " + NbdHandle.GetVersion() + (extra.Length == 0 ? "" : " (" + extra + ")"));
            return null;
        }

        ServerEndpoint endpoint = ReadEndpoint(commandLine.ServerCommand, result.GetValue(uris) ?? []);
        bool verboseMode = result.GetValue(verbose);
        bool zeroMode = result.GetValue(zero) || program == "nbdzero";
        if (result.GetValue(fastZero) && !zeroMode)
        {
            if (verboseMode)
                Console.WriteLine("--fast implies --zero");
            zeroMode = true;
        }
        return new DiscardOptions(endpoint, zeroMode, result.GetValue(fastZero), result.GetValue(check), result.GetValue(quiet),
            verboseMode, result.GetValue(yes), Size(result.GetValue(offset)), Size(result.GetValue(length)));
    }

    private static ServerEndpoint ReadEndpoint(IReadOnlyList<string>? serverCommand, string[] uris)
    {
        int expected = serverCommand == null ? 1 : 0;
        if (uris.Length > expected)
            throw new ToolException("unrecognized arguments: " + string.Join(' ', uris[expected..]), UsageExitCode);
        if (uris.Length < expected)
            throw new ToolException("NBD-URI is required.  See --help or nbddiscard(1) man page.");
        return ServerEndpoint.FromCommandLine(serverCommand, uris, "NBD-URI is required.");
    }

    private static long? Size(string? text)
    {
        if (text == null)
            return null;
        if (!HumanSize.TryParse(text, out long size, out _))
            throw new ToolException("cannot parse offset/length parameter: " + text);
        return size;
    }

    private static string Help(string program)
    {
        string pad = new(' ', program.Length);
        string zeroLine = program == "nbdzero"
            ? "  -z, --zero           zero the range (always on for nbdzero)\n"
            : "  -z, --zero           zero the range instead of discarding it\n";
        return
            $"Usage: {program} [-c|--check] [-z|--zero] [--fast-zero] [-q|--quiet] [-v|--verbose]\n" +
            $"       {pad} [-y|--yes] [-o|--offset OFFSET] [-l|--length LENGTH] NBD-URI\n" +
            $"       {program} [OPTIONS] [ CMD ARGS ... ]\n" +
            $"       {program} -V|--version\n" +
            $"       {program} -h|--help\n" +
            "\n" +
            "Discards a range of a Network Block Device (the whole disk unless -o or -l say otherwise), so\n" +
            "that the server may free its storage; with -z the range is zeroed instead. The data in the\n" +
            "range is PERMANENTLY ERASED, after a y/N question unless -y is given. NBD-URI is an NBD URI\n" +
            "such as nbd://localhost; [ CMD ARGS ... ] starts a server with systemd socket activation.\n" +
            "\n" +
            "Options:\n" +
            "  -c, --check          change nothing: exit 0 if the range already reads as a hole (with -z:\n" +
            "                       as zeroes), else 1\n" +
            zeroLine +
            "      --fast-zero      zero only if the server can do it faster than writing; implies -z\n" +
            "  -o, --offset OFFSET  start at OFFSET instead of the start of the disk\n" +
            "  -l, --length LENGTH  stop after LENGTH bytes instead of at the end of the disk\n" +
            "  -y, --yes            do not ask before erasing\n" +
            "  -q, --quiet          do not print warnings\n" +
            "  -v, --verbose        print libnbd debug messages (like LIBNBD_DEBUG=1) and what was found\n" +
            "  -V, --version        print the version and exit\n" +
            "  -h, --help           print this help and exit\n" +
            "\n" +
            "OFFSET and LENGTH are bytes, or take a suffix: K, M, G, T, P, E (powers of 1024), s (512).\n";
    }
}
