using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;

namespace NbdSharp.Tools.Shell;

/// <summary>One step of the command line, run in the order given: C# to run, or a URI to connect <c>h</c> to.</summary>
/// <param name="Kind">What it is.</param>
/// <param name="Text">The code, or the URI.</param>
/// <param name="Source">Where the code comes from, for compiler messages: a file name, or "" for <c>-c</c>.</param>
internal sealed record ShellStep(ShellStepKind Kind, string Text, string Source);

internal enum ShellStepKind
{
    Code,
    Uri,
}

/// <summary>The parsed command line.</summary>
/// <param name="Steps">The <c>-c</c>, <c>-u</c> and script file steps, in order.</param>
/// <param name="NoHandle"><c>-n</c>: no implicit handle.</param>
/// <param name="BaseAllocation"><c>--base-allocation</c>: request base:allocation before connecting.</param>
/// <param name="OptMode"><c>--opt-mode</c>: enable option mode before connecting.</param>
/// <param name="Verbose"><c>-v</c>: the library's debug messages, and stack traces with errors.</param>
/// <param name="ScriptArgs">The words after the script file, for the script's <c>Args</c>.</param>
internal sealed record ShellOptions(IReadOnlyList<ShellStep> Steps, bool NoHandle, bool BaseAllocation, bool OptMode,
    bool Verbose, IReadOnlyList<string> ScriptArgs)
{
    /// <summary>Without code to run, the shell is interactive.</summary>
    public bool Interactive => !Steps.Any(step => step.Kind == ShellStepKind.Code);
}

/// <summary>
/// nbdsh's command line, as libnbd's nbdsh(1): <c>nbdsh [-u URI] [--base-allocation] [--opt-mode] [-n] [-c CODE ...]
/// [-v] [SCRIPT.csx [ARGS ...]]</c>. <c>--base-allocation</c> and <c>--opt-mode</c> take effect before any connection,
/// wherever they stand; <c>-u</c> and <c>-c</c> run in the order given, then the script file.
/// </summary>
internal static class ShellCommandLine
{
    public const string Program = "nbdsh";

    private const string HelpText = """
        usage: nbdsh [-h] [--base-allocation] [-c COMMAND] [-n] [--opt-mode] [-u URI] [-v] [-V] [SCRIPT [ARGS ...]]

        Network Block Device (NBD) shell: C# with NbdSharp imported and an open NBD handle called h.

        options:
          -h, --help            show this help message and exit
          --base-allocation     request the "base:allocation" meta context
          -c COMMAND, --command COMMAND
                                run C# (may be used multiple times; "-" reads it from standard input)
          -n                    do not create the implicit handle 'h'
          --opt-mode            request opt mode during connection
          -u URI, --uri URI     connect to NBD URI
          -v, --verbose         enable verbose debugging (and show stack traces)
          -V, --version         display version information
          SCRIPT [ARGS ...]     run a C# script file (a first line starting with #! is allowed);
                                ARGS are its Args

        Without -c or a script, nbdsh is interactive. In the shell, help() lists the handle's calls and
        hexdump(bytes) shows bytes as nbddump does. Compiled code is kept in $XDG_CACHE_HOME/nbdsh
        (~/.cache/nbdsh), so that running the same code again starts at once; NBDSH_NO_CACHE=1 turns this off.

        Examples:

            nbdsh -u nbd://localhost -c 'h.GetSize()'
            nbdsh --base-allocation -u 'nbd+unix:///?socket=/tmp/sock' -c 'h.CanMetaContext(MetaContext.BaseAllocation)'

        """;

    /// <summary>Parses <paramref name="args"/>; prints help, the version or the option lists and returns null for them.</summary>
    /// <exception cref="ToolException">A command line nbdsh cannot use.</exception>
    public static ShellOptions? Parse(IReadOnlyList<string> args)
    {
        // Declared so that --long-options and --short-options print libnbd's nbdsh lists, in its (sorted) order: -V is
        // separate from --version so that it comes first among the short options.
        var shortVersion = ToolOption.Flag("-V");
        var baseAllocation = ToolOption.Flag("--base-allocation");
        var command = ToolOption.WithValue("--command", "-c");
        var noHandle = ToolOption.Flag("-n");
        var optMode = ToolOption.Flag("--opt-mode");
        var uri = ToolOption.WithValue("--uri", "-u");
        // An undocumented synonym of --uri, as in libnbd's nbdsh.
        var connect = new ToolOption("--connect") { TakesValue = true, Hidden = true };
        var verbose = ToolOption.Flag("--verbose", "-v");
        var version = ToolOption.Flag("--version");
        var help = new ToolOption("--help", "-h") { Hidden = true };
        var commandLine = new ToolCommandLine(Program, shortVersion, baseAllocation, command, noHandle, optMode, uri, connect, verbose, version, help);
        ToolArguments? result = commandLine.Parse(args);
        if (result == null)
            return null;
        if (result.Has(shortVersion))
            version = shortVersion;
        if (commandLine.PrintedHelpOrVersion(result, help, version, HelpText.ReplaceLineEndings("\n")))
            return null;

        var steps = new List<ShellStep>();
        foreach (ToolOptionUse use in result.Uses)
        {
            if (use.Option == command)
                steps.Add(new ShellStep(ShellStepKind.Code, use.Value == "-" ? Console.In.ReadToEnd() : use.Value!, ""));
            else if (use.Option == uri || use.Option == connect)
                steps.Add(new ShellStep(ShellStepKind.Uri, use.Value!, ""));
        }
        IReadOnlyList<string> positional = result.Positionals;
        if (positional.Count > 0)
            steps.Add(new ShellStep(ShellStepKind.Code, ReadScript(positional[0]), positional[0]));

        var scriptArgs = new string[Math.Max(0, positional.Count - 1)];
        for (int i = 0; i < scriptArgs.Length; i++)
            scriptArgs[i] = positional[i + 1];
        var options = new ShellOptions(steps, result.Has(noHandle), result.Has(baseAllocation), result.Has(optMode),
            result.Has(verbose), scriptArgs);
        if (options.NoHandle && (options.BaseAllocation || options.OptMode || steps.Any(step => step.Kind == ShellStepKind.Uri)))
            throw new ToolException("-n option cannot be used with --base-allocation, --opt-mode or --uri");
        return options;
    }

    private static string ReadScript(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ToolException(path + ": " + e.Message);
        }
    }
}
