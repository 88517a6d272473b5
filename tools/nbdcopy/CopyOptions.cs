using System;
using System.Collections.Generic;
using System.CommandLine;
using System.Globalization;

namespace NbdSharp.Tools.Copy;

/// <summary>nbdcopy's command line, parsed, with libnbd's defaults and limits.</summary>
internal sealed class CopyOptions
{
    public const int MinRequestSize = 4096;
    public const int MaxRequestSize = 32 * 1024 * 1024;

    private const string Usage = "usage: nbdcopy [OPTIONS] SOURCE DESTINATION (see nbdcopy --help)";

    public bool Allocated { get; private init; }
    public uint Connections { get; set; } = 4;
    public bool DestinationIsZero { get; set; }
    public bool Extents { get; set; } = true;
    public bool Flush { get; private init; }
    public uint MaxRequests { get; set; } = 64;
    public bool Progress { get; private init; }
    public int ProgressFd { get; private init; } = -1;
    public long QueueSize { get; set; } = 16 << 20;
    public int RequestSize { get; set; } = 1 << 18;
    public long SparseSize { get; set; } = 4096;
    public bool Synchronous { get; set; }

    /// <summary>--timeout: how long connecting and each request may take (zero: forever).</summary>
    public TimeSpan Timeout { get; set; }
    public uint Threads { get; set; }
    public bool Verbose { get; private init; }

    /// <summary>--blkhash: the hash to compute during the copy, or null.</summary>
    public BlockHash? BlockHash { get; private init; }

    /// <summary>--blkhash-file: where to print the blkhash (stdout when null).</summary>
    public string? BlockHashFile { get; private init; }

    /// <summary>The source as written: a URI, a file, "-", or null when it is a server command.</summary>
    public string? Source { get; private init; }

    /// <summary>The server command of the source's <c>[ CMD ARGS ... ]</c>, or null.</summary>
    public IReadOnlyList<string>? SourceCommand { get; private init; }

    /// <summary>The destination as written: a URI, a file, "-", "null:", or null when it is a server command.</summary>
    public string? Destination { get; private init; }

    /// <summary>The server command of the destination's <c>[ CMD ARGS ... ]</c>, or null.</summary>
    public IReadOnlyList<string>? DestinationCommand { get; private init; }

    /// <summary>Parses the command line; null when it was fully handled (--help, --version, option lists).</summary>
    /// <exception cref="ToolException">A bad command line.</exception>
    public static CopyOptions? Parse(string[] args)
    {
        // Declared in libnbd's order, so that --long-options and --short-options list them as it does.
        var help = new Option<bool>("--help");
        var allocated = new Option<bool>("--allocated");
        var blkhash = new Option<string>("--blkhash");
        var blkhashFile = new Option<string>("--blkhash-file");
        var connections = new Option<string>("--connections", "-C");
        var destinationIsZero = new Option<bool>("--destination-is-zero");
        var flush = new Option<bool>("--flush");
        var noExtents = new Option<bool>("--no-extents");
        var progress = new Option<bool>("--progress", "-p");
        var progressFd = new Option<string>("--progress-fd") { Hidden = true };
        var queueSize = new Option<string>("--queue-size");
        var requestSize = new Option<string>("--request-size");
        var requests = new Option<string>("--requests", "-R");
        var sparse = new Option<string>("--sparse", "-S");
        var synchronous = new Option<bool>("--synchronous");
        var targetIsZero = new Option<bool>("--target-is-zero");
        var threads = new Option<string>("--threads", "-T");
        var timeout = new Option<string>("--timeout");
        var verbose = new Option<bool>("--verbose", "-v");
        var version = new Option<bool>("--version", "-V");
        var endpoints = new Argument<string[]>("SOURCE DESTINATION") { Arity = ArgumentArity.ZeroOrMore };
        var root = new RootCommand("Copy to and from an NBD server")
        {
            help, allocated, blkhash, blkhashFile, connections, destinationIsZero, flush, noExtents, progress, progressFd, queueSize, requestSize,
            requests, sparse, synchronous, targetIsZero, threads, timeout, verbose, version, endpoints,
        };
        var commandLine = new ToolCommandLine("nbdcopy", root) { BracketGroupsAnywhere = true };
        commandLine.OptionalValue("--blkhash", "sha256");

        // getopt's optional argument: --progress=FD carries a file descriptor, --progress and -p do not.
        var words = new List<string>(args.Length);
        bool endOfOptions = false;
        foreach (string arg in args)
        {
            if (arg == "--")
                endOfOptions = true;
            if (!endOfOptions && arg.StartsWith("--progress=", StringComparison.Ordinal))
                words.Add("--progress-fd=" + arg["--progress=".Length..]);
            else
                words.Add(arg);
        }

        ParseResult? result = commandLine.Parse(words);
        if (result == null)
            return null;
        if (commandLine.PrintedHelpOrVersion(result, help, version, HelpText))
            return null;

        string[] positionals = result.GetValue(endpoints) ?? [];
        if (positionals.Length != 2)
            throw new ToolException(Usage);
        int group = 0;
        IReadOnlyList<string>? sourceCommand = positionals[0] == "[" ? commandLine.ServerCommands[group++] : null;
        IReadOnlyList<string>? destinationCommand = positionals[1] == "[" ? commandLine.ServerCommands[group++] : null;

        string? fdText = result.GetValue(progressFd);
        var options = new CopyOptions
        {
            Allocated = result.GetValue(allocated),
            DestinationIsZero = result.GetValue(destinationIsZero) || result.GetValue(targetIsZero),
            Extents = !result.GetValue(noExtents),
            Flush = result.GetValue(flush),
            Progress = result.GetValue(progress) || fdText != null,
            ProgressFd = fdText == null ? -1 : ParseProgressFd(fdText),
            Synchronous = result.GetValue(synchronous),
            Verbose = result.GetValue(verbose),
            BlockHash = result.GetValue(blkhash) is string digest ? BlockHash.Parse(digest) : null,
            BlockHashFile = result.GetValue(blkhashFile),
            Source = sourceCommand == null ? positionals[0] : null,
            SourceCommand = sourceCommand,
            Destination = destinationCommand == null ? positionals[1] : null,
            DestinationCommand = destinationCommand,
        };
        if (result.GetValue(connections) is string c)
        {
            options.Connections = ParseUnsigned("--connections", c);
            if (options.Connections == 0)
                throw new ToolException("--connections: could not parse: " + c);
        }
        if (result.GetValue(requests) is string r)
        {
            uint value = ParseUnsigned("--requests", r);
            if (value == 0)
                throw new ToolException("--requests: could not parse: " + r);
            options.MaxRequests = value;
        }
        if (result.GetValue(timeout) is string seconds)
            options.Timeout = ToolCommandLine.ParseTimeout(seconds);
        if (result.GetValue(threads) is string t)
            options.Threads = ParseUnsigned("--threads", t);
        if (result.GetValue(queueSize) is string q)
        {
            long value = ParseSize("--queue-size", q);
            if (value > uint.MaxValue)
                throw new ToolException("--queue-size is too large: " + q);
            options.QueueSize = value;
        }
        if (result.GetValue(requestSize) is string rs)
        {
            long value = ParseSize("--request-size", rs);
            if (value < MinRequestSize || value > MaxRequestSize || !IsPowerOfTwo(value))
            {
                throw new ToolException(string.Create(CultureInfo.InvariantCulture,
                    $"--request-size: must be a power of 2 within {MinRequestSize}-{MaxRequestSize}: {rs}"));
            }
            options.RequestSize = (int)value;
        }
        if (result.GetValue(sparse) is string s)
        {
            long value = ParseSize("--sparse", s);
            if (value != 0 && (value < 512 || value > uint.MaxValue || !IsPowerOfTwo(value)))
                throw new ToolException("--sparse: must be a power of 2, between 512-4294967295: " + s);
            options.SparseSize = value;
        }
        return options;
    }

    public static bool IsPowerOfTwo(long value) => value > 0 && (value & (value - 1)) == 0;

    /// <summary>A number as C's <c>sscanf("%u")</c> reads one: leading blanks, digits, trailing text ignored.</summary>
    private static uint ParseUnsigned(string option, string text)
    {
        ReadOnlySpan<char> span = text.AsSpan().TrimStart(" \t\n\r\v\f");
        int end = 0;
        if (end < span.Length && span[end] == '+')
            end++;
        int digits = end;
        while (end < span.Length && char.IsAsciiDigit(span[end]))
            end++;
        if (end == digits || !uint.TryParse(span[digits..end], NumberStyles.None, CultureInfo.InvariantCulture, out uint value))
            throw new ToolException(option + ": could not parse: " + text);
        return value;
    }

    private static int ParseProgressFd(string text)
    {
        ReadOnlySpan<char> span = text.AsSpan().TrimStart(" \t\n\r\v\f");
        int end = 0;
        while (end < span.Length && char.IsAsciiDigit(span[end]))
            end++;
        if (end == 0 || !int.TryParse(span[..end], NumberStyles.None, CultureInfo.InvariantCulture, out int fd))
            throw new ToolException("--progress: could not parse: " + text);
        return fd;
    }

    private static long ParseSize(string option, string text)
    {
        if (!HumanSize.TryParse(text, out long value, out string error))
            throw new ToolException(option + ": " + error);
        return value;
    }

    private const string HelpText = """

        Copy to and from an NBD server:

            nbdcopy [--allocated] [--blkhash[=DIGEST[/SIZE]]] [--blkhash-file=FILE]
                    [-C N|--connections=N]
                    [--destination-is-zero|--target-is-zero] [--flush]
                    [--no-extents] [-p|--progress|--progress=FD]
                    [--queue-size=N] [--request-size=N] [-R N|--requests=N]
                    [-S N|--sparse=N] [--synchronous] [-T N|--threads=N]
                    [--timeout=SECONDS] [-v|--verbose]
                    SOURCE DESTINATION

            SOURCE, DESTINATION := - | FILE | DEVICE | NBD-URI | [ CMD ARGS ... ]
            DESTINATION += null:

        Other options:

            nbdcopy --help
            nbdcopy -V|--version

        Examples:

            nbdcopy nbd://example.com local.img
            nbdcopy local.img nbd://example.com
            nbdcopy nbd://example.com - | file -
            cat disk1 disk2 | nbdcopy -- - [ qemu-nbd -f qcow2 output.qcow2 ]

        DIGEST is md5, sha1, sha256 (the default) or sha512; SIZE the blkhash block size (default 64k).
        --timeout=SECONDS (beyond libnbd's nbdcopy): give up, with exit status 1, when a server does not complete
        the handshake or answer a request within SECONDS.
        Sizes (--queue-size, --request-size, --sparse) may carry a suffix: K, M, G (powers of 1024), s (512).
        See nbdcopy(1) for the details.


        """;
}
