using System;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A connected, reliable byte stream to the server. Receiving and sending may run at the same time on two
/// threads; each direction has at most one user at a time. Failures are thrown as <see cref="TransportException"/>.
/// </summary>
internal abstract class Transport : IDisposable
{
    /// <summary>Receives at least one byte, blocking; returns 0 at end of stream.</summary>
    public abstract int Receive(Span<byte> buffer);

    /// <summary>Receives at least one byte; returns 0 at end of stream.</summary>
    public abstract ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Sends every byte, blocking.</summary>
    public abstract void Send(ReadOnlySpan<byte> data);

    /// <summary>Sends every byte.</summary>
    public abstract ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>
    /// Sends as many bytes as the transport takes without blocking and returns their number (0 when it would
    /// block), or -1 when this transport cannot send without blocking.
    /// </summary>
    public virtual int TrySend(ReadOnlySpan<byte> data) => -1;

    /// <summary>Whether <see cref="WaitReadable"/> and <see cref="WaitWritable"/> work.</summary>
    public virtual bool CanPoll => false;

    /// <summary>
    /// Waits until a receive would not block (data, end of stream or an error), at most
    /// <paramref name="timeoutMs"/> milliseconds (-1 = forever). Returns false on timeout.
    /// </summary>
    public virtual bool WaitReadable(int timeoutMs) => true;

    /// <summary>Waits until a send would make progress, at most <paramref name="timeoutMs"/> milliseconds.</summary>
    public virtual bool WaitWritable(int timeoutMs) => true;

    /// <summary>Waits until a receive or a send would make progress; says which (both false on timeout).</summary>
    public virtual (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs) => (false, true);

    /// <summary>Tells the server nothing more will be sent (half-close).</summary>
    public abstract void ShutdownSend();

    /// <summary>Stops the connection in both directions, waking any blocked receive or send.</summary>
    public abstract void Abort();

    /// <summary>The file descriptor of the underlying socket, or -1.</summary>
    public virtual int FileDescriptor => -1;

    /// <summary>Releases the connection.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the connection.</summary>
    protected abstract void Dispose(bool disposing);
}

/// <summary>A transport failure, with the errno that describes it.</summary>
internal sealed class TransportException : Exception
{
    public TransportException(int errno, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Errno = errno;
    }

    public TransportException()
        : this(NbdSharp.Errno.EIO, "transport failure")
    {
    }

    public TransportException(string message)
        : this(NbdSharp.Errno.EIO, message)
    {
    }

    public TransportException(string message, Exception innerException)
        : this(NbdSharp.Errno.EIO, message, innerException)
    {
    }

    public int Errno { get; }
}
