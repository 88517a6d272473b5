using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A transport over any full-duplex <see cref="Stream"/> (for example an <see cref="System.Net.Security.SslStream"/>
/// or an in-memory pipe). It cannot send without blocking, so the engine keeps a reader running while it sends.
/// </summary>
internal sealed class StreamTransport : Transport
{
    private readonly Stream _stream;
    private readonly Transport? _inner;

    /// <param name="stream">The stream, owned by this transport.</param>
    /// <param name="inner">A transport under the stream (e.g. the socket under TLS), shut down and disposed with it.</param>
    public StreamTransport(Stream stream, Transport? inner = null)
    {
        _stream = stream;
        _inner = inner;
    }

    public Stream Stream => _stream;

    public override int FileDescriptor => _inner?.FileDescriptor ?? -1;

    public override int Receive(Span<byte> buffer)
    {
        try
        {
            return _stream.Read(buffer);
        }
        catch (IOException e)
        {
            throw Translate("recv", e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "recv: connection closed", e);
        }
    }

    public override async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            return await _stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            throw Translate("recv", e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "recv: connection closed", e);
        }
    }

    public override void Send(ReadOnlySpan<byte> data)
    {
        try
        {
            _stream.Write(data);
            _stream.Flush();
        }
        catch (IOException e)
        {
            throw Translate("send", e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "send: connection closed", e);
        }
    }

    public override async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            await _stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            throw Translate("send", e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "send: connection closed", e);
        }
    }

    private static TransportException Translate(string call, IOException e) =>
        e.InnerException is System.Net.Sockets.SocketException se
            ? new TransportException(SocketErrors.ToErrno(se), call + ": " + se.Message, e)
            : new TransportException(Errno.EIO, call + ": " + e.Message, e);

    public override void ShutdownSend() => _inner?.ShutdownSend();

    public override void Abort()
    {
        if (_inner != null)
            _inner.Abort();
        else
            _stream.Dispose();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner?.Abort();
            _stream.Dispose();
            _inner?.Dispose();
        }
    }
}
