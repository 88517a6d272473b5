using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A transport over a full-duplex <see cref="Stream"/>: a TLS stream (<see cref="System.Net.Security.SslStream"/>, or
/// BouncyCastle's for TLS-PSK) over the socket, or an in-memory pipe. One receive and one send may run at once.
/// A send that must not block writes one TLS record once the socket beneath reports room (<see cref="TrySend"/>); a
/// sender that may block writes everything at once, with a reader running meanwhile (<see cref="PrefersBlockingSend"/>).
/// </summary>
/// <remarks>
/// A TLS stream holds decrypted bytes that poll(2) on the socket cannot see, so waiting for readability with a
/// timeout (<see cref="WaitReadable"/>, for <c>Poll</c>) starts a read into a look-ahead buffer and waits for it;
/// the next receive takes those bytes first. Only the thread holding the reader role does either.
/// </remarks>
internal sealed class StreamTransport : Transport
{
    private const int LookAheadSize = 16 * 1024;

    /// <summary>Up to this size a header and its payload are copied together before a blocking write.</summary>
    private const int CombineLimit = 64 * 1024;

    private readonly Stream _stream;
    private readonly Transport? _inner;
    private readonly Func<ValueTask>? _closeWrites;
    private Task<int>? _pendingRead;
    private byte[]? _lookAhead;
    private byte[]? _combined;
    private int _aheadStart;
    private int _aheadEnd;
    private int _shutdown;

    /// <param name="stream">The stream, owned by this transport.</param>
    /// <param name="description">What the stream is, for debug messages (e.g. the TLS version and cipher suite).</param>
    /// <param name="inner">A transport under the stream (e.g. the socket under TLS), shut down and disposed with it.</param>
    /// <param name="closeWrites">Starts ending the stream's sending side cleanly (TLS close_notify); the inner half-close follows it.</param>
    public StreamTransport(Stream stream, string description, Transport? inner = null, Func<ValueTask>? closeWrites = null)
    {
        _stream = stream;
        Description = description;
        _inner = inner;
        _closeWrites = closeWrites;
    }

    public Stream Stream => _stream;

    public override string Description { get; }

    public override int FileDescriptor => _inner?.FileDescriptor ?? -1;

    public override bool PrefersBlockingSend => true;

    public override int Receive(Span<byte> buffer)
    {
        if (TakeLookAhead(buffer, out int taken))
            return taken;
        try
        {
            return _stream.Read(buffer);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            throw Translate("recv", e);
        }
    }

    public override async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (_pendingRead != null)
            await _pendingRead.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (TakeLookAhead(buffer.Span, out int taken))
            return taken;
        try
        {
            return await _stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            throw Translate("recv", e);
        }
    }

    /// <summary>Copies look-ahead bytes (finishing a pending look-ahead read first); false when there are none.</summary>
    private bool TakeLookAhead(Span<byte> buffer, out int taken)
    {
        taken = 0;
        if (_pendingRead is { } pending)
        {
            _pendingRead = null;
            int n;
            try
            {
                n = pending.GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
            {
                throw Translate("recv", e);
            }
            _aheadStart = 0;
            _aheadEnd = n;
            if (n == 0)
                return true; // end of stream
        }
        if (_aheadEnd == _aheadStart)
            return false;
        taken = Math.Min(buffer.Length, _aheadEnd - _aheadStart);
        _lookAhead.AsSpan(_aheadStart, taken).CopyTo(buffer);
        _aheadStart += taken;
        return true;
    }

    public override bool WaitReadable(int timeoutMs)
    {
        if (_aheadEnd > _aheadStart)
            return true;
        StartLookAhead();
        // A finished read (data, end of stream or an error) means a receive will not block.
        return ((IAsyncResult)_pendingRead!).AsyncWaitHandle.WaitOne(timeoutMs);
    }

    private void StartLookAhead()
    {
        if (_pendingRead != null)
            return;
        _lookAhead ??= new byte[LookAheadSize];
        _aheadStart = _aheadEnd = 0;
        _pendingRead = _stream.ReadAsync(_lookAhead, 0, _lookAhead.Length);
    }

    /// <summary>
    /// Once the socket beneath reports room, writes one TLS record of <paramref name="first"/> then
    /// <paramref name="second"/> (at most <see cref="Transport.SmallSend"/> bytes); 0 while it has none.
    /// </summary>
    public override int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        if (_inner != null && !_inner.WaitWritable(0))
            return 0;
        int total = Math.Min(first.Length + second.Length, SmallSend);
        if (total == 0)
            return 0;
        _combined ??= new byte[CombineLimit];
        int fromFirst = Math.Min(first.Length, total);
        first[..fromFirst].CopyTo(_combined);
        second[..(total - fromFirst)].CopyTo(_combined.AsSpan(fromFirst));
        Send(_combined.AsSpan(0, total));
        return total;
    }

    public override bool WaitWritable(int timeoutMs) => _inner?.WaitWritable(timeoutMs) ?? true;

    /// <summary>
    /// Readable means the look-ahead read has data (a TLS stream may hold records the socket no longer shows), writable
    /// that the socket beneath has room. Both are watched in slices of 10 ms: this wait happens only while a send waits
    /// for room, which is rare.
    /// </summary>
    public override (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs)
    {
        long deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        while (true)
        {
            bool readable = WaitReadable(0);
            bool writable = WaitWritable(0);
            if (readable || writable)
                return (readable, writable);
            long remaining = deadline - Environment.TickCount64;
            if (remaining <= 0)
                return (false, false);
            int slice = (int)Math.Min(10, remaining);
            if (WaitReadable(slice))
                return (true, WaitWritable(0));
        }
    }

    /// <summary>A request header and a small payload go out as one write (one TLS record, not two).</summary>
    public override void Send(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        int total = first.Length + second.Length;
        if (second.IsEmpty || first.IsEmpty || total > CombineLimit)
        {
            base.Send(first, second);
            return;
        }
        _combined ??= new byte[CombineLimit];
        first.CopyTo(_combined);
        second.CopyTo(_combined.AsSpan(first.Length));
        Send(_combined.AsSpan(0, total));
    }

    public override void Send(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
            return;
        try
        {
            _stream.Write(data);
            _stream.Flush();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            throw Translate("send", e);
        }
    }

    public override async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            await _stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            throw Translate("send", e);
        }
    }

    /// <summary>Keeps the errno of a transport failure under the stream; anything else is EIO.</summary>
    private static TransportException Translate(string call, Exception e)
    {
        for (Exception? inner = e; inner != null; inner = inner.InnerException)
        {
            if (inner is TransportException transport)
                return new TransportException(transport.Errno, transport.Message, e);
            if (inner is System.Net.Sockets.SocketException socket)
                return new TransportException(SocketErrors.ToErrno(socket), call + ": " + socket.Message, e);
        }
        return e is ObjectDisposedException
            ? new TransportException(Errno.ENOTCONN, call + ": connection closed", e)
            : new TransportException(Errno.EIO, call + ": " + e.Message, e);
    }

    /// <summary>
    /// Says goodbye to TLS (close_notify), then half-closes the socket beneath: without waiting, as the close_notify
    /// may be written asynchronously, so that a synchronous call never waits on the thread pool for it.
    /// </summary>
    public override void ShutdownSend()
    {
        if (Interlocked.Exchange(ref _shutdown, 1) != 0)
            return;
        ValueTask closing = default;
        try
        {
            closing = _closeWrites?.Invoke() ?? default;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The peer may already be gone; the half-close below still tells it we are done.
        }
        if (!closing.IsCompleted)
        {
            closing.AsTask().ContinueWith(static (t, inner) =>
            {
                _ = t.Exception;
                ((Transport?)inner)?.ShutdownSend();
            }, _inner, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            return;
        }
        try
        {
            closing.GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
        }
        _inner?.ShutdownSend();
    }

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
            try
            {
                _stream.Dispose();
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
            {
                // A TLS stream may try to say goodbye on a connection that is already gone.
            }
            _pendingRead?.ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
            _inner?.Dispose();
        }
    }
}
