using System;
using System.IO;
using System.Threading;

namespace NbdSharp.Testing;

/// <summary>nbdkit's log filter (<c>--filter=log ... PLUGIN ... logfile=FILE</c>), read to wait for what a server has done.</summary>
public static class ServerLog
{
    /// <summary>The option that adds the filter (among the options, before the plugin).</summary>
    public const string Filter = "--filter=log";

    /// <summary>The filter's parameter that logs every request to <paramref name="file"/> (after the plugin).</summary>
    public static string Parameter(string file) => "logfile=" + file;

    /// <summary>
    /// Waits until the log holds a line with <paramref name="text"/> (e.g. <c>" Read "</c>: a client is reading), at most
    /// <paramref name="timeout"/>; true once it does.
    /// </summary>
    public static bool WaitFor(string file, string text, TimeSpan timeout) =>
        SpinWait.SpinUntil(() => Contains(file, text), timeout);

    private static bool Contains(string file, string text)
    {
        try
        {
            using var reader = new StreamReader(new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            return reader.ReadToEnd().Contains(text, StringComparison.Ordinal);
        }
        catch (FileNotFoundException)
        {
            return false;
        }
    }
}
