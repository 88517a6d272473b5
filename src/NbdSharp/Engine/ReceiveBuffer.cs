using System;
using System.Buffers;
using System.Buffers.Binary;
using System.Threading;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>
/// What the reader has received and not yet consumed: one <c>recv</c> into a 64 KiB buffer usually brings many
/// replies, which are parsed in place; payload remainders of 32 KiB or more go straight into the caller's memory.
/// 64 KiB holds fifteen 4 KiB read replies; 256 KiB measured no faster at 16 or 64 requests in flight, and a
/// connection's buffer is touched whole sooner or later, so it counts in the process's memory (docs/benchmarks.md).
/// After such a large payload the next header is read with a small <c>recv</c>, so that the bulk of the next reply's
/// data is not received here only to be copied out again. Used only by the thread holding the reader role.
/// </summary>
internal sealed unsafe class ReceiveBuffer
{
    private const int Size = 64 * 1024;

    /// <summary>Payload remainders at least this large are received straight into the destination.</summary>
    private const int DirectReceiveThreshold = 32 * 1024;

    /// <summary>
    /// The most one <c>recv</c> brings into the buffer right after a large payload: the next reply's header and a
    /// little more, not the bulk of its data (which would then be copied out). 4 KiB measured best of 1 to 256 KiB:
    /// 5-9 % less CPU on a dense copy, for one more <c>recv</c> per large reply.
    /// </summary>
    private const int SmallFill = 4096;

    private readonly Transport.Transport _transport;

    /// <summary>Rented from the shared pool (a connection costs no large allocation) and returned on <see cref="Release"/>.</summary>
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(Size);
    private int _start;
    private int _end;
    private long _bytesReceived;

    /// <summary>How much one <c>recv</c> into the buffer may bring: <see cref="SmallFill"/> while large payloads come.</summary>
    private int _fillLimit = Size;

    /// <param name="transport">Where the bytes come from.</param>
    /// <param name="leftover">Bytes the handshake read past its end: the start of the first reply.</param>
    public ReceiveBuffer(Transport.Transport transport, ReadOnlySpan<byte> leftover)
    {
        _transport = transport;
        leftover.CopyTo(_buffer);
        _end = leftover.Length;
    }

    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    public int Capacity => _buffer.Length;

    public bool HasData => _end > _start;

    /// <summary>The buffered bytes not yet consumed.</summary>
    public ReadOnlySpan<byte> Available => _buffer.AsSpan(_start, _end - _start);

    /// <summary>Whether a whole reply header is buffered, so that reading it will not block (the framing: its size follows from its magic).</summary>
    public bool HasWholeHeader
    {
        get
        {
            int available = _end - _start;
            if (available < 4)
                return false;
            return available >= ReplyFraming.HeaderSize(BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start)));
        }
    }

    /// <summary>Consumes <paramref name="count"/> buffered bytes (the caller has made them available).</summary>
    public void Consume(int count) => _start += count;

    /// <summary>
    /// Makes at least <paramref name="count"/> bytes available. At a message boundary a clean end of stream returns
    /// false; anywhere else it is an error.
    /// </summary>
    public bool FillAtLeast(int count, bool atMessageBoundary = false)
    {
        while (_end - _start < count)
        {
            if (_start == _end)
            {
                _start = 0;
                _end = 0;
            }
            else if (_buffer.Length - _start < count)
            {
                int buffered = _end - _start;
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, buffered);
                _start = 0;
                _end = buffered;
            }
            int room = Math.Min(_buffer.Length - _end, Math.Max(_fillLimit, count - (_end - _start)));
            int received = _transport.Receive(_buffer.AsSpan(_end, room));
            if (received == 0)
            {
                if (atMessageBoundary && _end == _start)
                    return false;
                throw new TransportException(Errno.ENOTCONN, "server disconnected in the middle of a reply");
            }
            _end += received;
            Interlocked.Add(ref _bytesReceived, received);
        }
        return true;
    }

    /// <summary>
    /// Receives what has arrived into the buffer without waiting (<see cref="Transport.Transport.TryReceive"/>): true
    /// when there is something to process (bytes, or the end of the stream, which the next fill reports).
    /// </summary>
    public bool TryFill()
    {
        if (_start != _end)
            return true;
        _start = 0;
        _end = 0;
        int received = _transport.TryReceive(_buffer.AsSpan(0, Math.Min(_buffer.Length, _fillLimit)));
        if (received < 0)
            return false;
        _end = received;
        Interlocked.Add(ref _bytesReceived, received);
        return true;
    }

    /// <summary>Copies what is buffered, then receives large remainders straight into the destination.</summary>
    public void ReceiveInto(byte* destination, ulong length)
    {
        _fillLimit = length >= DirectReceiveThreshold ? SmallFill : Size;
        while (length > 0)
        {
            int available = _end - _start;
            if (available > 0)
            {
                int take = (int)Math.Min((ulong)available, length);
                _buffer.AsSpan(_start, take).CopyTo(new Span<byte>(destination, take));
                _start += take;
                destination += take;
                length -= (ulong)take;
                continue;
            }
            if (length >= DirectReceiveThreshold)
            {
                int received = _transport.Receive(new Span<byte>(destination, (int)Math.Min(length, int.MaxValue)));
                if (received == 0)
                    throw new TransportException(Errno.ENOTCONN, "server disconnected in the middle of a reply");
                Interlocked.Add(ref _bytesReceived, received);
                destination += received;
                length -= (ulong)received;
            }
            else
            {
                FillAtLeast(1);
            }
        }
    }

    /// <summary>Receives <paramref name="destination"/>.Length bytes into it.</summary>
    public void ReceiveInto(Span<byte> destination)
    {
        fixed (byte* p = destination)
            ReceiveInto(p, (ulong)destination.Length);
    }

    /// <summary>Consumes and discards <paramref name="length"/> bytes.</summary>
    public void Skip(ulong length)
    {
        while (length > 0)
        {
            FillAtLeast(1);
            int take = (int)Math.Min((ulong)(_end - _start), length);
            _start += take;
            length -= (ulong)take;
        }
    }

    /// <summary>
    /// Gives the buffer back to the pool. Only when no thread can be reading any more: memory still in use must not
    /// be reused.
    /// </summary>
    public void Release()
    {
        byte[] buffer = _buffer;
        _buffer = [];
        _start = _end = 0;
        if (buffer.Length > 0)
            ArrayPool<byte>.Shared.Return(buffer);
    }
}
