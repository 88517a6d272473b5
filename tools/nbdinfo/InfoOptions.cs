using System;

namespace NbdSharp.Tools.Info;

/// <summary>nbdinfo's command line, parsed.</summary>
internal sealed class InfoOptions
{
    public const string Usage = "usage: nbdinfo [--json] [--size|--uri|--list|--map[=CONTEXT]|--can FEATURE|...] NBD-URI | [ CMD ARGS ... ] (see nbdinfo --help)";

    public bool Json { get; private init; }
    public bool Colour { get; private init; }
    public bool ListAll { get; private init; }
    public bool SizeOnly { get; private init; }
    public bool UriOnly { get; private init; }
    public bool Totals { get; private init; }
    public bool ProbeContent { get; private init; }

    /// <summary>The feature of --can/--is/--has and their negations, or null.</summary>
    public string? Can { get; private init; }

    /// <summary>Whether the feature test is negated (--cannot, --isnt, --hasnt).</summary>
    public bool Cannot { get; private init; }

    /// <summary>The metadata context of --map, or null.</summary>
    public string? Map { get; private init; }

    public ServerEndpoint Endpoint { get; private init; } = null!;

    /// <summary>--timeout: how long connecting and each request may take (zero: forever).</summary>
    public TimeSpan Timeout { get; private init; }

    /// <summary>Parses the command line; null when it was fully handled (--help, --version, option lists).</summary>
    /// <exception cref="ToolException">A bad command line.</exception>
    public static InfoOptions? Parse(string[] args)
    {
        var help = ToolOption.Flag("--help");
        var version = ToolOption.Flag("--version", "-V");
        var can = ToolOption.WithValue("--can", "--has", "--have", "--is");
        var cannot = ToolOption.WithValue("--cannot", "--can-not", "--cant", "--hasnot", "--has-not", "--hasnt",
            "--havent", "--havenot", "--have-not", "--isnot", "--is-not", "--isnt");
        var colour = ToolOption.Flag("--color", "--colors", "--colour", "--colours");
        var noColour = ToolOption.Flag("--no-color", "--no-colors", "--no-colour", "--no-colours");
        var content = ToolOption.Flag("--content");
        var noContent = ToolOption.Flag("--no-content");
        var json = ToolOption.Flag("--json");
        var list = ToolOption.Flag("--list", "-L");
        var map = new ToolOption("--map") { OptionalValue = true };
        var size = ToolOption.Flag("--size");
        var totals = ToolOption.Flag("--totals", "--total");
        var uri = ToolOption.Flag("--uri");
        var timeout = ToolOption.WithValue("--timeout");
        var commandLine = new ToolCommandLine("nbdinfo",
            help, can, cannot, colour, noColour, content, noContent, json, list, map, size, timeout, totals, uri, version);
        ToolArguments? result = commandLine.Parse(args);
        if (result == null)
            return null;
        if (commandLine.PrintedHelpOrVersion(result, help, version, HelpText))
            return null;

        // The last of --can/--cannot wins, as getopt would leave it.
        ToolOption? canOption = result.Last(can, cannot);
        string? feature = canOption == null ? null : result.Value(canOption);
        bool negated = canOption == cannot;
        string? mapContext = result.Has(map) ? result.Value(map) ?? MetaContext.BaseAllocation : null;
        bool listAll = result.Has(list), sizeOnly = result.Has(size), uriOnly = result.Has(uri);
        bool totalsWanted = result.Has(totals);
        int modes = (listAll ? 1 : 0) + (feature != null ? 1 : 0) + (mapContext != null ? 1 : 0) + (sizeOnly ? 1 : 0) + (uriOnly ? 1 : 0);
        if (modes > 1)
            throw new ToolException("you cannot use --can, --cannot, --list, --map, --size and --uri together.");
        bool contentFlag = result.Has(content), noContentFlag = result.Has(noContent);
        if (contentFlag && noContentFlag)
            throw new ToolException("you cannot use --content and --no-content together.");
        if (totalsWanted && mapContext == null)
            throw new ToolException("you must use --totals only with --map option.");

        bool probe = !listAll;
        if (contentFlag)
            probe = true;
        if (noContentFlag)
            probe = false;
        if (feature != null || mapContext != null)
            probe = false;

        ToolOption? colourOption = result.Last(colour, noColour);
        bool useColour = colourOption == null ? !Console.IsOutputRedirected : colourOption == colour;

        return new InfoOptions
        {
            Json = result.Has(json),
            Colour = useColour,
            ListAll = listAll,
            SizeOnly = sizeOnly,
            UriOnly = uriOnly,
            Totals = totalsWanted,
            ProbeContent = probe,
            Can = feature,
            Cannot = negated,
            Map = mapContext,
            Endpoint = ServerEndpoint.FromCommandLine(commandLine.ServerCommand, result.Positionals, Usage),
            Timeout = result.Value(timeout) is string seconds ? ToolCommandLine.ParseTimeout(seconds) : TimeSpan.Zero,
        };
    }

    private const string HelpText = """

        Show what an NBD server offers:

            nbdinfo [--json] NBD-URI | [ CMD ARGS ... ]
            nbdinfo --size [--json] NBD-URI | [ CMD ARGS ... ]
            nbdinfo --uri [--json] NBD-URI
            nbdinfo --is|--isnt read-only|rotational|tls NBD-URI | [ CMD ARGS ... ]
            nbdinfo --can|--cannot cache|connect|flush|trim|zero|... NBD-URI | [ CMD ARGS ... ]
            nbdinfo --has|--hasnt structured-reply|extended-headers NBD-URI | [ CMD ARGS ... ]
            nbdinfo --map[=CONTEXT] [--totals] [--json] NBD-URI | [ CMD ARGS ... ]
            nbdinfo -L|--list [--json] NBD-URI | [ CMD ARGS ... ]

        More options: --content, --no-content, --color, --no-color, --help, -V|--version.
        --timeout=SECONDS (beyond libnbd's nbdinfo): give up on a server that does not complete the handshake
        or answer a request within SECONDS; the exit status is then 1.
        Feature tests print nothing and exit 0 when true, 2 when false.

        Examples:

            nbdinfo nbd://localhost
            nbdinfo "nbd+unix:///?socket=/tmp/nbd.sock"
            nbdinfo --map=qemu:dirty-bitmap:bitmap0 nbd://localhost/disk
            nbdinfo --list --json nbds://server.example.com
            nbdinfo --size -- [ qemu-nbd -r -f qcow2 disk.qcow2 ]

        NbdSharp's nbdinfo takes the command line of libnbd's; see nbdinfo(1).

        """;

    private InfoOptions()
    {
    }
}
