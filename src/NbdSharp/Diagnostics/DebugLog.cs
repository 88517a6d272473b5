using System;
using Microsoft.Extensions.Logging;

namespace NbdSharp.Diagnostics;

/// <summary>
/// libnbd-style debug messages of one handle: off by default (on when <c>LIBNBD_DEBUG=1</c>), written to
/// stderr as <c>libnbd: debug: NAME: CONTEXT: MESSAGE</c>, or to a <see cref="DebugCallback"/>, or to an
/// <see cref="ILogger"/>. Callers check <see cref="Enabled"/> before building a message, so a disabled log
/// costs one field read.
/// </summary>
internal sealed class DebugLog
{
    private volatile bool _enabled;
    private volatile DebugCallback? _callback;
    private volatile ILogger? _logger;

    public DebugLog(string handleName)
    {
        HandleName = handleName;
        _enabled = Environment.GetEnvironmentVariable("LIBNBD_DEBUG") == "1";
    }

    public bool Enabled
    {
        get => _enabled;
        set => _enabled = value;
    }

    public string HandleName { get; set; }

    public DebugCallback? Callback
    {
        get => _callback;
        set => _callback = value;
    }

    public ILogger? Logger
    {
        get => _logger;
        set => _logger = value;
    }

    /// <summary>Forgets the callback and the logger and stays silent from now on (the handle is being closed).</summary>
    public void Close()
    {
        _enabled = false;
        _callback = null;
        _logger = null;
    }

    /// <summary>Emits a message if debugging is on. Never throws: a failing callback is ignored.</summary>
    public void Write(string context, string message)
    {
        if (!_enabled)
            return;
        ILogger? logger = _logger;
        if (logger != null)
        {
            LogMessages.Debug(logger, HandleName, context, message);
            return;
        }
        DebugCallback? callback = _callback;
        if (callback != null)
        {
            try
            {
                callback(context, message);
            }
#pragma warning disable CA1031 // A debug callback must not break the connection.
            catch (Exception)
#pragma warning restore CA1031
            {
            }
            return;
        }
        Console.Error.WriteLine("libnbd: debug: " + HandleName + ": " + context + ": " + message);
    }
}

/// <summary>Source-generated log messages.</summary>
internal static partial class LogMessages
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "{Handle}: {Context}: {Text}")]
    public static partial void Debug(ILogger logger, string handle, string context, string text);
}
