using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace NbdSharp.Tools.Shell;

/// <summary>What the user typed: a line, a line dropped with Ctrl-C, or the end of input (Ctrl-D).</summary>
internal readonly record struct InputLine(string Text, bool Cancelled, bool End);

/// <summary>
/// The interactive shell's line editor, on a terminal: the arrow keys, Home and End, Backspace and Delete, history
/// with Up and Down (kept between sessions), Tab to complete, Ctrl-C to drop the line, Ctrl-D on an empty line to
/// leave. One line at a time; a line longer than the terminal is still edited correctly, though redrawn plainly.
/// </summary>
internal sealed class LineEditor
{
    private const int HistoryLimit = 1000;

    private readonly List<string> _history = [];
    private readonly string? _historyFile;
    private readonly Completions _completions;

    /// <param name="historyFile">Where history is kept, or null for none.</param>
    /// <param name="completions">What Tab offers.</param>
    public LineEditor(string? historyFile, Completions completions)
    {
        _historyFile = historyFile;
        _completions = completions;
        if (historyFile != null && File.Exists(historyFile))
        {
            try
            {
                int lines = 0;
                foreach (string line in File.ReadLines(historyFile))
                {
                    lines++;
                    if (line.Length == 0)
                        continue;
                    _history.Add(line);
                    if (_history.Count > 2 * HistoryLimit)
                        _history.RemoveRange(0, HistoryLimit);
                }
                if (_history.Count > HistoryLimit)
                    _history.RemoveRange(0, _history.Count - HistoryLimit);
                // Each session appends; the file is cut back to the lines kept once it has twice as many.
                if (lines > 2 * HistoryLimit)
                    WriteHistory(historyFile, _history);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // History is a convenience: without it the shell works the same.
            }
        }
    }

    private static void WriteHistory(string path, List<string> lines)
    {
        string temporary = path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllLines(temporary, lines);
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>The history file: $XDG_DATA_HOME/nbdsh/history (~/.local/share/nbdsh/history).</summary>
    public static string? DefaultHistoryFile()
    {
        string data = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
        return data.Length == 0 ? null : Path.Combine(data, "nbdsh", "history");
    }

    /// <summary>Reads a line after <paramref name="prompt"/>.</summary>
    public InputLine ReadLine(string prompt)
    {
        var buffer = new StringBuilder();
        int cursor = 0;
        int recalled = _history.Count;
        string pending = "";
        Console.Out.Write(prompt);
        while (true)
        {
            ConsoleKeyInfo key = Console.ReadKey(intercept: true);
            bool control = (key.Modifiers & ConsoleModifiers.Control) != 0;
            switch (key.Key)
            {
                case ConsoleKey.Enter:
                    Console.Out.Write("\n");
                    string line = buffer.ToString();
                    Remember(line);
                    return new InputLine(line, false, false);
                case ConsoleKey.C when control:
                    Console.Out.Write("^C\n");
                    return new InputLine("", true, false);
                case ConsoleKey.D when control:
                    if (buffer.Length == 0)
                    {
                        Console.Out.Write("\n");
                        return new InputLine("", false, true);
                    }
                    if (cursor < buffer.Length)
                        buffer.Remove(cursor, 1);
                    break;
                case ConsoleKey.A when control:
                case ConsoleKey.Home:
                    cursor = 0;
                    break;
                case ConsoleKey.E when control:
                case ConsoleKey.End:
                    cursor = buffer.Length;
                    break;
                case ConsoleKey.LeftArrow:
                    cursor = Math.Max(0, cursor - 1);
                    break;
                case ConsoleKey.RightArrow:
                    cursor = Math.Min(buffer.Length, cursor + 1);
                    break;
                case ConsoleKey.Backspace:
                    if (cursor > 0)
                        buffer.Remove(--cursor, 1);
                    break;
                case ConsoleKey.Delete:
                    if (cursor < buffer.Length)
                        buffer.Remove(cursor, 1);
                    break;
                case ConsoleKey.U when control:
                    buffer.Remove(0, cursor);
                    cursor = 0;
                    break;
                case ConsoleKey.UpArrow:
                case ConsoleKey.DownArrow:
                    if (recalled == _history.Count)
                        pending = buffer.ToString();
                    recalled = Math.Clamp(recalled + (key.Key == ConsoleKey.UpArrow ? -1 : 1), 0, _history.Count);
                    buffer.Clear().Append(recalled == _history.Count ? pending : _history[recalled]);
                    cursor = buffer.Length;
                    break;
                case ConsoleKey.Tab:
                    cursor = Complete(buffer, cursor, prompt);
                    break;
                default:
                    if (!char.IsControl(key.KeyChar))
                        buffer.Insert(cursor++, key.KeyChar);
                    break;
            }
            Redraw(prompt, buffer, cursor);
        }
    }

    /// <summary>Completes the name before the cursor; lists the choices when Tab cannot decide. Returns the new cursor.</summary>
    private int Complete(StringBuilder buffer, int cursor, string prompt)
    {
        string text = buffer.ToString(0, cursor);
        (string word, IReadOnlyList<string> choices) = _completions.For(text);
        if (choices.Count == 0)
            return cursor;
        string common = choices[0];
        foreach (string choice in choices)
        {
            int n = 0;
            while (n < common.Length && n < choice.Length && common[n] == choice[n])
                n++;
            common = common[..n];
        }
        if (common.Length > word.Length)
        {
            buffer.Insert(cursor, common[word.Length..]);
            return cursor + common.Length - word.Length;
        }
        if (choices.Count > 1)
        {
            Console.Out.Write("\n" + string.Join("  ", choices) + "\n");
            Console.Out.Write(prompt);
        }
        return cursor;
    }

    /// <summary>Writes the line again and puts the cursor back where it is.</summary>
    private static void Redraw(string prompt, StringBuilder buffer, int cursor)
    {
        var text = new StringBuilder("\r").Append(prompt).Append(buffer).Append("\u001b[K");
        int back = buffer.Length - cursor;
        if (back > 0)
            text.Append("\u001b[").Append(back).Append('D');
        Console.Out.Write(text.ToString());
    }

    private void Remember(string line)
    {
        if (line.Trim().Length == 0 || (_history.Count > 0 && _history[^1] == line))
            return;
        _history.Add(line);
        if (_history.Count > HistoryLimit)
            _history.RemoveAt(0);
        if (_historyFile == null)
            return;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(_historyFile)!);
            File.AppendAllText(_historyFile, line.ReplaceLineEndings(" ") + "\n");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
