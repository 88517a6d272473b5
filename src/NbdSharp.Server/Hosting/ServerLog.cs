using System;
using Microsoft.Extensions.Logging;

namespace NbdSharp.Server;

/// <summary>The server's messages about one connection, tagged with its number; nothing is formatted unless enabled.</summary>
internal sealed partial class ServerLog(ILogger logger, long connection)
{
    public ILogger Logger { get; } = logger;

    public void Accepted(string peer) => LogAccepted(Logger, connection, peer);

    public void Refused(string reason) => LogRefused(Logger, connection, reason);

    public void Option(string option, int length) => LogOption(Logger, connection, option, length);

    public void OptionError(string option, string message) => LogOptionError(Logger, connection, option, message);

    public void TlsEstablished() => LogTls(Logger, connection);

    public void Transmission(string export, bool structured, bool extended) =>
        LogTransmission(Logger, connection, export, extended ? "extended" : structured ? "structured" : "simple");

    public void RequestError(string command, ulong offset, ulong length, string message) =>
        LogRequestError(Logger, connection, command, offset, length, message);

    public void Closed(string reason) => LogClosed(Logger, connection, reason);

    public void Failed(Exception e) => LogFailed(Logger, connection, e.Message, e);

    [LoggerMessage(EventId = 1, Level = LogLevel.Debug, Message = "connection {Connection}: accepted from {Peer}")]
    private static partial void LogAccepted(ILogger logger, long connection, string peer);

    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "connection {Connection}: closing: {Reason}")]
    private static partial void LogRefused(ILogger logger, long connection, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "connection {Connection}: option {Option} ({Length} bytes)")]
    private static partial void LogOption(ILogger logger, long connection, string option, int length);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "connection {Connection}: {Option}: {Message}")]
    private static partial void LogOptionError(ILogger logger, long connection, string option, string message);

    [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "connection {Connection}: TLS established")]
    private static partial void LogTls(ILogger logger, long connection);

    [LoggerMessage(EventId = 6, Level = LogLevel.Debug, Message = "connection {Connection}: serving export \"{Export}\" with {Replies} replies")]
    private static partial void LogTransmission(ILogger logger, long connection, string export, string replies);

    [LoggerMessage(EventId = 7, Level = LogLevel.Debug, Message = "connection {Connection}: {Command} at {Offset} length {Length}: {Message}")]
    private static partial void LogRequestError(ILogger logger, long connection, string command, ulong offset, ulong length, string message);

    [LoggerMessage(EventId = 8, Level = LogLevel.Debug, Message = "connection {Connection}: closed: {Reason}")]
    private static partial void LogClosed(ILogger logger, long connection, string reason);

    [LoggerMessage(EventId = 9, Level = LogLevel.Warning, Message = "connection {Connection}: {Message}")]
    private static partial void LogFailed(ILogger logger, long connection, string message, Exception exception);
}
