using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// nbdsh: libnbd's NBD shell with C# for the language. An <see cref="NbdHandle"/> called <c>h</c> is created first
/// (unless <c>-n</c>); the command line's <c>-u</c> and <c>-c</c> steps run in order, then a script file; without
/// code to run, the shell is interactive.
/// </summary>
internal static class Program
{
    private static int Main(string[] args) => ToolMain.Run(ShellCommandLine.Program, () => Run(args));

    private static int Run(string[] args)
    {
        ShellOptions? options = ShellCommandLine.Parse(args);
        if (options == null)
            return 0;
        if (options.Verbose)
            Environment.SetEnvironmentVariable("LIBNBD_DEBUG", "1");

        using NbdHandle? handle = options.NoHandle ? null : new NbdHandle();
        if (handle != null)
        {
            handle.SetHandleName("nbdsh");
            // Before any connection, wherever they stood on the command line (libnbd's nbdsh(1)).
            if (options.BaseAllocation)
                handle.AddMetaContext(MetaContext.BaseAllocation);
            if (options.OptMode)
                handle.SetOptMode(true);
        }
        var globals = new ShellGlobals(handle, options.ScriptArgs);
        var session = new ScriptSession(globals);
        var reporter = new ErrorReporter(options.Verbose);
        if (options.Interactive)
        {
            foreach (ShellStep step in options.Steps)
            {
                if (!Connect(handle!, step.Text, reporter))
                    return 1;
            }
            return new Repl(session, reporter, handle != null).Run();
        }

        // Compiling is most of a short run's time (Roslyn starting cold): the command line's code is compiled on
        // another thread while the handle connects.
        Task<Submission>[] compiled = CompileAll(session, options.Steps.Where(step => step.Kind == ShellStepKind.Code).ToArray());
        int next = 0;
        foreach (ShellStep step in options.Steps)
        {
            if (step.Kind == ShellStepKind.Uri)
            {
                if (!Connect(handle!, step.Text, reporter))
                    return 1;
                continue;
            }
            Submission submission = compiled[next++].GetAwaiter().GetResult();
            if (submission.Errors.Count > 0)
            {
                ErrorReporter.CompileErrors(submission.Errors);
                return 1;
            }
            SubmissionResult result = session.Run(submission);
            if (result.Exception != null)
            {
                reporter.Exception(result.Exception);
                return 1;
            }
            if (result.Value != null)
                Console.Out.WriteLine(result.Value);
        }
        return 0;
    }

    /// <summary><c>-u URI</c>: connects the handle, or reports why it could not.</summary>
    private static bool Connect(NbdHandle handle, string uri, ErrorReporter reporter)
    {
        try
        {
            handle.ConnectUri(uri);
            return true;
        }
        catch (NbdException e)
        {
            reporter.Exception(e);
            return false;
        }
    }

    /// <summary>
    /// Compiles <paramref name="steps"/> one after the other, each as the submission after the one before, on a thread
    /// of the pool; a step whose code does not compile ends the chain (the ones after it are never run).
    /// </summary>
    private static Task<Submission>[] CompileAll(ScriptSession session, ShellStep[] steps)
    {
        var results = new TaskCompletionSource<Submission>[steps.Length];
        for (int i = 0; i < steps.Length; i++)
            results[i] = new TaskCompletionSource<Submission>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = Task.Run(() =>
        {
            Submission? previous = null;
            for (int i = 0; i < steps.Length; i++)
            {
                try
                {
                    previous = session.Prepare(steps[i].Text, steps[i].Source, previous);
                }
#pragma warning disable CA1031 // Whatever the compiler throws belongs to the step that is waited for.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    results[i].SetException(e);
                    return;
                }
                results[i].SetResult(previous);
                if (previous.Errors.Count > 0)
                    return;
            }
        });
        return results.Select(result => result.Task).ToArray();
    }
}

/// <summary>How nbdsh reports what went wrong: one line on stderr (the stack trace too with <c>-v</c>).</summary>
internal sealed class ErrorReporter(bool verbose)
{
    /// <summary>The compiler's diagnostics, each with its line and column.</summary>
    public static void CompileErrors(IReadOnlyList<string> errors)
    {
        foreach (string error in errors)
            Console.Error.WriteLine(ShellCommandLine.Program + ": " + error);
    }

    /// <summary>What a piece of code threw: its message (and an NbdException's errno name), or everything with -v.</summary>
    public void Exception(Exception exception)
    {
        Console.Out.Flush();
        Console.Error.WriteLine(ShellCommandLine.Program + ": " + Describe(exception).ReplaceLineEndings(" "));
        if (verbose)
            Console.Error.WriteLine(exception.ToString());
    }

    private static string Describe(Exception exception) => exception switch
    {
        NbdException nbd => nbd.Message + " (" + Errno.Name(nbd.Errno) + ")",
        _ => exception.GetType().Name + ": " + exception.Message,
    };
}
