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

    /// <summary>
    /// Receives what has arrived without waiting: the number of bytes, 0 at end of stream, or -1 when nothing has
    /// arrived, so that a caller told the socket is readable (an event loop's notify) need not ask the kernel twice.
    /// Only where <see cref="CanTryReceive"/> says so.
    /// </summary>
    public virtual int TryReceive(Span<byte> buffer) => throw new NotSupportedException();

    /// <summary>Whether <see cref="TryReceive"/> is available (a socket read with libc); elsewhere a caller asks <see cref="WaitReadable"/> with no wait first.</summary>
    public virtual bool CanTryReceive => false;

    /// <summary>Receives at least one byte; returns 0 at end of stream.</summary>
    public abstract ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Sends every byte, blocking.</summary>
    public abstract void Send(ReadOnlySpan<byte> data);

    /// <summary>Sends every byte of <paramref name="first"/> then <paramref name="second"/>, blocking.</summary>
    public virtual void Send(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        Send(first);
        Send(second);
    }

    /// <summary>Sends every byte.</summary>
    public abstract ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>
    /// Takes as many bytes of <paramref name="first"/> and then <paramref name="second"/> as the transport can
    /// without blocking and returns their number: 0 when it can take nothing now (<see cref="WaitWritable"/> says
    /// when it can). Never blocks. The bytes taken are the transport's: the caller may reuse its buffers at once.
    /// </summary>
    public abstract int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second);

    /// <summary>
    /// The most bytes a transport that cannot try a send (a TLS stream; a socket where libc is not called directly)
    /// sends at once when its socket reports room: one TLS record. The kernel reports room only when a good part of
    /// the socket's buffer is free (three quarters of it for a Unix socket, a third for TCP), so such a send does not
    /// wait in practice.
    /// </summary>
    protected const int SmallSend = 16 * 1024 - 256;

    /// <summary>
    /// Whether a thread that must send everything should call <see cref="Send(ReadOnlySpan{byte}, ReadOnlySpan{byte})"/> (with a reader running meanwhile)
    /// rather than loop on <see cref="TrySend"/>: true where <see cref="TrySend"/> sends in small pieces (a TLS
    /// stream), so that a large payload goes out in one write.
    /// </summary>
    public virtual bool PrefersBlockingSend => false;

    /// <summary>
    /// Roughly how many more bytes a send takes at once without waiting (half the send buffer less what is queued in
    /// it, which leaves room for the kernel's own overhead), or -1 where the transport cannot tell.
    /// </summary>
    public virtual int RoomToSend() => -1;

    /// <summary>
    /// Waits until a receive would not block (data, end of stream or an error), at most
    /// <paramref name="timeoutMs"/> milliseconds (-1 = forever). Returns false on timeout.
    /// </summary>
    public abstract bool WaitReadable(int timeoutMs);

    /// <summary>Waits until <see cref="TrySend"/> would take something, at most <paramref name="timeoutMs"/> milliseconds.</summary>
    public abstract bool WaitWritable(int timeoutMs);

    /// <summary>Waits until a receive or a send would make progress; says which (both false on timeout).</summary>
    public abstract (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs);

    /// <summary>Tells the server nothing more will be sent (half-close), after whatever <see cref="TrySend"/> took.</summary>
    public abstract void ShutdownSend();

    /// <summary>Stops the connection in both directions, waking any blocked receive or send.</summary>
    public abstract void Abort();

    /// <summary>The file descriptor of the underlying socket, or -1.</summary>
    public virtual int FileDescriptor => -1;

    /// <summary>What the transport is, for debug messages (e.g. the TLS version and cipher suite), or "".</summary>
    public virtual string Description => "";

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
