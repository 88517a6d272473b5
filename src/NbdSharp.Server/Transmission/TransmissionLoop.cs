using System;
using System.Buffers;
using System.Buffers.Binary;
using System.IO;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Protocol;
using NbdSharp.Server.Negotiation;

namespace NbdSharp.Server.Transmission;

/// <summary>
/// The transmission phase of one connection: one reader that checks each request header before reading or
/// allocating anything for it, requests carried out concurrently (an export that completes at once is served
/// inline by the reader), and replies written whole, one at a time, in the order requests complete. Every request
/// gets exactly one reply unless the connection breaks.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable",
    Justification = "After an abort, requests an export still runs may reply after RunAsync returns: the write lock must outlive it, and it holds no wait handle.")]
internal sealed class TransmissionLoop
{
    private static readonly byte[] Zeroes = new byte[1024 * 1024];

    /// <summary>
    /// Replies to requests served inline by the reader are gathered here and sent together, once the reader has
    /// no complete request left to parse (or the buffer is full): one send for many small replies.
    /// </summary>
    private const int CorkSize = 256 * 1024;

    private readonly Stream _stream;
    private readonly InputBuffer _input;
    private readonly NbdExport _export;
    private readonly TransmissionState _state;
    private readonly NbdServerOptions _options;
    private readonly ServerLog _log;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly InFlightBudget _budget;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationToken _abort;
    private readonly byte[] _cork = new byte[CorkSize];
    private int _corkLength;
    private bool _inline;
    private int _readerThread;
    private ExtentList? _spareExtents;
    private int _inFlight;
    private int _readerDone;
    private volatile bool _broken;

    public TransmissionLoop(Stream stream, InputBuffer input, Negotiated negotiated, NbdServerOptions options, ServerLog log,
        CancellationToken abort)
    {
        _stream = stream;
        _input = input;
        _export = negotiated.Export.Export;
        _options = options;
        _log = log;
        _abort = abort;
        _state = new TransmissionState(_export.Size, negotiated.Flags, negotiated.Export.BlockSize, negotiated.Structured, negotiated.Extended,
            negotiated.BaseAllocation);
        _budget = new InFlightBudget(options.MaxRequestsInFlight, options.MaxBytesInFlight);
    }

    /// <summary>Whether the client ended the session with NBD_CMD_DISC.</summary>
    public bool Disconnected { get; private set; }

    /// <summary>Serves requests until the client disconnects or <paramref name="stop"/> fires; returns why it ended.</summary>
    public async Task<string> RunAsync(CancellationToken stop)
    {
        int headerSize = _state.Extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize;
        string reason = "the client closed the connection";
        try
        {
            while (!_broken)
            {
                if (_input.Buffered < headerSize || _corkLength >= CorkSize / 2)
                    await FlushCorkAsync().ConfigureAwait(false);
                if (!await _input.EnsureAsync(headerSize, stop).ConfigureAwait(false))
                    break;
                if (!RequestHeader.TryRead(_input.Span, out RequestHeader header, out int size) || size != headerSize)
                {
                    reason = "bad request magic";
                    _log.Refused(reason);
                    break;
                }
                _input.Consume(size);
                RequestVerdict verdict = RequestRules.Check(header, _state, out ulong payload, out uint error, out string? message);
                if (verdict == RequestVerdict.Disconnect)
                {
                    reason = message ?? "protocol error";
                    _log.Refused(reason);
                    break;
                }
                if (verdict == RequestVerdict.Error)
                {
                    if (payload > 0)
                    {
                        await FlushCorkAsync().ConfigureAwait(false);
                        await _input.SkipAsync(payload, stop).ConfigureAwait(false);
                    }
                    _log.RequestError(NbdProtocol.CommandName(header.Type), header.Offset, header.Length, message ?? "");
                    await SendErrorAsync(header, error, message ?? "").ConfigureAwait(false);
                    continue;
                }
                if (header.Type == NbdCommand.Disconnect)
                {
                    reason = "the client disconnected";
                    Disconnected = true;
                    break;
                }

                long bytes = Cost(header, payload);
                ValueTask admitted = _budget.AcquireAsync(bytes);
                if (!admitted.IsCompleted)
                {
                    await FlushCorkAsync().ConfigureAwait(false);
                    // Requests whose replies a client does not read never finish: only an abort ends this wait then.
                    await admitted.AsTask().WaitAsync(_abort).ConfigureAwait(false);
                }
                Interlocked.Increment(ref _inFlight);
                byte[]? data = null;
                if (payload > 0)
                {
                    data = ArrayPool<byte>.Shared.Rent((int)payload);
                    try
                    {
                        if ((ulong)_input.Buffered < payload)
                            await FlushCorkAsync().ConfigureAwait(false);
                        await _input.ReadExactlyAsync(data.AsMemory(0, (int)payload), stop).ConfigureAwait(false);
                    }
                    catch
                    {
                        ArrayPool<byte>.Shared.Return(data);
                        Finish(bytes);
                        throw;
                    }
                }
                // Not awaited: _inFlight tracks it. An incomplete ValueTask from an async method is a Task underneath, so
                // dropping it is safe; one that completed at once (the usual case for a memory export) costs nothing.
                // While the request runs on this thread, its reply goes into the cork (see SendAsync).
                _readerThread = Environment.CurrentManagedThreadId;
                _inline = true;
#pragma warning disable CA2012
                _ = ExecuteAsync(header, data, bytes);
#pragma warning restore CA2012
                _inline = false;
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested || _abort.IsCancellationRequested)
        {
            reason = "the server is stopping";
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            reason = e.Message;
        }

        await FlushCorkAsync().ConfigureAwait(false);
        Volatile.Write(ref _readerDone, 1);
        if (Interlocked.CompareExchange(ref _inFlight, 0, 0) != 0)
        {
            try
            {
                await _drained.Task.WaitAsync(_abort).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Cut while requests still run (an export that ignores its token): they find the connection broken
                // when they finish, and their buffers go back to the pool then.
                _broken = true;
                return "the server is stopping: requests in flight were abandoned";
            }
        }
        if (_abort.IsCancellationRequested)
            return "the server is stopping";
        return _broken ? "the connection broke while replying" : reason;
    }

    /// <summary>
    /// What a request makes the server hold until its reply is sent: a read its data, a write its payload, a block
    /// status the largest reply it may build (descriptors and the extent list behind them).
    /// </summary>
    private long Cost(in RequestHeader header, ulong payload)
    {
        switch (header.Type)
        {
            case NbdCommand.Read:
                return (long)header.Length;
            case NbdCommand.BlockStatus:
                int extents = ((CommandFlags)header.Flags & CommandFlags.ReqOne) != 0 ? 1 : _options.MaxExtentsPerReply;
                int descriptor = _state.Extended ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
                // The list keeps a long and a uint per extent.
                return 64 + (long)extents * (descriptor + sizeof(long) + sizeof(uint));
            default:
                return (long)payload;
        }
    }

    private void Finish(long bytes)
    {
        _budget.Release(bytes);
        if (Interlocked.Decrement(ref _inFlight) == 0 && Volatile.Read(ref _readerDone) != 0)
            _drained.TrySetResult();
    }

    private async ValueTask ExecuteAsync(RequestHeader header, byte[]? data, long bytes)
    {
        try
        {
            var flags = (CommandFlags)header.Flags;
            bool fua = (flags & CommandFlags.Fua) != 0;
            long offset = (long)header.Offset;
            switch (header.Type)
            {
                case NbdCommand.Read:
                    await ReadAsync(header).ConfigureAwait(false);
                    return;
                case NbdCommand.Write:
                    await _export.WriteAsync(offset, data.AsMemory(0, (int)header.Length), fua, _abort).ConfigureAwait(false);
                    break;
                case NbdCommand.Flush:
                    await _export.FlushAsync(_abort).ConfigureAwait(false);
                    break;
                case NbdCommand.Trim:
                    await _export.TrimAsync(offset, (long)header.Length, fua, _abort).ConfigureAwait(false);
                    break;
                case NbdCommand.WriteZeroes:
                    await ZeroAsync(offset, (long)header.Length, flags).ConfigureAwait(false);
                    break;
                case NbdCommand.Cache:
                    await _export.CacheAsync(offset, (long)header.Length, _abort).ConfigureAwait(false);
                    break;
                case NbdCommand.BlockStatus:
                    await BlockStatusAsync(header).ConfigureAwait(false);
                    return;
                default:
                    throw new NbdException(Errno.EINVAL, "unknown command");
            }
            await SendDoneAsync(header).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            uint error = ErrorCodes.FromException(e);
            _log.RequestError(NbdProtocol.CommandName(header.Type), header.Offset, header.Length, e.Message);
            await SendErrorAsync(header, error, e.Message).ConfigureAwait(false);
        }
        finally
        {
            if (data != null)
                ArrayPool<byte>.Shared.Return(data);
            Finish(bytes);
        }
    }

    private async ValueTask ZeroAsync(long offset, long length, CommandFlags flags)
    {
        bool fast = (flags & CommandFlags.FastZero) != 0;
        bool fua = (flags & CommandFlags.Fua) != 0;
        if (_export.CanZero)
        {
            await _export.ZeroAsync(offset, length, (flags & CommandFlags.NoHole) == 0, fast, fua, _abort).ConfigureAwait(false);
            return;
        }
        if (fast)
            throw new NbdException(Errno.ENOTSUP, "the export cannot zero faster than writing");
        // Writes of zeroes no larger than the export said it takes.
        int most = (int)Math.Min(Zeroes.Length, _state.BlockSize.Maximum);
        while (length > 0)
        {
            int n = (int)Math.Min(length, most);
            await _export.WriteAsync(offset, Zeroes.AsMemory(0, n), fua && n == length, _abort).ConfigureAwait(false);
            offset += n;
            length -= n;
        }
    }

    private int ReadPrefix => !_state.Structured ? SimpleReplyHeader.Size
        : (_state.Extended ? ExtendedReplyHeader.Size : StructuredReplyHeader.Size) + OffsetDataChunk.PrefixSize;

    private int ChunkHeaderSize => _state.Extended ? ExtendedReplyHeader.Size : StructuredReplyHeader.Size;

    private async ValueTask ReadAsync(RequestHeader header)
    {
        int length = (int)header.Length;
        long offset = (long)header.Offset;
        if (_state.Structured && _export.CanSparseRead && ((CommandFlags)header.Flags & CommandFlags.Df) == 0)
        {
            ExtentList extents = RentExtents();
            try
            {
                extents.Reset(length, 1024);
                await _export.GetExtentsAsync(offset, length, extents, _abort).ConfigureAwait(false);
                if (extents.Count > 1 || (extents.Count == 1 && (extents.FlagsAt(0) & (uint)ExtentFlags.Zero) != 0))
                {
                    await SparseReadAsync(header, extents).ConfigureAwait(false);
                    return;
                }
            }
            finally
            {
                ReturnExtents(extents);
            }
        }

        int prefix = ReadPrefix;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(prefix + length);
        try
        {
            await _export.ReadAsync(offset, buffer.AsMemory(prefix, length), _abort).ConfigureAwait(false);
            if (!_state.Structured)
                new SimpleReplyHeader(NbdErrors.Success, header.Cookie).Write(buffer);
            else
                WriteChunkHeader(buffer, header, NbdProtocol.ReplyFlagDone, ChunkType.OffsetData, (ulong)(OffsetDataChunk.PrefixSize + length));
            if (_state.Structured)
                OffsetDataChunk.WritePrefix(buffer.AsSpan(ChunkHeaderSize), header.Offset);
            await SendAsync(buffer.AsMemory(0, prefix + length)).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async ValueTask SparseReadAsync(RequestHeader header, ExtentList extents)
    {
        int length = (int)header.Length;
        int chunk = ChunkHeaderSize;
        // Each extent is one chunk; what the extents do not cover is one more data chunk.
        int pieces = extents.Count + 1;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(length + pieces * (chunk + OffsetHoleChunk.Size));
        try
        {
            int position = 0;
            long done = 0;
            for (int i = 0; i <= extents.Count && done < length; i++)
            {
                long piece = i < extents.Count ? Math.Min(extents.LengthAt(i), length - done) : length - done;
                bool hole = i < extents.Count && (extents.FlagsAt(i) & (uint)ExtentFlags.Zero) != 0;
                ulong at = header.Offset + (ulong)done;
                bool last = done + piece == length;
                ushort flags = last ? NbdProtocol.ReplyFlagDone : (ushort)0;
                if (hole)
                {
                    WriteChunkHeader(buffer.AsSpan(position), header, flags, ChunkType.OffsetHole, OffsetHoleChunk.Size);
                    new OffsetHoleChunk(at, (uint)piece).Write(buffer.AsSpan(position + chunk));
                    position += chunk + OffsetHoleChunk.Size;
                }
                else
                {
                    WriteChunkHeader(buffer.AsSpan(position), header, flags, ChunkType.OffsetData, (ulong)(OffsetDataChunk.PrefixSize + piece));
                    OffsetDataChunk.WritePrefix(buffer.AsSpan(position + chunk), at);
                    position += chunk + OffsetDataChunk.PrefixSize;
                    await _export.ReadAsync((long)at, buffer.AsMemory(position, (int)piece), _abort).ConfigureAwait(false);
                    position += (int)piece;
                }
                done += piece;
            }
            await SendAsync(buffer.AsMemory(0, position)).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async ValueTask BlockStatusAsync(RequestHeader header)
    {
        long offset = (long)header.Offset;
        long limit = (long)Math.Min(header.Length, (ulong)(_state.Size - offset));
        bool one = ((CommandFlags)header.Flags & CommandFlags.ReqOne) != 0;
        ExtentList extents = RentExtents();
        try
        {
            extents.Reset(limit, one ? 1 : _options.MaxExtentsPerReply);
            if (_export.CanExtents)
                await _export.GetExtentsAsync(offset, limit, extents, _abort).ConfigureAwait(false);
            else
                extents.Add(limit, ExtentFlags.None);
            int count = extents.Count;
            if (count == 0)
                throw new NbdException(Errno.EIO, "the export described no extents");
            bool wide = _state.Extended;
            int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
            int descriptor = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
            int payload = prefix + count * descriptor;
            int chunk = ChunkHeaderSize;
            byte[] buffer = ArrayPool<byte>.Shared.Rent(chunk + payload);
            try
            {
                WriteChunkHeader(buffer, header, NbdProtocol.ReplyFlagDone, wide ? ChunkType.BlockStatusExt : ChunkType.BlockStatus, (ulong)payload);
                Span<byte> body = buffer.AsSpan(chunk, payload);
                BinaryPrimitives.WriteUInt32BigEndian(body, ServerHandshake.BaseAllocationId);
                if (wide)
                    BinaryPrimitives.WriteUInt32BigEndian(body[4..], (uint)count);
                Span<byte> d = body[prefix..];
                for (int i = 0; i < count; i++)
                {
                    if (wide)
                    {
                        BinaryPrimitives.WriteUInt64BigEndian(d, (ulong)extents.LengthAt(i));
                        BinaryPrimitives.WriteUInt64BigEndian(d[8..], extents.FlagsAt(i));
                    }
                    else
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)extents.LengthAt(i));
                        BinaryPrimitives.WriteUInt32BigEndian(d[4..], extents.FlagsAt(i));
                    }
                    d = d[descriptor..];
                }
                await SendAsync(buffer.AsMemory(0, chunk + payload)).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
        finally
        {
            ReturnExtents(extents);
        }
    }

    private ExtentList RentExtents() => Interlocked.Exchange(ref _spareExtents, null) ?? new ExtentList();

    private void ReturnExtents(ExtentList list) => Interlocked.CompareExchange(ref _spareExtents, list, null);

    private void WriteChunkHeader(Span<byte> destination, in RequestHeader request, ushort flags, ChunkType type, ulong length)
    {
        if (_state.Extended)
            new ExtendedReplyHeader(flags, (ushort)type, request.Cookie, request.Offset, length).Write(destination);
        else
            new StructuredReplyHeader(flags, (ushort)type, request.Cookie, (uint)length).Write(destination);
    }

    private ValueTask SendDoneAsync(in RequestHeader header)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ExtendedReplyHeader.Size);
        int size;
        if (_state.Extended)
        {
            WriteChunkHeader(buffer, header, NbdProtocol.ReplyFlagDone, ChunkType.None, 0);
            size = ExtendedReplyHeader.Size;
        }
        else
        {
            new SimpleReplyHeader(NbdErrors.Success, header.Cookie).Write(buffer);
            size = SimpleReplyHeader.Size;
        }
        return SendAndReturnAsync(buffer, size);
    }

    private ValueTask SendErrorAsync(in RequestHeader header, uint error, string message)
    {
        if (!_state.Structured)
        {
            byte[] simple = ArrayPool<byte>.Shared.Rent(SimpleReplyHeader.Size);
            new SimpleReplyHeader(error, header.Cookie).Write(simple);
            return SendAndReturnAsync(simple, SimpleReplyHeader.Size);
        }
        int textLength = Math.Min(Encoding.UTF8.GetByteCount(message), 1024);
        int chunk = ChunkHeaderSize;
        int payload = ErrorChunkPrefix.Size + textLength;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(chunk + payload);
        Span<byte> text = buffer.AsSpan(chunk + ErrorChunkPrefix.Size, textLength);
        if (!Encoding.UTF8.TryGetBytes(message, text, out int written))
            written = 0;
        payload = ErrorChunkPrefix.Size + written;
        WriteChunkHeader(buffer, header, NbdProtocol.ReplyFlagDone, ChunkType.Error, (ulong)payload);
        new ErrorChunkPrefix(error, (ushort)written).Write(buffer.AsSpan(chunk));
        return SendAndReturnAsync(buffer, chunk + payload);
    }

    private async ValueTask SendAndReturnAsync(byte[] buffer, int length)
    {
        try
        {
            await SendAsync(buffer.AsMemory(0, length)).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Writes one whole reply; a broken connection is remembered, never thrown, so every request finishes. A reply
    /// made by the reader's own thread while it runs a request inline is copied into the cork instead, which only the
    /// reader sends.
    /// </summary>
    private ValueTask SendAsync(ReadOnlyMemory<byte> reply)
    {
        if (_inline && Environment.CurrentManagedThreadId == _readerThread && reply.Length <= CorkSize - _corkLength)
        {
            reply.Span.CopyTo(_cork.AsSpan(_corkLength));
            _corkLength += reply.Length;
            return ValueTask.CompletedTask;
        }
        return WriteAsync(reply);
    }

    /// <summary>Sends the replies gathered in the cork; only the reader calls it.</summary>
    private ValueTask FlushCorkAsync()
    {
        if (_corkLength == 0)
            return ValueTask.CompletedTask;
        int length = _corkLength;
        _corkLength = 0;
        return WriteAsync(_cork.AsMemory(0, length));
    }

    private async ValueTask WriteAsync(ReadOnlyMemory<byte> reply)
    {
        await _writeLock.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (_broken)
                return;
            await _stream.WriteAsync(reply, _abort).ConfigureAwait(false);
            await _stream.FlushAsync(_abort).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or NotSupportedException)
        {
            // The reader learns it at its next read: closing the stream ends a read that would otherwise wait forever.
            _broken = true;
            _stream.Dispose();
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
