using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.Extensions.Logging;

namespace NbdSharp.InteropTests.Server;

/// <summary>Keeps every line the server logs, so tests can see what it negotiated and why connections closed.</summary>
internal sealed class RecordingLogger : ILogger
{
    private readonly List<string> _lines = [];

    /// <summary>The lines so far.</summary>
    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_lines)
                return [.. _lines];
        }
    }

    /// <summary>All lines, one per line (for assertion messages).</summary>
    public override string ToString() => string.Join('\n', Lines);

    /// <summary>Waits until a line contains <paramref name="text"/>; false after <paramref name="timeout"/>.</summary>
    public bool WaitFor(string text, TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        lock (_lines)
        {
            while (true)
            {
                foreach (string line in _lines)
                {
                    if (line.Contains(text, StringComparison.Ordinal))
                        return true;
                }
                TimeSpan left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    return false;
                Monitor.Wait(_lines, left);
            }
        }
    }

    /// <summary>How many lines contain <paramref name="text"/>.</summary>
    public int Count(string text)
    {
        int n = 0;
        foreach (string line in Lines)
        {
            if (line.Contains(text, StringComparison.Ordinal))
                n++;
        }
        return n;
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        string line = logLevel + ": " + formatter(state, exception);
        lock (_lines)
        {
            _lines.Add(line);
            Monitor.PulseAll(_lines);
        }
    }
}
