using System;
using System.Text;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// The interactive shell: reads C# until it is a complete submission (an unfinished statement continues on the next
/// line), runs it, prints the value of a trailing expression, and reports an exception without ending the session.
/// On a terminal it shows a banner and the prompt <c>nbd&gt; </c> and edits lines (<see cref="LineEditor"/>); with
/// input from a pipe it reads the lines as they come, silently, and exits 1 if any failed. <c>exit</c> or Ctrl-D
/// leaves (with status 0 at a terminal, where every error was shown).
/// </summary>
internal sealed class Repl(ScriptSession session, ErrorReporter reporter, bool hasHandle)
{
    private const string Prompt = "nbd> ";
    private const string ContinuationPrompt = "...> ";

    public int Run()
    {
        bool terminal = !Console.IsInputRedirected;
        LineEditor? editor = null;
        if (terminal)
        {
            Console.Out.Write(Banner(hasHandle));
            editor = new LineEditor(LineEditor.DefaultHistoryFile(), new Completions());
            // Ctrl-C drops the line being typed instead of ending the shell.
            Console.TreatControlCAsInput = true;
        }
        bool failed = false;
        var pending = new StringBuilder();
        try
        {
            while (true)
            {
                InputLine input = editor?.ReadLine(pending.Length == 0 ? Prompt : ContinuationPrompt) ?? ReadPiped();
                if (input.End)
                    break;
                if (input.Cancelled)
                {
                    pending.Clear();
                    continue;
                }
                if (pending.Length == 0 && input.Text.Trim() is "exit" or "exit()" or "quit" or "quit()")
                    break;
                pending.Append(input.Text).Append('\n');
                string code = pending.ToString();
                if (code.Trim().Length == 0)
                {
                    pending.Clear();
                    continue;
                }
                if (!ScriptSession.IsComplete(code))
                    continue;
                pending.Clear();
                failed |= !RunOne(code);
            }
        }
        finally
        {
            if (terminal)
                Console.TreatControlCAsInput = false;
        }
        // At a terminal the user has seen every error; from a pipe the exit status has to tell.
        return failed && !terminal ? 1 : 0;
    }

    private static InputLine ReadPiped()
    {
        string? line = Console.In.ReadLine();
        return line == null ? new InputLine("", false, true) : new InputLine(line, false, false);
    }

    /// <summary>Compiles and runs one submission; false if it did not compile or threw.</summary>
    private bool RunOne(string code)
    {
        Submission submission = session.Prepare(code, "");
        if (submission.Errors.Count > 0)
        {
            ErrorReporter.CompileErrors(submission.Errors);
            return false;
        }
        SubmissionResult result = session.Run(submission);
        if (result.Exception != null)
        {
            reporter.Exception(result.Exception);
            return false;
        }
        if (result.Value != null)
            Console.Out.WriteLine(result.Value);
        return true;
    }

    private static string Banner(bool hasHandle)
    {
        var text = new StringBuilder();
        text.Append('\n');
        text.Append("Welcome to nbdsh, the shell for interacting with\n");
        text.Append("Network Block Device (NBD) servers.\n\n");
        if (hasHandle)
        {
            text.Append("NbdSharp is imported and there is an open NBD handle called ‘h’.\n\n");
        }
        else
        {
            text.Append("NbdSharp is imported.\n\n");
            Example(text, "h = new NbdHandle();", "Create a new handle.");
        }
        Example(text, "h.GetSize()", "Get size of the remote disk.");
        Example(text, "var buf = new byte[512]; h.Pread(buf, 0);", "Read the first sector.");
        Example(text, "hexdump(buf)", "Look at it.");
        Example(text, "help()", "List the calls of the handle.");
        Example(text, "exit or Ctrl-D", "Quit the shell.");
        text.Append('\n');
        return text.ToString();
    }

    private static void Example(StringBuilder text, string example, string description) =>
        text.Append(example.PadRight(42)).Append(" // ").Append(description).Append('\n');
}
