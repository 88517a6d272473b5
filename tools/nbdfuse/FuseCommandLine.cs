using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;

namespace NbdSharp.Tools.Fuse;

/// <summary>How nbdfuse reaches the server (the word after the mount point).</summary>
internal enum ConnectMode
{
    Uri,
    Command,
    Fd,
    SquareBracket,
    SocketActivation,
    Tcp,
    Unix,
    Vsock,
}

/// <summary>The parsed command line.</summary>
internal sealed record FuseOptions(
    string MountPoint, string FileName, bool FileMode, ConnectMode Mode, IReadOnlyList<string> Target,
    int Connections, IReadOnlyList<string> FuseOptionList, string? PidFile, bool ReadOnly, bool SingleThread, bool Verbose)
{
    /// <summary>Whether more connections can reach the same server (not for a server nbdfuse starts or a given fd).</summary>
    public bool MultiConnCompatible => Mode is ConnectMode.Uri or ConnectMode.Tcp or ConnectMode.Unix or ConnectMode.Vsock;
}

/// <summary>
/// nbdfuse's command line, as libnbd's nbdfuse(1): options (getopt with "+": they stop at the mount point), then
/// <c>MOUNTPOINT[/FILENAME]</c>, then a URI or a mode and its arguments.
/// </summary>
internal static class FuseCommandLine
{
    public const string Program = "nbdfuse";

    /// <summary>What --long-options and --short-options list, in libnbd's order.</summary>
    private static readonly string[] LongOptions =
        ["fuse-help", "help", "connections", "pidfile", "pid-file", "readonly", "read-only", "verbose", "version"];

    private const string ShortOptions = "CdoPrsvV";

    public const string Usage = """

        Mount NBD server as a virtual file:

            nbdfuse [-C N|--connections N] [-d] [-o FUSE-OPTION] [-P PIDFILE]
                    [-r] [-s] [-v]
                    MOUNTPOINT[/FILENAME] URI

        Other modes:

            nbdfuse MOUNTPOINT[/FILENAME] [ CMD [ARGS ...] ]
            nbdfuse MOUNTPOINT[/FILENAME] --command CMD [ARGS ...]
            nbdfuse MOUNTPOINT[/FILENAME] --fd N
            nbdfuse MOUNTPOINT[/FILENAME] --tcp HOST PORT
            nbdfuse MOUNTPOINT[/FILENAME] --unix SOCKET
            nbdfuse MOUNTPOINT[/FILENAME] --vsock CID PORT

        To unmount:

            fusermount3 -u MOUNTPOINT

        Other options:

            nbdfuse --help
            nbdfuse --fuse-help
            nbdfuse -V|--version

        Please read the nbdfuse(1) manual page for full usage.


        """;

    /// <summary>
    /// Parses <paramref name="args"/>; prints help, the version or the option lists and returns null for them (and
    /// for --fuse-help, which <paramref name="fuseHelp"/> prints).
    /// </summary>
    /// <exception cref="ToolException">A command line nbdfuse cannot use.</exception>
    public static FuseOptions? Parse(IReadOnlyList<string> args, Action fuseHelp)
    {
        int connections = 4;
        var fuseOptions = new List<string>();
        string? pidFile = null;
        bool readOnly = false, singleThread = false, verbose = false;
        int i = 0;
        for (; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                i++;
                break;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal))
            {
                int equals = arg.IndexOf('=', StringComparison.Ordinal);
                string name = equals < 0 ? arg[2..] : arg[2..equals];
                string? value = equals < 0 ? null : arg[(equals + 1)..];
                string Value()
                {
                    if (value != null)
                        return value;
                    if (i + 1 >= args.Count)
                        throw new ToolException($"option '--{name}' requires an argument");
                    return args[++i];
                }
                switch (name)
                {
                    case "help":
                        Console.Out.Write(Usage.ReplaceLineEndings("\n"));
                        return null;
                    case "fuse-help":
                        fuseHelp();
                        return null;
                    case "long-options":
                        foreach (string option in LongOptions)
                            Console.Out.Write("--" + option + "\n");
                        return null;
                    case "short-options":
                        foreach (char option in ShortOptions)
                            Console.Out.Write("-" + option + "\n");
                        return null;
                    case "version":
                        ToolCommandLine.PrintVersion(Program);
                        return null;
                    case "connections":
                        connections = ParseConnections(Value());
                        break;
                    case "pidfile" or "pid-file":
                        pidFile = Value();
                        break;
                    case "readonly" or "read-only":
                        readOnly = true;
                        break;
                    case "verbose":
                        verbose = true;
                        break;
                    default:
                        throw new ToolException($"unrecognized option '{arg}'");
                }
                continue;
            }
            if (arg.Length < 2 || arg[0] != '-')
                break;
            for (int j = 1; j < arg.Length; j++)
            {
                char option = arg[j];
                string Argument()
                {
                    string rest = arg[(j + 1)..];
                    j = arg.Length;
                    if (rest.Length > 0)
                        return rest;
                    if (i + 1 >= args.Count)
                        throw new ToolException($"option requires an argument -- '{option}'");
                    return args[++i];
                }
                switch (option)
                {
                    case 'C':
                        connections = ParseConnections(Argument());
                        break;
                    case 'o':
                        fuseOptions.Add(Argument());
                        break;
                    case 'P':
                        pidFile = Argument();
                        break;
                    case 'r':
                        readOnly = true;
                        break;
                    case 's':
                        singleThread = true;
                        break;
                    case 'v' or 'd':
                        verbose = true;
                        break;
                    case 'V':
                        ToolCommandLine.PrintVersion(Program);
                        return null;
                    default:
                        throw new ToolException($"invalid option -- '{option}'");
                }
            }
        }

        if (args.Count - i < 2)
            throw new ToolException("a mount point and a URI (or a mode: [ CMD ], --command, --fd, --tcp, --unix, --vsock) are needed; see nbdfuse --help");
        (string mountPoint, string fileName, bool fileMode) = ParseMountPoint(args[i++]);

        ConnectMode mode = ConnectMode.Uri;
        switch (args[i])
        {
            case "--command" or "--cmd": mode = ConnectMode.Command; i++; break;
            case "[": mode = ConnectMode.SquareBracket; i++; break;
            case "--socket-activation" or "--systemd-socket-activation": mode = ConnectMode.SocketActivation; i++; break;
            case "--fd": mode = ConnectMode.Fd; i++; break;
            case "--tcp": mode = ConnectMode.Tcp; i++; break;
            case "--unix": mode = ConnectMode.Unix; i++; break;
            case "--vsock": mode = ConnectMode.Vsock; i++; break;
            case "--uri": i++; break;
            default:
                if (args[i].StartsWith('-'))
                    throw new ToolException("unknown mode: " + args[i]);
                break;
        }
        var target = new List<string>();
        for (; i < args.Count; i++)
            target.Add(args[i]);
        bool counted = mode switch
        {
            ConnectMode.Uri or ConnectMode.Fd or ConnectMode.Unix => target.Count == 1,
            ConnectMode.Tcp or ConnectMode.Vsock => target.Count == 2,
            ConnectMode.Command or ConnectMode.SocketActivation => target.Count >= 1,
            _ => target.Count >= 2 && target[^1] == "]",
        };
        if (!counted)
            throw new ToolException(mode switch
            {
                ConnectMode.Uri => "expected one URI after the mount point",
                ConnectMode.Fd => "--fd takes one file descriptor",
                ConnectMode.Unix => "--unix takes one socket path",
                ConnectMode.Tcp => "--tcp takes a host and a port",
                ConnectMode.Vsock => "--vsock takes a CID and a port",
                ConnectMode.SquareBracket => "[ CMD ARGS ... ] needs a command and a closing ]",
                _ => "a command is needed after " + (mode == ConnectMode.Command ? "--command" : "--socket-activation"),
            });
        if (mode == ConnectMode.SquareBracket)
            target.RemoveAt(target.Count - 1);
        return new FuseOptions(mountPoint, fileName, fileMode, mode, target, connections, fuseOptions, pidFile, readOnly, singleThread, verbose);
    }

    /// <summary>MOUNTPOINT (a file: file mode), MOUNTPOINT (a directory: the file is "nbd"), or MOUNTPOINT/FILENAME.</summary>
    private static (string MountPoint, string FileName, bool FileMode) ParseMountPoint(string text)
    {
        if (File.Exists(text))
        {
            string name = Path.GetFileName(text);
            if (name.Length == 0)
                throw MountPointError(text);
            return (text, name, true);
        }
        if (Directory.Exists(text))
            return (text, "nbd", false);
        int slash = text.LastIndexOf('/');
        if (slash < 0)
            throw MountPointError(text);
        string folder = slash == 0 ? "/" : text[..slash];
        string file = text[(slash + 1)..];
        if (!Directory.Exists(folder) || file.Length == 0)
            throw MountPointError(text);
        return (folder, file, false);
    }

    private static ToolException MountPointError(string text) =>
        new(text + ": mountpoint must be \"directory\" or \"directory/filename\"");

    private static int ParseConnections(string text)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1 || n > 1024)
            throw new ToolException("--connections option-argument must be an unsigned integer >= 1");
        return n;
    }

    /// <summary>The -o options as one FUSE option string, each escaped as fuse_opt_add_opt_escaped does.</summary>
    public static string JoinFuseOptions(IReadOnlyList<string> options)
    {
        var text = new System.Text.StringBuilder();
        foreach (string option in options)
        {
            if (text.Length > 0)
                text.Append(',');
            foreach (char c in option)
            {
                if (c is ',' or '\\')
                    text.Append('\\');
                text.Append(c);
            }
        }
        return text.ToString();
    }
}
