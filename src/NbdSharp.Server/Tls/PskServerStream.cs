using System;
using System.Buffers;
using System.Buffers.Binary;
using System.IO;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server.Hosting;
using NbdSharp.Transport;
using Org.BouncyCastle.Tls;

namespace NbdSharp.Server.Tls;

/// <summary>
/// A server's TLS-PSK connection: BouncyCastle's TLS engine in its non-blocking mode (records in, records out, no I/O
/// of its own), with the transport's I/O done here. Asynchronous reads and writes stay asynchronous (or complete at
/// once over a transport that blocks, as the server's thread-per-connection sockets do), nothing holds a thread while
/// a client is idle, and one reader and one writer may work at the same time.
/// </summary>
/// <remarks>
/// <para>
/// Concurrency: one reader and one writer at a time, as <see cref="System.Net.Security.SslStream"/>. BouncyCastle's
/// protocol object is not safe for concurrent use (reading can produce records of its own: the answer to a
/// close_notify, fatal alerts), so every call into it holds <see cref="_engine"/>, which is never held across I/O.
/// Records leave the engine and reach the transport under <see cref="_sending"/>, held until the transport write has
/// completed, so they reach the client in the order the engine made them.
/// </para>
/// <para>
/// Reads return 0 at the client's close_notify, and also when the transport ends without one: to a server, a client
/// that vanished is simply gone. The write side stays usable after a transport end without close_notify (the server
/// shuts a socket's receive side to stop reading, and then sends its last replies).
/// </para>
/// </remarks>
internal sealed class PskServerStream : DuplexStream
{
    private const int HeaderLength = 5;

    /// <summary>The largest record TLS 1.2 allows (2^14 bytes of plaintext and 2048 of expansion); TLS 1.3's are smaller.</summary>
    private const int MaxRecord = HeaderLength + (1 << 14) + 2048;

    /// <summary>Plaintext given to the engine at once, so that a large write is not held encrypted in memory all at once.</summary>
    private const int WriteChunk = 4 << 14;

    private readonly Stream _transport;
    private readonly TlsServerProtocol _protocol = new();
    private readonly Lock _engine = new();
    private readonly SemaphoreSlim _sending = new(1, 1);

    // The reader's: ciphertext received and not yet given to the engine, which takes whole records only.
    private readonly byte[] _received = new byte[64 * 1024];
    private int _start;
    private int _end;
    private bool _inputEnded;
    private byte[]? _plain;

    private int _disposed;
    private bool _started;

    /// <summary>Whether a fatal alert was sent when the engine failed (none is sent before the TLS version is known).</summary>
    public bool AlertSent { get; private set; }

    public PskServerStream(Stream transport) => _transport = transport;

    /// <summary>Runs the server's side of the handshake.</summary>
    /// <exception cref="IOException">It failed (a <see cref="TlsException"/> for TLS's reasons), or the client left.</exception>
    public async ValueTask HandshakeAsync(PskServer server, CancellationToken cancellationToken)
    {
        lock (_engine)
        {
            _protocol.Accept(server);
            _started = true;
        }
        while (true)
        {
            await SendPendingAsync(async: true, cancellationToken).ConfigureAwait(false);
            lock (_engine)
            {
                if (_protocol.IsConnected)
                    return;
            }
            if (await OfferRecordAsync(async: true).ConfigureAwait(false))
                continue;
            if (!await ReceiveAsync(async: true, cancellationToken).ConfigureAwait(false))
                throw new EndOfStreamException("the client closed the connection during the TLS handshake");
        }
    }

    /// <summary>
    /// After a failed handshake, whose alert has been sent: reads and drops what the client sent meanwhile, until it
    /// closes (<see cref="Linger.DrainAsync"/>). Closing a socket with unread data resets the connection, and the reset can
    /// reach the client before the alert does (a TLS 1.2 client sends its key exchange and Finished in one flight):
    /// it would then only see "connection reset" instead of why (unknown_psk_identity).
    /// </summary>
    public ValueTask DrainAsync(CancellationToken cancellationToken) => Linger.DrainAsync(_transport, _received, cancellationToken);

    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    public override int Read(Span<byte> buffer)
    {
        if (buffer.IsEmpty || !SyncPath.Result(FillAsync(async: false, CancellationToken.None)))
            return 0;
        return TakeInput(buffer);
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty || !await FillAsync(async: true, cancellationToken).ConfigureAwait(false))
            return 0;
        if (MemoryMarshal.TryGetArray(buffer, out ArraySegment<byte> segment))
        {
            lock (_engine)
                return _protocol.ReadInput(segment.Array!, segment.Offset, segment.Count);
        }
        return TakeInput(buffer.Span);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        Write(buffer.AsSpan(offset, count));
    }

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (buffer.IsEmpty)
            return;
        _sending.Wait();
        try
        {
            while (!buffer.IsEmpty)
            {
                int chunk = Math.Min(buffer.Length, WriteChunk);
                lock (_engine)
                    _protocol.WriteApplicationData(buffer[..chunk]);
                SyncPath.Result(SendOutputAsync(async: false, CancellationToken.None));
                buffer = buffer[chunk..];
            }
        }
        finally
        {
            _sending.Release();
        }
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.IsEmpty)
            return;
        await _sending.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (!buffer.IsEmpty)
            {
                int chunk = Math.Min(buffer.Length, WriteChunk);
                lock (_engine)
                    _protocol.WriteApplicationData(buffer.Span[..chunk]);
                await SendOutputAsync(async: true, cancellationToken).ConfigureAwait(false);
                buffer = buffer[chunk..];
            }
        }
        finally
        {
            _sending.Release();
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    public override void Flush() => _transport.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => _transport.FlushAsync(cancellationToken);

    /// <summary>Sends a close_notify now (nothing may be written after it); reads stay possible below TLS.</summary>
    public async ValueTask CloseWritesAsync(CancellationToken cancellationToken)
    {
        lock (_engine)
        {
            if (!_started || _protocol.IsClosed)
                return;
            _protocol.Close();
        }
        await _sending.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await SendOutputAsync(async: true, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _sending.Release();
        }
    }

    /// <summary>Sends a close_notify if no write is under way (one may be stuck on a client that does not read), and closes the transport.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            try
            {
                lock (_engine)
                {
                    // (Before Accept the engine has no peer to close with.)
                    if (_started && !_protocol.IsClosed)
                        _protocol.Close();
                }
                if (_sending.Wait(0))
                {
                    try
                    {
                        SyncPath.Result(SendOutputAsync(async: false, CancellationToken.None));
                    }
                    finally
                    {
                        _sending.Release();
                    }
                }
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
            {
                // The connection is going away either way.
            }
            finally
            {
                _transport.Dispose();
            }
        }
        base.Dispose(disposing);
    }

    /// <summary>Reads until the engine holds application data (true), or the connection has ended (false).</summary>
    private async ValueTask<bool> FillAsync(bool async, CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_engine)
            {
                if (_protocol.GetAvailableInputBytes() > 0)
                    return true;
                if (_protocol.IsClosed)
                    return false;
            }
            if (_inputEnded)
                return false;
            if (await OfferRecordAsync(async).ConfigureAwait(false))
            {
                // Reading makes records to send only as the connection ends (the answer to a close_notify, an alert):
                // the client may not be listening any more.
                await TrySendPendingAsync(async).ConfigureAwait(false);
                continue;
            }
            if (!await ReceiveAsync(async, cancellationToken).ConfigureAwait(false))
            {
                // No close_notify: the client vanished, and for a server that is the end of the stream. The engine
                // stays open so that the last replies can still be sent.
                _inputEnded = true;
                return false;
            }
        }
    }

    private int TakeInput(Span<byte> destination)
    {
        byte[] plain = _plain ??= new byte[1 << 14];
        int n;
        lock (_engine)
            n = _protocol.ReadInput(plain, 0, Math.Min(plain.Length, destination.Length));
        plain.AsSpan(0, n).CopyTo(destination);
        return n;
    }

    /// <summary>
    /// Gives the engine the next whole record received, if there is one; a fatal alert it raises is sent (as far as
    /// possible) before its exception is thrown.
    /// </summary>
    private async ValueTask<bool> OfferRecordAsync(bool async)
    {
        int buffered = _end - _start;
        if (buffered < HeaderLength)
            return false;
        int length = BinaryPrimitives.ReadUInt16BigEndian(_received.AsSpan(_start + 3, 2));
        // An oversized record is given by its header alone, which the engine refuses (record_overflow).
        bool oversized = HeaderLength + length > MaxRecord;
        int size = oversized ? HeaderLength : HeaderLength + length;
        if (buffered < size)
            return false;
        try
        {
            lock (_engine)
                _protocol.OfferInput(_received, _start, size);
        }
        catch (IOException)
        {
            AlertSent |= await TrySendPendingAsync(async).ConfigureAwait(false);
            throw;
        }
        if (oversized)
            throw new IOException("a TLS record of " + length + " bytes is too large");
        _start += size;
        return true;
    }

    /// <summary>Reads more ciphertext from the transport; false at its end.</summary>
    private async ValueTask<bool> ReceiveAsync(bool async, CancellationToken cancellationToken)
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_received.Length - _end < MaxRecord)
        {
            // What is left is less than a record (else it would have been offered): room for a whole one.
            _received.AsSpan(_start, _end - _start).CopyTo(_received);
            _end -= _start;
            _start = 0;
        }
        int n = async
            ? await _transport.ReadAsync(_received.AsMemory(_end), cancellationToken).ConfigureAwait(false)
            : _transport.Read(_received, _end, _received.Length - _end);
        if (n <= 0)
            return false;
        _end += n;
        return true;
    }

    /// <summary>Sends what the engine has made, if anything, taking <see cref="_sending"/>; whether there was anything.</summary>
    private async ValueTask<bool> SendPendingAsync(bool async, CancellationToken cancellationToken)
    {
        lock (_engine)
        {
            if (_protocol.GetAvailableOutputBytes() == 0)
                return false;
        }
        if (async)
            await _sending.WaitAsync(cancellationToken).ConfigureAwait(false);
        else
            _sending.Wait(cancellationToken);
        try
        {
            return await SendOutputAsync(async, cancellationToken).ConfigureAwait(false) > 0;
        }
        finally
        {
            _sending.Release();
        }
    }

    /// <summary>As <see cref="SendPendingAsync"/>, for records of a connection that is ending: failing to send them is no error.</summary>
    private async ValueTask<bool> TrySendPendingAsync(bool async)
    {
        try
        {
            return await SendPendingAsync(async, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>Moves the engine's output to the transport; the caller holds <see cref="_sending"/>. Returns the bytes sent.</summary>
    private async ValueTask<int> SendOutputAsync(bool async, CancellationToken cancellationToken)
    {
        byte[] records;
        int n;
        lock (_engine)
        {
            n = _protocol.GetAvailableOutputBytes();
            if (n == 0)
                return 0;
            records = ArrayPool<byte>.Shared.Rent(n);
            _protocol.ReadOutput(records, 0, n);
        }
        try
        {
            if (async)
                await _transport.WriteAsync(records.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
            else
                _transport.Write(records, 0, n);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(records);
        }
        return n;
    }
}
