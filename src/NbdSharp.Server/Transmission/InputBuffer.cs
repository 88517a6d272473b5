using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server.Transmission;

/// <summary>
/// The receiving side of one client connection: a fixed buffer that batches small messages (option and request
/// headers) into few reads, and reads large payloads straight into their destination.
/// </summary>
internal sealed class InputBuffer(Stream stream, int capacity = 64 * 1024)
{
    private readonly byte[] _buffer = new byte[capacity];
    private int _start;
    private int _end;

    public Stream Stream { get; set; } = stream;

    /// <summary>How many received bytes have not been consumed yet.</summary>
    public int Buffered => _end - _start;

    /// <summary>The unconsumed bytes (at least what <see cref="EnsureAsync"/> made sure of).</summary>
    public ReadOnlySpan<byte> Span => _buffer.AsSpan(_start, _end - _start);

    /// <summary>Marks <paramref name="count"/> bytes consumed.</summary>
    public void Consume(int count) => _start += count;

    /// <summary>
    /// Makes at least <paramref name="count"/> (at most the capacity) bytes available. Returns false at end of stream
    /// before any byte of them; throws <see cref="EndOfStreamException"/> when the stream ends part way.
    /// </summary>
    public async ValueTask<bool> EnsureAsync(int count, CancellationToken cancellationToken)
    {
        if (_end - _start >= count)
            return true;
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        while (_end < count)
        {
            int n = await Stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                if (_end == 0)
                    return false;
                throw new EndOfStreamException("the client closed the connection in the middle of a message");
            }
            _end += n;
        }
        return true;
    }

    /// <summary>Fills <paramref name="destination"/> from buffered bytes first, then from the stream.</summary>
    public async ValueTask ReadExactlyAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        int fromBuffer = Math.Min(destination.Length, _end - _start);
        _buffer.AsSpan(_start, fromBuffer).CopyTo(destination.Span);
        _start += fromBuffer;
        if (fromBuffer < destination.Length)
            await Stream.ReadExactlyAsync(destination[fromBuffer..], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Reads and drops <paramref name="count"/> bytes.</summary>
    public async ValueTask SkipAsync(ulong count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            if (_end == _start && !await EnsureAsync(1, cancellationToken).ConfigureAwait(false))
                throw new EndOfStreamException("the client closed the connection in the middle of a payload");
            int take = (int)Math.Min(count, (ulong)(_end - _start));
            _start += take;
            count -= (ulong)take;
        }
    }
}
