using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
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
        var reporter = new ErrorReporter(options.Verbose);
        if (options.Interactive)
        {
            foreach (ShellStep step in options.Steps)
            {
                if (!Connect(handle!, step.Text, reporter))
                    return 1;
            }
            return new Repl(new ScriptSession(globals), reporter, handle != null).Run();
        }

        ShellStep[] code = options.Steps.Where(step => step.Kind == ShellStepKind.Code).ToArray();
        ScriptCache? cache = ScriptCache.Open();
        string[]? keys = cache == null ? null : ScriptCache.Keys(code);
        CachedChain? cached = keys == null ? null : cache!.TryLoad(keys);
        if (cached != null && options.Verbose)
            Console.Error.WriteLine(ShellCommandLine.Program + ": debug: running code compiled by an earlier run, from " + cache!.Folder);
        return cached != null
            ? RunSteps(options.Steps, handle, reporter, (index, _) => cached.Run(index, globals))
            : RunCompiling(options.Steps, code, handle, reporter, new ScriptSession(globals, cache), keys);
    }

    /// <summary>
    /// Runs the command line's steps, compiling the code: compiling is most of a cold run's time (the compiler starting
    /// up), so it happens on another thread while the handle connects. What compiles goes into the cache under
    /// <paramref name="keys"/> when given.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int RunCompiling(IReadOnlyList<ShellStep> steps, ShellStep[] code, NbdHandle? handle, ErrorReporter reporter,
        ScriptSession session, string[]? keys)
    {
        Task<Submission>[] compiled = CompileAll(session, code, keys);
        return RunSteps(steps, handle, reporter, (index, errors) =>
        {
            Submission submission = compiled[index].GetAwaiter().GetResult();
            if (submission.Errors.Count > 0)
            {
                errors.AddRange(submission.Errors);
                return null;
            }
            return session.Run(submission);
        });
    }

    /// <summary>
    /// Runs <paramref name="steps"/> in order: connects for a URI, and for code calls <paramref name="run"/> with its
    /// index among the code steps (which fills in the compiler's errors and returns null when it did not compile).
    /// </summary>
    private static int RunSteps(IReadOnlyList<ShellStep> steps, NbdHandle? handle, ErrorReporter reporter,
        Func<int, List<string>, SubmissionResult?> run)
    {
        int next = 0;
        var errors = new List<string>();
        foreach (ShellStep step in steps)
        {
            if (step.Kind == ShellStepKind.Uri)
            {
                if (!Connect(handle!, step.Text, reporter))
                    return 1;
                continue;
            }
            SubmissionResult? result = run(next++, errors);
            if (result == null)
            {
                ErrorReporter.CompileErrors(errors);
                return 1;
            }
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

    /// <summary>
    /// <c>-u URI</c>: connects the handle, or reports why it could not. Like libnbd's nbdsh (1.22's python/nbdsh.py
    /// calls connect_uri and nothing else), local files in the URI (<c>tls-psk-file</c>) stay refused unless the
    /// code calls <see cref="NbdHandle.SetUriAllowLocalFile"/> and connects itself.
    /// </summary>
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
    /// of the pool; a step whose code does not compile ends the chain (the ones after it are never run). Each one
    /// that compiles is cached under its key in <paramref name="keys"/>, when given.
    /// </summary>
    private static Task<Submission>[] CompileAll(ScriptSession session, ShellStep[] steps, string[]? keys)
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
                    previous = session.Prepare(steps[i].Text, steps[i].Source, previous, keys?[i]);
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
