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

    /// <summary>Bytes <see cref="TrySend"/> may still write without looking at the socket again (under the writer).</summary>
    private int _budget;
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
    /// Writes TLS records of <paramref name="first"/> then <paramref name="second"/>, one record
    /// (<see cref="Transport.SmallSend"/> bytes at most) at a time, while the socket beneath has room for it (see
    /// <see cref="HasRoom"/>). Returns the bytes written, 0 when there is no room.
    /// </summary>
    public override int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        _combined ??= new byte[CombineLimit];
        int total = first.Length + second.Length;
        int sent = 0;
        while (sent < total)
        {
            int n = Math.Min(total - sent, SmallSend);
            if (!HasRoom(n, firstRecord: sent == 0))
                break;
            int fromFirst = Math.Clamp(first.Length - sent, 0, n);
            first.Slice(Math.Min(sent, first.Length), fromFirst).CopyTo(_combined);
            second.Slice(Math.Max(0, sent - first.Length), n - fromFirst).CopyTo(_combined.AsSpan(fromFirst));
            Write(_combined.AsSpan(0, n));
            _budget -= n + RecordOverhead;
            sent += n;
        }
        return sent;
    }

    /// <summary>What a TLS record adds to its plaintext, at most (header, tag, padding).</summary>
    private const int RecordOverhead = 64;

    /// <summary>Room kept free in the socket's buffer beyond what is written, for the kernel's own accounting.</summary>
    private const int Margin = 8 * 1024;

    /// <summary>
    /// Whether a record of <paramref name="n"/> bytes goes out without waiting. The socket's room
    /// (<see cref="Transport.RoomToSend"/>, a system call) is looked at only when the budget left from the last look is
    /// spent: the queue can only have shrunk since. Where the socket cannot tell, the first record of a call goes once
    /// the socket reports room, which the kernel does only with much of its buffer free.
    /// </summary>
    private bool HasRoom(int n, bool firstRecord)
    {
        if (_inner == null || _budget >= n + RecordOverhead)
            return true;
        int room = _inner.RoomToSend();
        if (room >= 0)
        {
            _budget = room - Margin;
            return _budget >= n + RecordOverhead;
        }
        return firstRecord && _inner.WaitWritable(0);
    }

    public override bool WaitWritable(int timeoutMs) => _inner?.WaitWritable(timeoutMs) ?? true;

    /// <summary>
    /// Readable once records arrive on the socket beneath (or the look-ahead read has data), writable once it has room:
    /// one poll(2) for both. A TLS stream may also hold a whole record the socket no longer shows; that one is read
    /// with the next arrival or once the server, taking our requests, makes room.
    /// </summary>
    public override (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs)
    {
        if (_aheadEnd > _aheadStart || _pendingRead is { IsCompleted: true })
            return (true, WaitWritable(0));
        return _inner?.WaitReadableOrWritable(timeoutMs) ?? (true, true);
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
        // A send that may wait spends room the budget of TrySend does not know about.
        _budget = 0;
        Write(data);
    }

    private void Write(ReadOnlySpan<byte> data)
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
