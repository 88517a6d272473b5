using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A <see cref="Stream"/> over a <see cref="Transport"/>, for a TLS implementation to run on. It does not own the
/// transport: disposing the stream leaves the connection to whoever wraps it.
/// </summary>
internal sealed class TransportStream(Transport transport) : DuplexStream
{
    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        try
        {
            return buffer.IsEmpty ? 0 : transport.Receive(buffer);
        }
        catch (TransportException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        try
        {
            return buffer.IsEmpty ? 0 : await transport.ReceiveAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (TransportException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        try
        {
            transport.Send(buffer);
        }
        catch (TransportException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        try
        {
            await transport.SendAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (TransportException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
