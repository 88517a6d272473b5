using System;
using System.Collections.Generic;
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
    public TimeSpan Timeout
    {
        get => TimeSpan.FromTicks(_timeoutTicks);
        set => _timeoutTicks = value.Ticks;
    }

    // Ticks, not a TimeSpan field: a class holding a struct of another assembly has no layout ReadyToRun can fix, and
    // its precompiled code then looks up every field's offset at run time (docs/benchmarks.md).
    private long _timeoutTicks;
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
        // Declared in libnbd's order, so that --long-options and --short-options list them as it does. --progress
        // takes an optional =FD (getopt's optional argument); -p never takes one.
        var help = ToolOption.Flag("--help");
        var allocated = ToolOption.Flag("--allocated");
        var blkhash = new ToolOption("--blkhash") { OptionalValue = true };
        var blkhashFile = ToolOption.WithValue("--blkhash-file");
        var connections = ToolOption.WithValue("--connections", "-C");
        var destinationIsZero = ToolOption.Flag("--destination-is-zero");
        var flush = ToolOption.Flag("--flush");
        var noExtents = ToolOption.Flag("--no-extents");
        var progress = new ToolOption("--progress") { OptionalValue = true };
        var progressShort = ToolOption.Flag("-p");
        var queueSize = ToolOption.WithValue("--queue-size");
        var requestSize = ToolOption.WithValue("--request-size");
        var requests = ToolOption.WithValue("--requests", "-R");
        var sparse = ToolOption.WithValue("--sparse", "-S");
        var synchronous = ToolOption.Flag("--synchronous");
        var targetIsZero = ToolOption.Flag("--target-is-zero");
        var threads = ToolOption.WithValue("--threads", "-T");
        var timeout = ToolOption.WithValue("--timeout");
        var verbose = ToolOption.Flag("--verbose", "-v");
        var version = ToolOption.Flag("--version", "-V");
        var commandLine = new ToolCommandLine("nbdcopy",
            help, allocated, blkhash, blkhashFile, connections, destinationIsZero, flush, noExtents, progress, progressShort, queueSize,
            requestSize, requests, sparse, synchronous, targetIsZero, threads, timeout, verbose, version)
        {
            BracketGroupsAnywhere = true,
        };

        ToolArguments? result = commandLine.Parse(args);
        if (result == null)
            return null;
        if (commandLine.PrintedHelpOrVersion(result, help, version, HelpText))
            return null;

        IReadOnlyList<string> positionals = result.Positionals;
        if (positionals.Count != 2)
            throw new ToolException(Usage);
        int group = 0;
        IReadOnlyList<string>? sourceCommand = positionals[0] == "[" ? commandLine.ServerCommands[group++] : null;
        IReadOnlyList<string>? destinationCommand = positionals[1] == "[" ? commandLine.ServerCommands[group++] : null;

        // libnbd keeps the FD of any --progress=FD, whatever follows.
        string? fdText = null;
        foreach (ToolOptionUse use in result.Uses)
        {
            if (use.Option == progress && use.Value != null)
                fdText = use.Value;
        }
        var options = new CopyOptions
        {
            Allocated = result.Has(allocated),
            DestinationIsZero = result.Has(destinationIsZero) || result.Has(targetIsZero),
            Extents = !result.Has(noExtents),
            Flush = result.Has(flush),
            Progress = result.Has(progress) || result.Has(progressShort),
            ProgressFd = fdText == null ? -1 : ParseProgressFd(fdText),
            Synchronous = result.Has(synchronous),
            Verbose = result.Has(verbose),
            BlockHash = result.Has(blkhash) ? BlockHash.Parse(result.Value(blkhash) ?? "sha256") : null,
            BlockHashFile = result.Value(blkhashFile),
            Source = sourceCommand == null ? positionals[0] : null,
            SourceCommand = sourceCommand,
            Destination = destinationCommand == null ? positionals[1] : null,
            DestinationCommand = destinationCommand,
        };
        if (result.Value(connections) is string c)
        {
            options.Connections = ParseUnsigned("--connections", c);
            if (options.Connections == 0)
                throw new ToolException("--connections: could not parse: " + c);
        }
        if (result.Value(requests) is string r)
        {
            uint value = ParseUnsigned("--requests", r);
            if (value == 0)
                throw new ToolException("--requests: could not parse: " + r);
            options.MaxRequests = value;
        }
        if (result.Value(timeout) is string seconds)
            options.Timeout = ToolCommandLine.ParseTimeout(seconds);
        if (result.Value(threads) is string t)
            options.Threads = ParseUnsigned("--threads", t);
        if (result.Value(queueSize) is string q)
        {
            long value = ParseSize("--queue-size", q);
            if (value > uint.MaxValue)
                throw new ToolException("--queue-size is too large: " + q);
            options.QueueSize = value;
        }
        if (result.Value(requestSize) is string rs)
        {
            long value = ParseSize("--request-size", rs);
            if (value < MinRequestSize || value > MaxRequestSize || !IsPowerOfTwo(value))
            {
                throw new ToolException(string.Create(CultureInfo.InvariantCulture,
                    $"--request-size: must be a power of 2 within {MinRequestSize}-{MaxRequestSize}: {rs}"));
            }
            options.RequestSize = (int)value;
        }
        if (result.Value(sparse) is string s)
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
