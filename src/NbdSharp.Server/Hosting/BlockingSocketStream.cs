using System;
using System.IO;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;

namespace NbdSharp.Server.Hosting;

/// <summary>
/// A connected socket as a stream whose asynchronous calls block and complete at once, for a connection served by
/// its own thread (as nbdkit serves each connection): the reader sleeps in recv() and wakes straight into the next
/// request, with no hop through the socket engine and the thread pool. <see cref="Interrupt"/> ends a blocked read.
/// </summary>
internal sealed class BlockingSocketStream : DuplexStream
{
    private readonly Socket _socket;
    private int _interrupted;

    public BlockingSocketStream(Socket socket)
    {
        _socket = socket;
        _socket.Blocking = true;
    }

    /// <summary>The connection's socket.</summary>
    public Socket Socket => _socket;

    /// <summary>Makes a blocked (or the next) read return end of stream; the write side stays open for the last replies.</summary>
    public void Interrupt()
    {
        if (Interlocked.Exchange(ref _interrupted, 1) != 0)
            return;
        try
        {
            _socket.Shutdown(SocketShutdown.Receive);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed: a read fails anyway.
        }
    }

    /// <summary>
    /// Cuts the connection both ways: a read blocked in recv() sees end of stream and a write blocked in send() to a
    /// client that reads nothing fails, so the thread serving it is free again.
    /// </summary>
    public void Abort()
    {
        Interlocked.Exchange(ref _interrupted, 1);
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed.
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        try
        {
            return _socket.Receive(buffer, SocketFlags.None);
        }
        catch (SocketException e)
        {
            throw new IOException("recv: " + e.Message, e);
        }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled<int>(cancellationToken);
        try
        {
            return new ValueTask<int>(Read(buffer.Span));
        }
        catch (IOException e)
        {
            return ValueTask.FromException<int>(e);
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        try
        {
            while (!buffer.IsEmpty)
                buffer = buffer[_socket.Send(buffer, SocketFlags.None)..];
        }
        catch (SocketException e)
        {
            throw new IOException("send: " + e.Message, e);
        }
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }
        catch (IOException e)
        {
            return ValueTask.FromException(e);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _socket.Dispose();
        base.Dispose(disposing);
    }
}
