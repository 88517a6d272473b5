using System;
using Microsoft.Extensions.Logging;

namespace NbdSharp.Tools.Server;

/// <summary>nbdkit-style log lines on stderr: <c>nbdsharp-server: message</c>, from <paramref name="minimum"/> up.</summary>
internal sealed class StderrLogger(LogLevel minimum) : ILogger
{
    private readonly object _lock = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= minimum && logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
            return;
        string level = logLevel >= LogLevel.Error ? "error: " : logLevel == LogLevel.Warning ? "warning: " : "debug: ";
        string line = Program.Name + ": " + level + formatter(state, exception).ReplaceLineEndings(" ") + "\n";
        lock (_lock)
            Console.Error.Write(line);
    }
}
