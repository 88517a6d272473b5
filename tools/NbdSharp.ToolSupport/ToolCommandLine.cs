using System;
using System.Collections.Generic;

namespace NbdSharp.Tools;

/// <summary>
/// One option of a tool: its names (long <c>--name</c> and short <c>-n</c>) and whether it takes a value.
/// </summary>
public sealed class ToolOption
{
    /// <summary>An option named <paramref name="names"/>, a flag unless <see cref="TakesValue"/> or
    /// <see cref="OptionalValue"/> is set.</summary>
    /// <param name="names">Its names, the first the main one.</param>
    public ToolOption(params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        if (names.Length == 0)
            throw new ArgumentException("an option needs a name", nameof(names));
        foreach (string name in names)
        {
            bool valid = name.StartsWith("--", StringComparison.Ordinal) ? name.Length > 2 : name.Length == 2 && name[0] == '-';
            if (!valid)
                throw new ArgumentException("not an option name: " + name, nameof(names));
        }
        Names = names;
    }

    /// <summary>An option without a value (<c>--json</c>, <c>-v</c>).</summary>
    /// <param name="names">Its names, the first the main one.</param>
    /// <returns>The option.</returns>
    public static ToolOption Flag(params string[] names) => new(names);

    /// <summary>An option with a value: <c>--opt=V</c>, <c>--opt V</c>, <c>-oV</c> or <c>-o V</c>.</summary>
    /// <param name="names">Its names, the first the main one.</param>
    /// <returns>The option.</returns>
    public static ToolOption WithValue(params string[] names) => new(names) { TakesValue = true };

    /// <summary>Its names, in the order given.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Whether it takes a value (always, when <see cref="OptionalValue"/> is set).</summary>
    public bool TakesValue
    {
        get => _takesValue || OptionalValue;
        init => _takesValue = value;
    }

    private readonly bool _takesValue;

    /// <summary>When set, the value is optional (getopt's optional argument): it must then be attached (<c>--opt=V</c>,
    /// <c>-oV</c>), and <c>--opt</c> alone is given without one.</summary>
    public bool OptionalValue { get; init; }

    /// <summary>Left out of <c>--long-options</c> and <c>--short-options</c>.</summary>
    public bool Hidden { get; init; }

    /// <inheritdoc/>
    public override string ToString() => Names[0];
}

/// <summary>One option as it appeared on the command line. (A class: a list of a struct of ours would be .NET generic
/// code compiled at run time in a ReadyToRun build.)</summary>
/// <param name="Option">The option.</param>
/// <param name="Value">Its value, or null for a flag.</param>
public sealed record ToolOptionUse(ToolOption Option, string? Value);

/// <summary>What a command line said: the options in the order given, and the other words.</summary>
public sealed class ToolArguments
{
    private readonly List<ToolOptionUse> _uses;

    internal ToolArguments(List<ToolOptionUse> uses, List<string> positionals)
    {
        _uses = uses;
        Positionals = positionals;
    }

    /// <summary>Every option given, in command-line order (an option given twice appears twice).</summary>
    public IReadOnlyList<ToolOptionUse> Uses => _uses;

    /// <summary>The words that are not options, in order (with <c>[</c> standing for a server command where
    /// <see cref="ToolCommandLine.BracketGroupsAnywhere"/> is set).</summary>
    public IReadOnlyList<string> Positionals { get; }

    /// <summary>Whether <paramref name="option"/> was given.</summary>
    /// <param name="option">The option.</param>
    /// <returns>Whether it was.</returns>
    public bool Has(ToolOption option)
    {
        foreach (ToolOptionUse use in _uses)
        {
            if (ReferenceEquals(use.Option, option))
                return true;
        }
        return false;
    }

    /// <summary>The value of the last <paramref name="option"/> given (getopt tools let the last one win); null when it
    /// was not given, or given last without its optional value.</summary>
    /// <param name="option">An option with a value.</param>
    /// <returns>The value.</returns>
    public string? Value(ToolOption option)
    {
        for (int i = _uses.Count - 1; i >= 0; i--)
        {
            if (ReferenceEquals(_uses[i].Option, option))
                return _uses[i].Value;
        }
        return null;
    }

    /// <summary>Which of <paramref name="options"/> was given last (the last of two opposite options wins), or null.</summary>
    /// <param name="options">The competing options.</param>
    /// <returns>The last one given.</returns>
    public ToolOption? Last(params ToolOption[] options)
    {
        ArgumentNullException.ThrowIfNull(options);
        for (int i = _uses.Count - 1; i >= 0; i--)
        {
            if (Array.IndexOf(options, _uses[i].Option) >= 0)
                return _uses[i].Option;
        }
        return null;
    }

    /// <summary>Which of <paramref name="options"/> was given first, or null.</summary>
    /// <param name="options">The options.</param>
    /// <returns>The first one given.</returns>
    public ToolOption? First(params ToolOption[] options)
    {
        ArgumentNullException.ThrowIfNull(options);
        foreach (ToolOptionUse use in _uses)
        {
            if (Array.IndexOf(options, use.Option) >= 0)
                return use.Option;
        }
        return null;
    }
}

/// <summary>
/// The command line of libnbd's C tools, as GNU getopt_long reads it: <c>--opt=value</c> and <c>--opt value</c>, an
/// unambiguous prefix of a long name, bundled short options (<c>-pv</c>) and attached short values (<c>-C4</c>),
/// options anywhere before <c>--</c>, getopt's optional values (attached with <c>=</c> only), a server command in
/// <c>[ CMD ARGS ... ]</c>, the hidden <c>--long-options</c>/<c>--short-options</c> lists, and getopt's messages as
/// one line on stderr with exit code 1. The tool writes its own <c>--help</c> and <c>--version</c>.
/// </summary>
/// <param name="program">The program name for messages.</param>
/// <param name="options">The tool's options, in the order <c>--long-options</c> and <c>--short-options</c> list them.</param>
public sealed class ToolCommandLine(string program, params ToolOption[] options)
{
    private readonly ToolOption[] _options = options ?? throw new ArgumentNullException(nameof(options));
    private readonly List<IReadOnlyList<string>> _serverCommands = [];

    /// <summary>The words of <c>[ CMD ARGS ... ]</c>, or null when the command line has none.</summary>
    public IReadOnlyList<string>? ServerCommand { get; private set; }

    /// <summary>
    /// When true (nbdcopy), any number of <c>[ CMD ARGS ... ]</c> groups may stand anywhere among the positional
    /// words, each ending at the first <c>]</c>: each group is collected in <see cref="ServerCommands"/> and leaves the
    /// word <c>[</c> as a positional argument in its place. When false, one group ends the command line.
    /// </summary>
    public bool BracketGroupsAnywhere { get; set; }

    /// <summary>The groups found when <see cref="BracketGroupsAnywhere"/> is set, in command-line order.</summary>
    public IReadOnlyList<IReadOnlyList<string>> ServerCommands => _serverCommands;

    /// <summary>
    /// Parses <paramref name="args"/>. Handles <c>--long-options</c> and <c>--short-options</c> itself (returns null
    /// after printing). Throws <see cref="ToolException"/> (exit 1) with getopt's message for anything it cannot parse.
    /// </summary>
    /// <param name="args">The command line.</param>
    /// <returns>What it said, or null when the command line was fully handled.</returns>
    public ToolArguments? Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var uses = new List<ToolOptionUse>();
        var positionals = new List<string>();
        bool endOfOptions = false;
        for (int i = 0; i < args.Count; i++)
        {
            string word = args[i];
            if (word == "[" && BracketGroupsAnywhere)
            {
                int close = i + 1;
                while (close < args.Count && args[close] != "]")
                    close++;
                if (close == args.Count)
                    throw new ToolException("expecting ']' at the end of the command in [ ... ]");
                if (close == i + 1)
                    throw new ToolException("missing command inside [ ... ]");
                _serverCommands.Add(Slice(args, i + 1, close - i - 1));
                positionals.Add("[");
                i = close;
                continue;
            }
            if (word == "[")
            {
                if (args[^1] != "]" || args.Count - i < 2)
                    throw new ToolException("expecting ']' at the end of the command in [ ... ]");
                ServerCommand = Slice(args, i + 1, args.Count - i - 2);
                if (ServerCommand.Count == 0)
                    throw new ToolException("missing command inside [ ... ]");
                break;
            }
            if (endOfOptions || word.Length < 2 || word[0] != '-')
            {
                positionals.Add(word);
                continue;
            }
            if (word == "--")
            {
                endOfOptions = true;
                continue;
            }
            if (word.StartsWith("--", StringComparison.Ordinal))
            {
                if (word is "--long-options" or "--short-options")
                {
                    PrintOptionNames(word == "--long-options");
                    return null;
                }
                i = ParseLong(args, i, uses);
            }
            else
            {
                i = ParseShort(args, i, uses);
            }
        }
        return new ToolArguments(uses, positionals);
    }

    private int ParseLong(IReadOnlyList<string> args, int i, List<ToolOptionUse> uses)
    {
        string word = args[i];
        int equals = word.IndexOf('=', StringComparison.Ordinal);
        string name = equals < 0 ? word : word[..equals];
        ToolOption option = FindLong(word, name, out string full);
        string? value = equals < 0 ? null : word[(equals + 1)..];
        if (!option.TakesValue)
        {
            if (value != null)
                throw new ToolException("option '" + full + "' doesn't allow an argument");
        }
        else if (value == null)
        {
            if (option.OptionalValue)
                value = null;
            else if (i + 1 < args.Count)
                value = args[++i]; // taken as it is, even if it starts with '-' ("--can flush", "-o -1")
            else
                throw new ToolException("option '" + full + "' requires an argument");
        }
        uses.Add(new ToolOptionUse(option, value));
        return i;
    }

    private int ParseShort(IReadOnlyList<string> args, int i, List<ToolOptionUse> uses)
    {
        string word = args[i];
        for (int j = 1; j < word.Length; j++)
        {
            char letter = word[j];
            ToolOption option = FindShort(letter) ?? throw new ToolException("invalid option -- '" + letter + "'");
            if (!option.TakesValue)
            {
                uses.Add(new ToolOptionUse(option, null));
                continue;
            }
            string? value;
            if (j + 1 < word.Length)
                value = word[(j + 1)..]; // "-n10": the rest of the word is its value
            else if (option.OptionalValue)
                value = null;
            else if (i + 1 < args.Count)
                value = args[++i];
            else
                throw new ToolException("option requires an argument -- '" + letter + "'");
            uses.Add(new ToolOptionUse(option, value));
            break;
        }
        return i;
    }

    /// <summary>The option a long name or an unambiguous prefix of one names (<paramref name="full"/>: the name it
    /// matched, for messages); getopt's message otherwise.</summary>
    private ToolOption FindLong(string word, string name, out string full)
    {
        ToolOption? found = null;
        full = name;
        bool ambiguous = false;
        foreach (ToolOption option in _options)
        {
            foreach (string candidate in option.Names)
            {
                if (!candidate.StartsWith("--", StringComparison.Ordinal))
                    continue;
                if (string.Equals(candidate, name, StringComparison.Ordinal))
                    return option;
                if (candidate.StartsWith(name, StringComparison.Ordinal))
                {
                    // Several names of one option are one match, as with getopt's entries that set the same value.
                    if (found != null && !ReferenceEquals(found, option))
                        ambiguous = true;
                    if (found == null)
                        full = candidate;
                    found = option;
                }
            }
        }
        if (ambiguous)
            throw new ToolException("option '" + name + "' is ambiguous; possibilities:" + Possibilities(name));
        return found ?? throw new ToolException("unrecognized option '" + word + "'");
    }

    private string Possibilities(string prefix)
    {
        var text = new System.Text.StringBuilder();
        foreach (ToolOption option in _options)
        {
            foreach (string candidate in option.Names)
            {
                if (candidate.StartsWith("--", StringComparison.Ordinal) && candidate.StartsWith(prefix, StringComparison.Ordinal))
                    text.Append(" '").Append(candidate).Append('\'');
            }
        }
        return text.ToString();
    }

    private ToolOption? FindShort(char letter)
    {
        foreach (ToolOption option in _options)
        {
            foreach (string name in option.Names)
            {
                if (name.Length == 2 && name[1] == letter)
                    return option;
            }
        }
        return null;
    }

    private static string[] Slice(IReadOnlyList<string> args, int start, int count)
    {
        var slice = new string[count];
        for (int k = 0; k < count; k++)
            slice[k] = args[start + k];
        return slice;
    }

    /// <summary>
    /// Handles <c>--help</c> (prints <paramref name="helpText"/>) and <c>-V</c>/<c>--version</c> (libnbd's two lines:
    /// the program's version, then the library's).
    /// </summary>
    /// <param name="arguments">The parsed command line.</param>
    /// <param name="help">The --help option.</param>
    /// <param name="version">The --version option.</param>
    /// <param name="helpText">What --help prints.</param>
    /// <returns>Whether one of them was given (the tool then exits 0).</returns>
    public bool PrintedHelpOrVersion(ToolArguments arguments, ToolOption help, ToolOption version, string helpText)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        if (arguments.Has(help))
        {
            Console.Out.Write(helpText);
            return true;
        }
        if (arguments.Has(version))
        {
            PrintVersion(program);
            return true;
        }
        return false;
    }

    /// <summary>Prints libnbd's two version lines: the program's version, then the library's.</summary>
    /// <param name="program">The program name.</param>
    public static void PrintVersion(string program) =>
        Console.Out.Write(program + " " + NbdHandle.GetVersion() + "\n" + NbdHandle.GetPackageName() + " " + NbdHandle.GetVersion() + "\n");

    /// <summary>
    /// The value of <c>--timeout</c>: seconds, possibly fractional ("5", "0.5"); 0 means none.
    /// </summary>
    /// <param name="text">The option's value.</param>
    /// <returns>The timeout.</returns>
    /// <exception cref="ToolException">Not a number of seconds.</exception>
    public static TimeSpan ParseTimeout(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!double.TryParse(text, System.Globalization.NumberStyles.AllowDecimalPoint, System.Globalization.CultureInfo.InvariantCulture, out double seconds) ||
            seconds > TimeSpan.MaxValue.TotalSeconds / 2)
            throw new ToolException("--timeout: could not parse: " + text + " (expected a number of seconds)");
        return TimeSpan.FromSeconds(seconds);
    }

    private void PrintOptionNames(bool longNames)
    {
        var text = new System.Text.StringBuilder();
        foreach (ToolOption option in _options)
        {
            if (option.Hidden)
                continue;
            foreach (string name in option.Names)
            {
                if (name.StartsWith("--", StringComparison.Ordinal) == longNames)
                    text.Append(name).Append('\n');
            }
        }
        Console.Out.Write(text.ToString());
    }
}
