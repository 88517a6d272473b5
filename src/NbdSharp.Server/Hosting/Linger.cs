using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server.Hosting;

/// <summary>
/// The end of a connection: cutting it, and reading out what the client still sends before closing. Closing a socket
/// whose receive queue holds unread bytes resets the connection, and the reset can overtake what was sent last.
/// </summary>
internal static class Linger
{
    /// <summary>How long a closing connection waits for the client's last bytes.</summary>
    public static readonly TimeSpan Time = TimeSpan.FromSeconds(2);

    /// <summary>The most it reads of them.</summary>
    public const int MaxBytes = 64 * 1024;

    /// <summary>
    /// Reads and drops what <paramref name="stream"/> delivers until it ends, <see cref="MaxBytes"/> have come or
    /// <see cref="Time"/> has passed (then the stream is cut). Never throws for the connection's end.
    /// </summary>
    public static async ValueTask DrainAsync(Stream stream, Memory<byte> scratch, CancellationToken cancellationToken)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        limit.CancelAfter(Time);
        // A stream that blocks does not see the token: cutting it ends the read.
        using CancellationTokenRegistration cut = limit.Token.Register(static s => Cut((Stream)s!), stream);
        try
        {
            for (int total = 0; total < MaxBytes;)
            {
                int n = await stream.ReadAsync(scratch, limit.Token).ConfigureAwait(false);
                if (n <= 0)
                    break;
                total += n;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or NotSupportedException)
        {
            // Closed, reset, or too slow: the connection is going away either way.
        }
    }

    /// <summary>Ends every read and write of a connection, blocked or not.</summary>
    public static void Cut(Stream stream)
    {
        if (stream is BlockingSocketStream blocking)
        {
            blocking.Abort();
            return;
        }
        try
        {
            stream.Dispose();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            // Closing a stream in use may complain; it is closed all the same.
        }
    }
}
