using System;
using System.Collections.Generic;

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
        var check = ToolOption.Flag("--check", "-c");
        var fastZero = ToolOption.Flag("--fast-zero");
        var help = ToolOption.Flag("--help", "-h");
        var length = ToolOption.WithValue("--length", "-l");
        var offset = ToolOption.WithValue("--offset", "-o");
        var quiet = ToolOption.Flag("--quiet", "-q");
        var verbose = ToolOption.Flag("--verbose", "-v");
        var version = ToolOption.Flag("--version", "-V");
        var yes = ToolOption.Flag("--yes", "-y");
        var zero = ToolOption.Flag("--zero", "-z");
        var commandLine = new ToolCommandLine(program, check, fastZero, help, length, offset, quiet, verbose, version, yes, zero);
        ToolArguments? result;
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
        if (result.Has(help))
        {
            Console.Out.Write(Help(program));
            return null;
        }
        if (result.Has(version))
        {
            string extra = NbdHandle.GetVersionExtra();
            Console.WriteLine(program + " " + NbdHandle.GetVersion() + (extra.Length == 0 ? "" : " (" + extra + ")"));
            return null;
        }

        ServerEndpoint endpoint = ReadEndpoint(commandLine.ServerCommand, result.Positionals);
        bool verboseMode = result.Has(verbose);
        bool zeroMode = result.Has(zero) || program == "nbdzero";
        if (result.Has(fastZero) && !zeroMode)
        {
            if (verboseMode)
                Console.WriteLine("--fast implies --zero");
            zeroMode = true;
        }
        return new DiscardOptions(endpoint, zeroMode, result.Has(fastZero), result.Has(check), result.Has(quiet),
            verboseMode, result.Has(yes), Size(result.Value(offset)), Size(result.Value(length)));
    }

    private static ServerEndpoint ReadEndpoint(IReadOnlyList<string>? serverCommand, IReadOnlyList<string> uris)
    {
        int expected = serverCommand == null ? 1 : 0;
        if (uris.Count > expected)
        {
            var extra = new string[uris.Count - expected];
            for (int i = 0; i < extra.Length; i++)
                extra[i] = uris[expected + i];
            throw new ToolException("unrecognized arguments: " + string.Join(' ', extra), UsageExitCode);
        }
        if (uris.Count < expected)
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
