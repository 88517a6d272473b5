using System;
using System.Collections.Generic;
using System.CommandLine;
using System.CommandLine.Help;
using System.Linq;

namespace NbdSharp.Tools;

/// <summary>
/// System.CommandLine with the conventions of libnbd's C tools (GNU getopt_long): <c>--opt=value</c> and
/// <c>--opt value</c>, options anywhere before <c>--</c>, an optional-value option that takes its value only when
/// attached with <c>=</c>, a server command in <c>[ CMD ARGS ... ]</c> at the end, the hidden
/// <c>--long-options</c>/<c>--short-options</c> lists, and parse errors as one line on stderr with exit code 1.
/// The tool writes its own <c>--help</c> and <c>--version</c>.
/// </summary>
public sealed class ToolCommandLine
{
    private readonly string _program;
    private readonly RootCommand _root;
    private readonly Dictionary<string, string> _optionalValueDefaults = new(StringComparer.Ordinal);

    /// <summary>Wraps <paramref name="root"/>; its built-in help and version options are removed.</summary>
    /// <param name="program">The program name for messages.</param>
    /// <param name="root">The command with the tool's options and arguments.</param>
    public ToolCommandLine(string program, RootCommand root)
    {
        ArgumentNullException.ThrowIfNull(root);
        _program = program;
        _root = root;
        for (int i = root.Options.Count - 1; i >= 0; i--)
        {
            if (root.Options[i] is HelpOption or VersionOption)
                root.Options.RemoveAt(i);
        }
    }

    /// <summary>
    /// Declares that <paramref name="name"/> (e.g. <c>--map</c>) takes a value only as <c>--map=VALUE</c>; alone it
    /// means <paramref name="defaultValue"/>, and the next word is not its value (getopt's optional arguments).
    /// </summary>
    /// <param name="name">The option as typed.</param>
    /// <param name="defaultValue">The value when none is attached.</param>
    public void OptionalValue(string name, string defaultValue) => _optionalValueDefaults[name] = defaultValue;

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

    private readonly List<IReadOnlyList<string>> _serverCommands = [];

    /// <summary>
    /// Parses <paramref name="args"/>. Handles <c>--long-options</c> and <c>--short-options</c> itself (returns null
    /// after printing). Throws <see cref="ToolException"/> (exit 1) for anything it cannot parse.
    /// </summary>
    /// <param name="args">The command line.</param>
    /// <returns>The parse result, or null when the command line was fully handled.</returns>
    public ParseResult? Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var words = new List<string>(args.Count);
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
                _serverCommands.Add(args.Skip(i + 1).Take(close - i - 1).ToArray());
                words.Add("[");
                i = close;
                continue;
            }
            if (word == "[")
            {
                if (args[^1] != "]" || args.Count - i < 2)
                    throw new ToolException("expecting ']' at the end of the command in [ ... ]");
                ServerCommand = args.Skip(i + 1).Take(args.Count - i - 2).ToArray();
                if (ServerCommand.Count == 0)
                    throw new ToolException("missing command inside [ ... ]");
                break;
            }
            if (!endOfOptions)
            {
                if (word == "--")
                {
                    endOfOptions = true;
                    words.Add(word);
                    continue;
                }
                if (word == "--long-options" || word == "--short-options")
                {
                    PrintOptionNames(word == "--long-options");
                    return null;
                }
                if (_optionalValueDefaults.TryGetValue(word, out string? defaultValue))
                    word = word + "=" + defaultValue;
                if (word.Length > 1 && word[0] == '-')
                {
                    Option? option = CheckOption(word);
                    words.Add(word);
                    // A value given as the next word ("--can flush") is taken as it is, even if it starts with '-'.
                    if (option != null && option.Arity.MinimumNumberOfValues > 0 && !word.Contains('=', StringComparison.Ordinal) &&
                        i + 1 < args.Count)
                    {
                        words.Add(args[++i]);
                    }
                    continue;
                }
            }
            words.Add(word);
        }
        var configuration = new ParserConfiguration { ResponseFileTokenReplacer = null, EnablePosixBundling = true };
        ParseResult result = _root.Parse(words, configuration);
        if (result.Errors.Count > 0)
        {
            foreach (string token in result.UnmatchedTokens)
            {
                if (token.StartsWith('-') && token.Length > 1)
                    throw new ToolException(token.StartsWith("--", StringComparison.Ordinal)
                        ? "unrecognized option '" + token + "'"
                        : "invalid option -- '" + token[1..] + "'");
            }
            throw new ToolException(result.Errors[0].Message.TrimEnd('.'));
        }
        return result;
    }

    /// <summary>
    /// Handles <c>--help</c> (prints <paramref name="helpText"/>) and <c>-V</c>/<c>--version</c> (libnbd's two lines:
    /// the program's version, then the library's).
    /// </summary>
    /// <param name="result">The parse result.</param>
    /// <param name="help">The --help option.</param>
    /// <param name="version">The --version option.</param>
    /// <param name="helpText">What --help prints.</param>
    /// <returns>Whether one of them was given (the tool then exits 0).</returns>
    public bool PrintedHelpOrVersion(ParseResult result, Option<bool> help, Option<bool> version, string helpText)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (result.GetValue(help))
        {
            Console.Out.Write(helpText);
            return true;
        }
        if (result.GetValue(version))
        {
            PrintVersion(_program);
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

    /// <summary>
    /// Which of <paramref name="options"/> appeared last on the command line (getopt tools let the last of two
    /// opposite options win), or null when none did.
    /// </summary>
    /// <param name="result">The parse result.</param>
    /// <param name="options">The competing options.</param>
    /// <returns>The last one given.</returns>
    public static Option? Last(ParseResult result, params Option[] options)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(options);
        Option? last = null;
        foreach (System.CommandLine.Parsing.Token token in result.Tokens)
        {
            if (token.Type != System.CommandLine.Parsing.TokenType.Option)
                continue;
            foreach (Option option in options)
            {
                if (option.Name == token.Value || option.Aliases.Contains(token.Value))
                    last = option;
            }
        }
        return last;
    }

    /// <summary>
    /// The option <paramref name="word"/> names (long, possibly with <c>=value</c>; or short, possibly bundled, in
    /// which case the last one is returned, or null when its value is attached: "-n10"); getopt's message for an
    /// unknown one.
    /// </summary>
    private Option? CheckOption(string word)
    {
        if (word.StartsWith("--", StringComparison.Ordinal))
        {
            int equals = word.IndexOf('=', StringComparison.Ordinal);
            string name = equals < 0 ? word : word[..equals];
            return Find(name) ?? throw new ToolException("unrecognized option '" + word + "'");
        }
        Option? last = null;
        for (int j = 1; j < word.Length; j++)
        {
            last = Find("-" + word[j]) ?? throw new ToolException("invalid option -- '" + word[j] + "'");
            if (last.Arity.MinimumNumberOfValues > 0)
                return j == word.Length - 1 ? last : null; // "-n10": the rest of the word is its value, not the next word
        }
        return last;
    }

    private Option? Find(string name)
    {
        foreach (Option option in _root.Options)
        {
            if (option.Name == name || option.Aliases.Contains(name))
                return option;
        }
        return null;
    }

    private void PrintOptionNames(bool longNames)
    {
        foreach (Option option in _root.Options)
        {
            foreach (string name in option.Aliases.Prepend(option.Name))
            {
                bool isLong = name.StartsWith("--", StringComparison.Ordinal);
                if (isLong == longNames && !option.Hidden && name is not "--long-options" and not "--short-options")
                    Console.WriteLine(name);
            }
        }
    }
}
