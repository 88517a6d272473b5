using System;
using System.Collections.Generic;
using System.Globalization;
using NbdSharp.Server;

namespace NbdSharp.Tools.Server;

/// <summary>What the command line asked for, nbdkit's options with nbdkit's meanings.</summary>
internal sealed class ServerSettings
{
    public string? UnixSocket { get; set; }
    public int? Port { get; set; }
    public string? Address { get; set; }
    public bool Single { get; set; }
    public bool ReadOnly { get; set; }
    public string ExportName { get; set; } = "";
    public string? Description { get; set; }
    public bool Foreground { get; set; }
    public string? PidFile { get; set; }
    public ServerTlsMode Tls { get; set; } = ServerTlsMode.Off;
    public string? TlsCertificates { get; set; }
    public string? TlsPsk { get; set; }
    public bool TlsVerifyPeer { get; set; }
    public bool ExitWithParent { get; set; }
    public bool Verbose { get; set; }
    public bool Oldstyle { get; set; }
    public bool NoStructuredReplies { get; set; }
    public bool NoExtendedHeaders { get; set; }
    public int? Threads { get; set; }
    public string? Run { get; set; }
    public string Plugin { get; set; } = "";
    public List<string> PluginArgs { get; } = [];
    public bool Help { get; set; }
    public bool Version { get; set; }
}

/// <summary>
/// nbdkit's command line: <c>nbdsharp-server [OPTIONS] EXPORT [[KEY=]VALUE ...] [--run CMD]</c>, parsed as getopt_long
/// does (short options may be bundled or take their value attached, long options take <c>=VALUE</c> or the next
/// word, options stop at the export type).
/// </summary>
internal static class ServerCommandLine
{
    public const string Usage =
        "nbdsharp-server [-U SOCKET | -p PORT [-i ADDR] | -s] [-r] [-e EXPORTNAME] [-f] [-P PIDFILE]\n" +
        "                [--tls=off|on|require --tls-certificates=DIR [--tls-verify-peer] | --tls-psk=FILE]\n" +
        "                [--exit-with-parent] [-v] EXPORT [[KEY=]VALUE ...] [--run CMD]\n" +
        "\n" +
        "EXPORT is one of:\n" +
        "  memory [size=]SIZE                  a sparse RAM disk\n" +
        "  file [file=]PATH                    a file or block device\n" +
        "  null [size=]SIZE                    reads zeroes, discards writes\n" +
        "  pattern [size=]SIZE                 read-only, nbdkit's pattern plugin's bytes\n" +
        "  sparse-random [size=]SIZE [seed=N] [percent=N] [runlength=SIZE] [random-content=true]\n" +
        "                                      nbdkit's sparse-random shape with seeded data\n" +
        "\n" +
        "Options:\n" +
        "  -U, --unix SOCKET        listen on a Unix socket (- for a private one, with --run)\n" +
        "  -p, --port PORT          listen on TCP PORT (default 10809)\n" +
        "  -i, --ipaddr ADDR        listen on ADDR only\n" +
        "  -s, --single             serve one client on standard input and output\n" +
        "  -r, --readonly           refuse writes\n" +
        "  -e, --exportname NAME    the export's name (default \"\")\n" +
        "      --description TEXT   the export's description\n" +
        "  -f, --foreground         do not fork into the background\n" +
        "  -P, --pidfile FILE       write the process id to FILE once listening\n" +
        "  -t, --threads N          requests in flight per client (default 64)\n" +
        "  -o, --oldstyle           oldstyle handshake\n" +
        "  -n, --newstyle           fixed newstyle handshake (the default)\n" +
        "      --no-sr              do not offer structured replies\n" +
        "      --no-eh              do not offer extended headers\n" +
        "      --tls MODE           off, on or require\n" +
        "      --tls-certificates DIR  server-cert.pem, server-key.pem and ca-cert.pem\n" +
        "      --tls-psk FILE       PSK file (username:hexkey lines)\n" +
        "      --tls-verify-peer    require client certificates signed by ca-cert.pem\n" +
        "      --exit-with-parent   exit when the parent process exits\n" +
        "      --run CMD            run CMD with $uri set, then exit with its status\n" +
        "  -v, --verbose            log every connection and request error\n" +
        "  -V, --version            print the version\n" +
        "      --help               print this help\n";

    private static readonly HashSet<string> LongWithValue = new(StringComparer.Ordinal)
    {
        "unix", "port", "ipaddr", "exportname", "export-name", "export", "description", "pidfile", "threads", "tls",
        "tls-certificates", "tls-psk", "run",
    };

    private static readonly HashSet<string> LongFlags = new(StringComparer.Ordinal)
    {
        "single", "stdin", "readonly", "read-only", "foreground", "no-fork", "oldstyle", "old-style", "newstyle", "new-style",
        "no-sr", "no-eh", "tls-verify-peer", "exit-with-parent", "verbose", "version", "help",
    };

    /// <exception cref="ToolException">A bad option or argument, with the one-line reason.</exception>
    public static ServerSettings Parse(string[] args)
    {
        var s = new ServerSettings();
        int i = 0;
        for (; i < args.Length; i++)
        {
            string arg = args[i];
            if (arg == "--")
            {
                i++;
                break;
            }
            if (arg.StartsWith("--", StringComparison.Ordinal))
            {
                string name = arg[2..];
                string? value = null;
                int eq = name.IndexOf('=', StringComparison.Ordinal);
                if (eq >= 0)
                {
                    value = name[(eq + 1)..];
                    name = name[..eq];
                }
                if (LongWithValue.Contains(name))
                {
                    if (value == null)
                    {
                        if (i + 1 >= args.Length)
                            throw new ToolException("option '--" + name + "' requires an argument");
                        value = args[++i];
                    }
                    Apply(s, name, value);
                }
                else if (LongFlags.Contains(name))
                {
                    if (value != null)
                        throw new ToolException("option '--" + name + "' doesn't allow an argument");
                    Apply(s, name, null);
                }
                else
                {
                    throw new ToolException("unrecognized option '" + arg + "'");
                }
                continue;
            }
            if (arg.Length > 1 && arg[0] == '-')
            {
                for (int j = 1; j < arg.Length; j++)
                {
                    char c = arg[j];
                    string? name = ShortName(c) ?? throw new ToolException("invalid option -- '" + c + "'");
                    if (LongWithValue.Contains(name))
                    {
                        string value;
                        if (j + 1 < arg.Length)
                            value = arg[(j + 1)..];
                        else if (i + 1 < args.Length)
                            value = args[++i];
                        else
                            throw new ToolException("option requires an argument -- '" + c + "'");
                        Apply(s, name, value);
                        break;
                    }
                    Apply(s, name, null);
                }
                continue;
            }
            break;
        }
        if (s.Help || s.Version)
            return s;
        if (i >= args.Length)
            throw new ToolException("no export type given: try memory SIZE, file PATH, null SIZE, pattern SIZE or sparse-random SIZE (--help for more)");
        s.Plugin = args[i++];
        for (; i < args.Length; i++)
        {
            // nbdkit accepts --run after the plugin's arguments too.
            if (args[i] == "--run" && i + 1 < args.Length)
                s.Run = args[++i];
            else if (args[i].StartsWith("--run=", StringComparison.Ordinal))
                s.Run = args[i][6..];
            else
                s.PluginArgs.Add(args[i]);
        }
        Check(s);
        return s;
    }

    private static string? ShortName(char c) => c switch
    {
        'U' => "unix",
        'p' => "port",
        'i' => "ipaddr",
        's' => "single",
        'r' => "readonly",
        'e' => "exportname",
        'f' => "foreground",
        'P' => "pidfile",
        't' => "threads",
        'o' => "oldstyle",
        'n' => "newstyle",
        'v' => "verbose",
        'V' => "version",
        _ => null,
    };

    private static void Apply(ServerSettings s, string name, string? value)
    {
        switch (name)
        {
            case "unix":
                s.UnixSocket = value;
                break;
            case "port":
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 0 or > 65535)
                    throw new ToolException("--port: could not parse port number: " + value);
                s.Port = port;
                break;
            case "ipaddr":
                s.Address = value;
                break;
            case "single":
            case "stdin":
                s.Single = true;
                break;
            case "readonly":
            case "read-only":
                s.ReadOnly = true;
                break;
            case "exportname":
            case "export-name":
            case "export":
                s.ExportName = value!;
                break;
            case "description":
                s.Description = value;
                break;
            case "foreground":
            case "no-fork":
                s.Foreground = true;
                break;
            case "pidfile":
                s.PidFile = value;
                break;
            case "threads":
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int threads) || threads < 1)
                    throw new ToolException("--threads: could not parse number: " + value);
                s.Threads = threads;
                break;
            case "oldstyle":
            case "old-style":
                s.Oldstyle = true;
                break;
            case "newstyle":
            case "new-style":
                s.Oldstyle = false;
                break;
            case "no-sr":
                s.NoStructuredReplies = true;
                break;
            case "no-eh":
                s.NoExtendedHeaders = true;
                break;
            case "tls":
                s.Tls = value switch
                {
                    "off" or "no" or "false" or "0" => ServerTlsMode.Off,
                    "on" or "yes" or "true" or "1" => ServerTlsMode.On,
                    "require" or "required" => ServerTlsMode.Require,
                    _ => throw new ToolException("--tls flag must be off|on|require: " + value),
                };
                break;
            case "tls-certificates":
                s.TlsCertificates = value;
                break;
            case "tls-psk":
                s.TlsPsk = value;
                break;
            case "tls-verify-peer":
                s.TlsVerifyPeer = true;
                break;
            case "exit-with-parent":
                s.ExitWithParent = true;
                break;
            case "run":
                s.Run = value;
                break;
            case "verbose":
                s.Verbose = true;
                break;
            case "version":
                s.Version = true;
                break;
            case "help":
                s.Help = true;
                break;
            default:
                throw new ToolException("unrecognized option '--" + name + "'");
        }
    }

    private static void Check(ServerSettings s)
    {
        int modes = (s.UnixSocket != null ? 1 : 0) + (s.Port != null || s.Address != null ? 1 : 0) + (s.Single ? 1 : 0);
        if (modes > 1)
            throw new ToolException("-U, -p/-i and -s cannot be used together");
        if (s.Single && s.Run != null)
            throw new ToolException("-s and --run cannot be used together");
        if (s.Tls != ServerTlsMode.Off && s.TlsCertificates == null && s.TlsPsk == null)
            throw new ToolException("--tls=" + (s.Tls == ServerTlsMode.On ? "on" : "require") + " needs --tls-certificates=DIR or --tls-psk=FILE");
        if (s.TlsCertificates != null && s.TlsPsk != null)
            throw new ToolException("--tls-certificates and --tls-psk cannot be used together");
        if (s.TlsVerifyPeer && s.TlsCertificates == null)
            throw new ToolException("--tls-verify-peer needs --tls-certificates");
        if (s.Oldstyle && s.Tls == ServerTlsMode.Require)
            throw new ToolException("--oldstyle cannot be used with --tls=require");
        if (System.Text.Encoding.UTF8.GetByteCount(s.ExportName) > 4096)
            throw new ToolException("export name too long");
    }
}
