using System;
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using System.Threading;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>The reply reader: frames replies, checks every server length against the request, moves payloads.</summary>
internal sealed unsafe partial class CommandEngine
{
    private const int ReceiveBufferSize = 256 * 1024;

    /// <summary>Payload remainders at least this large are received straight into the caller's memory.</summary>
    private const int DirectReceiveThreshold = 32 * 1024;

    /// <summary>libnbd's bound: the largest read we ask for plus its offset prefix; anything longer kills the connection.</summary>
    private const ulong MaxChunkLength = NbdProtocol.MaxRequestSize + OffsetDataChunk.PrefixSize;

    private const int InitialStatusBufferSize = 4096;

    private readonly IReadOnlyDictionary<uint, string> _metaContexts;
    /// <summary>Rented from the shared pool (a connection costs no large allocation) and returned on dispose.</summary>
    private byte[] _receiveBuffer = ArrayPool<byte>.Shared.Rent(ReceiveBufferSize);
    private int _receiveStart;
    private int _receiveEnd;
    private byte[] _statusBuffer = [];
    private uint[] _narrowEntries = [];
    private NbdExtent[] _wideEntries = [];
    private volatile bool _midReply;
    private long _bytesReceived;
    private long _chunksReceived;

    public long BytesReceived => Interlocked.Read(ref _bytesReceived);
    public long ChunksReceived => Interlocked.Read(ref _chunksReceived);

    private bool HasBufferedData => _receiveEnd > _receiveStart;

    /// <summary>Whether a whole reply header is already buffered (so reading it will not block).</summary>
    private bool HasBufferedMessage
    {
        get
        {
            int available = _receiveEnd - _receiveStart;
            if (available < 4)
                return false;
            int size = BinaryPrimitives.ReadUInt32BigEndian(_receiveBuffer.AsSpan(_receiveStart)) switch
            {
                NbdMagic.SimpleReply => SimpleReplyHeader.Size,
                NbdMagic.StructuredReply => StructuredReplyHeader.Size,
                NbdMagic.ExtendedReply => ExtendedReplyHeader.Size,
                _ => 4,
            };
            return available >= size;
        }
    }

    /// <summary>
    /// Sees every unexpected exception the reader turned into a dead connection: a bug of ours, which the
    /// fuzzing harness and the hostile-server tests report rather than let pass as a protocol error.
    /// </summary>
    internal static Action<Exception>? InternalErrorObserver { get; set; }

    /// <summary>
    /// One step of the reader role: reads and processes one reply or chunk. Returns false when the connection
    /// has ended (closed or dead), after failing whatever was in flight.
    /// </summary>
    private bool Step()
    {
        try
        {
            if (_state == EngineState.Ready && ProcessOne() && _state == EngineState.Ready)
            {
                // Between replies: requests the callbacks issued, or that waited for room, go out now.
                TrySendQueued();
                return true;
            }
        }
        catch (ProtocolViolation violation)
        {
            Break(Errno.EPROTO, violation.Message);
        }
        catch (TransportException failure)
        {
            Break(failure.Errno, failure.Message);
        }
#pragma warning disable CA1031 // Whatever goes wrong while reading, every command must still complete.
        catch (Exception unexpected)
#pragma warning restore CA1031
        {
            InternalErrorObserver?.Invoke(unexpected);
            Break(Errno.EIO, "internal error while reading a reply: " + unexpected.Message);
        }
        FailAll();
        return false;
    }

    /// <summary>Reads one reply or chunk. Returns false at a clean end of stream.</summary>
    private bool ProcessOne()
    {
        if (!FillAtLeast(4, atMessageBoundary: true))
            return OnEndOfStream();
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(_receiveBuffer.AsSpan(_receiveStart));
        int size = HeaderSize(magic);
        FillAtLeast(size);
        _midReply = true;
        try
        {
            ReadOnlySpan<byte> header = _receiveBuffer.AsSpan(_receiveStart, size);
            Interlocked.Increment(ref _chunksReceived);
            switch (magic)
            {
                case NbdMagic.SimpleReply:
                {
                    SimpleReplyHeader.TryRead(header, out SimpleReplyHeader simple);
                    _receiveStart += size;
                    HandleSimpleReply(Lookup(simple.Cookie), simple.Error);
                    break;
                }
                case NbdMagic.StructuredReply:
                {
                    StructuredReplyHeader.TryRead(header, out StructuredReplyHeader chunk);
                    _receiveStart += size;
                    HandleChunk(Lookup(chunk.Cookie), chunk.Flags, chunk.Type, chunk.Length);
                    break;
                }
                default:
                {
                    ExtendedReplyHeader.TryRead(header, out ExtendedReplyHeader chunk);
                    _receiveStart += size;
                    Command cmd = Lookup(chunk.Cookie);
                    if (chunk.Offset != cmd.Offset)
                        throw Violation($"server replied to the {Name(cmd)} command at offset {cmd.Offset} with a chunk for offset {chunk.Offset}");
                    HandleChunk(cmd, chunk.Flags, chunk.Type, chunk.Length);
                    break;
                }
            }
        }
        finally
        {
            _midReply = false;
        }
        return true;
    }

    private int HeaderSize(uint magic)
    {
        switch (magic)
        {
            case NbdMagic.SimpleReply when !ExtendedHeaders:
                return SimpleReplyHeader.Size;
            case NbdMagic.StructuredReply when StructuredReplies && !ExtendedHeaders:
                return StructuredReplyHeader.Size;
            case NbdMagic.ExtendedReply when ExtendedHeaders:
                return ExtendedReplyHeader.Size;
            case NbdMagic.StructuredReply when !StructuredReplies:
                throw Violation("server sent a structured reply, which was not negotiated");
            default:
                throw Violation("invalid or unexpected reply magic 0x" + magic.ToString("x8", CultureInfo.InvariantCulture));
        }
    }

    private Command Lookup(ulong cookie)
    {
        lock (_lock)
        {
            if (_inFlight.TryGetValue(cookie, out Command? cmd))
                return cmd;
        }
        throw Violation($"server sent a reply for cookie {cookie}, which matches no command in flight");
    }

    /// <summary>A clean end of stream between replies: closed if nothing was in flight, otherwise dead.</summary>
    private bool OnEndOfStream()
    {
        int inFlight;
        lock (_lock)
        {
            inFlight = _inFlight.Count;
            if (_state == EngineState.Ready)
                _endedBetweenReplies = true;
            if (inFlight == 0 && _state == EngineState.Ready)
            {
                _state = EngineState.Closed;
                _watchdog?.Dispose();
                _watchdog = null;
            }
        }
        if (inFlight > 0)
        {
            Break(Errno.ENOTCONN, $"server disconnected unexpectedly with {inFlight} command(s) in flight");
            FailAll();
        }
        else if (_log.Enabled)
        {
            _log.Write("nbd_internal", "server closed the connection");
        }
        return false;
    }

    private void HandleSimpleReply(Command cmd, uint error)
    {
        // A server bug that leaves the framing intact (libnbd copes the same way): the read fails with EPROTO, its
        // data (if any) is drained rather than delivered, and the connection lives on.
        if (cmd.Type == NbdCommand.Read && StructuredReplies)
        {
            if (_log.Enabled)
                _log.Write("nbd_internal", "server sent unexpected simple reply for read");
            cmd.SetError(Errno.EPROTO, FailureKind.Server, "server sent a simple reply to a read although structured replies were negotiated");
            if (error == 0)
                Skip(cmd.Count);
        }
        else if (error != 0)
        {
            cmd.SetError(NbdErrors.ToErrno(error), FailureKind.Server, null);
        }
        else if (cmd.Type == NbdCommand.Read && cmd.Count > 0)
        {
            bool deliver = BeginPayload(cmd);
            try
            {
                ReceivePayload(deliver, cmd.Data, cmd.Count);
                cmd.Coverage.TryAdd(0, cmd.Count);
                if (deliver)
                    InvokeChunk(cmd, cmd.Offset, cmd.Count, ReadStatus.Data, cmd.Error);
            }
            finally
            {
                EndPayload(cmd);
            }
        }
        Complete(cmd);
    }

    private void HandleChunk(Command cmd, ushort flags, ushort type, ulong length)
    {
        if (length > MaxChunkLength)
            throw Violation("invalid server reply length " + length.ToString(CultureInfo.InvariantCulture));
        switch ((ChunkType)type)
        {
            case ChunkType.None:
                if (length != 0 || (flags & NbdProtocol.ReplyFlagDone) == 0)
                    throw Violation($"server sent an NBD_REPLY_TYPE_NONE chunk of length {length}" +
                                    ((flags & NbdProtocol.ReplyFlagDone) == 0 ? " without the DONE flag" : ""));
                break;
            case ChunkType.OffsetData:
                HandleOffsetData(cmd, length);
                break;
            case ChunkType.OffsetHole:
                HandleOffsetHole(cmd, length);
                break;
            case ChunkType.BlockStatus:
            case ChunkType.BlockStatusExt:
                HandleBlockStatus(cmd, (ChunkType)type == ChunkType.BlockStatusExt, length);
                break;
            default:
                if (!NbdProtocol.IsErrorChunk(type))
                    throw Violation("unknown structured reply type " + type.ToString(CultureInfo.InvariantCulture));
                HandleErrorChunk(cmd, type, length);
                break;
        }
        if ((flags & NbdProtocol.ReplyFlagDone) != 0)
            FinishReply(cmd);
    }

    private void FinishReply(Command cmd)
    {
        if (cmd.Error == 0)
        {
            if (cmd.Type == NbdCommand.Read && !cmd.Coverage.Covers(cmd.Count))
                throw Violation($"server reported success for a read of {cmd.Count} bytes at offset {cmd.Offset} without sending all of the data");
            if (cmd.Type == NbdCommand.BlockStatus && cmd.StatusChunks == 0)
                throw Violation("server reported success for block status without sending any extents");
        }
        Complete(cmd);
    }

    private void HandleOffsetData(Command cmd, ulong length)
    {
        if (cmd.Type != NbdCommand.Read)
            throw Violation($"server sent a data chunk in reply to a {Name(cmd)} command");
        if (length < OffsetDataChunk.PrefixSize)
            throw Violation($"server sent a data chunk of invalid length {length}");
        FillAtLeast(OffsetDataChunk.PrefixSize);
        ulong offset = OffsetDataChunk.ReadOffset(_receiveBuffer.AsSpan(_receiveStart));
        _receiveStart += OffsetDataChunk.PrefixSize;
        ulong dataLength = length - OffsetDataChunk.PrefixSize;
        CheckContentChunk(cmd, offset, dataLength);
        bool deliver = BeginPayload(cmd);
        try
        {
            ReceivePayload(deliver, cmd.Data + (offset - cmd.Offset), dataLength);
            if (deliver)
                InvokeChunk(cmd, offset, dataLength, ReadStatus.Data, cmd.Error);
        }
        finally
        {
            EndPayload(cmd);
        }
    }

    private void HandleOffsetHole(Command cmd, ulong length)
    {
        if (cmd.Type != NbdCommand.Read)
            throw Violation($"server sent a hole chunk in reply to a {Name(cmd)} command");
        if (length != OffsetHoleChunk.Size)
            throw Violation($"server sent a hole chunk of invalid length {length}");
        FillAtLeast(OffsetHoleChunk.Size);
        OffsetHoleChunk hole = OffsetHoleChunk.Read(_receiveBuffer.AsSpan(_receiveStart));
        _receiveStart += OffsetHoleChunk.Size;
        // proto.md: the hole size must be non-zero.
        if (hole.Length == 0)
            throw Violation($"server sent a zero-length hole at offset {hole.Offset}");
        CheckContentChunk(cmd, hole.Offset, hole.Length);
        bool deliver = BeginPayload(cmd);
        try
        {
            if (deliver)
            {
                if (!cmd.Initialized)
                    new Span<byte>(cmd.Data + (hole.Offset - cmd.Offset), (int)hole.Length).Clear();
                InvokeChunk(cmd, hole.Offset, hole.Length, ReadStatus.Hole, cmd.Error);
            }
        }
        finally
        {
            EndPayload(cmd);
        }
    }

    /// <summary>
    /// A data or hole chunk must lie inside the request (checked without overflow: the 2019 libnbd RCE was
    /// an offset that wrapped), must not overlap earlier chunks, and must be the only one under DF.
    /// </summary>
    private static void CheckContentChunk(Command cmd, ulong offset, ulong length)
    {
#if FUZZ_CANARY
        // The planted bug: a chunk that starts inside its request but runs up to 64 bytes past its end is
        // accepted (and delivered: a hole to the chunk callback, data into the bytes after the buffer).
        if (FuzzCanary.Reply && offset >= cmd.Offset && offset - cmd.Offset < cmd.Count)
        {
            ulong room = cmd.Count - (offset - cmd.Offset);
            if (length > room && length - room <= 64)
            {
                cmd.ContentChunks++;
                return;
            }
        }
#endif
        if (offset < cmd.Offset || offset - cmd.Offset >= cmd.Count || length > cmd.Count - (offset - cmd.Offset))
        {
            throw Violation($"range of structured reply is out of bounds, offset={offset}, cmd->offset={cmd.Offset}, " +
                            $"length={length}, cmd->count={cmd.Count}: this is likely to be a bug in the NBD server");
        }
        if ((cmd.WireFlags & (ushort)CmdFlag.Df) != 0 && cmd.ContentChunks > 0)
            throw Violation("server sent more than one chunk for a read with the DF flag");
        cmd.ContentChunks++;
        if (!cmd.Coverage.TryAdd(offset - cmd.Offset, length))
        {
            throw Violation(cmd.Coverage.RangeCount >= Coverage.MaxRanges
                ? $"server fragmented the read into more than {Coverage.MaxRanges} disjoint chunks"
                : $"server sent a chunk at offset {offset} of length {length} overlapping data it already sent");
        }
    }

    private void HandleErrorChunk(Command cmd, ushort type, ulong length)
    {
        if (length < ErrorChunkPrefix.Size)
            throw Violation($"server sent an error chunk of invalid length {length}");
        FillAtLeast(ErrorChunkPrefix.Size);
        ErrorChunkPrefix prefix = ErrorChunkPrefix.Read(_receiveBuffer.AsSpan(_receiveStart));
        _receiveStart += ErrorChunkPrefix.Size;
        ulong rest = length - ErrorChunkPrefix.Size;
        if (prefix.MessageLength > rest || prefix.MessageLength > NbdProtocol.MaxString)
            throw Violation($"error message length {prefix.MessageLength} too large for an error chunk of length {length}");
        string message = ReceiveMessage(prefix.MessageLength);
        rest -= prefix.MessageLength;
        if (prefix.Error == 0)
            throw Violation("server sent an error chunk with error value 0");
        int errno = NbdErrors.ToErrno(prefix.Error);
        if ((ChunkType)type == ChunkType.ErrorOffset)
        {
            if (rest != ErrorChunkPrefix.OffsetSize)
                throw Violation($"server sent an NBD_REPLY_TYPE_ERROR_OFFSET chunk of invalid length {length}");
            FillAtLeast(ErrorChunkPrefix.OffsetSize);
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(_receiveBuffer.AsSpan(_receiveStart));
            _receiveStart += ErrorChunkPrefix.OffsetSize;
            if (offset < cmd.Offset || offset - cmd.Offset >= cmd.Count)
                throw Violation($"server sent an error offset {offset} outside the request (offset {cmd.Offset}, count {cmd.Count})");
            if (cmd.Type == NbdCommand.Read && cmd.Chunk != null)
            {
                bool deliver = BeginPayload(cmd);
                try
                {
                    if (deliver)
                        InvokeChunk(cmd, offset, 0, ReadStatus.Error, errno);
                }
                finally
                {
                    EndPayload(cmd);
                }
            }
        }
        else
        {
            // NBD_REPLY_TYPE_ERROR with trailing bytes, or an error type we do not know: the error value is
            // all that matters (proto.md), the rest is skipped.
            Skip(rest);
        }
        string detail = message.Length == 0
            ? Name(cmd) + ": command failed"
            : Name(cmd) + ": command failed: server said: " + message;
        cmd.SetError(errno, FailureKind.Server, detail);
    }

    /// <summary>Reads an error message (at most 4096 bytes), quoting anything unprintable as libnbd does.</summary>
    private string ReceiveMessage(int length)
    {
        if (length == 0)
            return "";
        Span<byte> raw = stackalloc byte[length];
        fixed (byte* p = raw)
            ReceiveInto(p, (ulong)length);
        string text = Encoding.UTF8.GetString(raw);
        StringBuilder? quoted = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsControl(c))
            {
                quoted ??= new StringBuilder(text, 0, i, text.Length + 16);
                quoted.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            }
            else
            {
                quoted?.Append(c);
            }
        }
        return quoted?.ToString() ?? text;
    }

    private void HandleBlockStatus(Command cmd, bool wide, ulong length)
    {
        if (cmd.Type != NbdCommand.BlockStatus)
            throw Violation($"server sent a block status chunk in reply to a {Name(cmd)} command");
        if (wide != ExtendedHeaders)
            throw Violation(wide
                ? "server sent NBD_REPLY_TYPE_BLOCK_STATUS_EXT without extended headers"
                : "server sent NBD_REPLY_TYPE_BLOCK_STATUS although extended headers were negotiated");
        int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
        int descriptorSize = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
#if FUZZ_CANARY
        bool canary = FuzzCanary.Client && length > (ulong)(prefix + descriptorSize) && length < 4096;
        if (!canary && !BlockStatusChunk.IsValidLength(wide, length))
#else
        if (!BlockStatusChunk.IsValidLength(wide, length))
#endif
            throw Violation($"server sent a block status chunk of invalid length {length}");
        ReadOnlySpan<byte> payload = ReceiveStatusPayload((int)length);
        int count = (payload.Length - prefix) / descriptorSize;
#if FUZZ_CANARY
        if (canary)
            count = (payload.Length - prefix + descriptorSize - 1) / descriptorSize;
#endif
        uint contextId = BlockStatusChunk.ReadContextId(payload);
        if (wide && BlockStatusChunk.ReadDescriptorCount(payload) != (uint)count)
            throw Violation("server sent a block status chunk whose descriptor count does not match its length");
        if (!_metaContexts.TryGetValue(contextId, out string? context))
            throw Violation($"server sent block status for metadata context id {contextId}, which was not negotiated");
        cmd.StatusChunks++;
        ReadOnlySpan<byte> descriptors = payload[prefix..];

        // proto.md: every extent has a non-zero length; none may run past the end of the export.
        ulong cap = cmd.Offset <= ExportSize ? ExportSize - cmd.Offset : 0;
        ulong total = 0;
        for (int i = 0; i < count; i++)
        {
            BlockStatusChunk.ReadDescriptor(descriptors[(i * descriptorSize)..], wide, out ulong extentLength, out _);
            if (extentLength == 0)
                throw Violation($"server sent a zero-length extent for {context} at index {i}");
            if (extentLength > cap - total)
                throw Violation($"server sent extents for {context} past the end of the export (size {ExportSize})");
            total += extentLength;
        }

        bool deliver = BeginPayload(cmd);
        try
        {
            if (deliver)
                DeliverExtents(cmd, context, descriptors, count, wide);
        }
        finally
        {
            EndPayload(cmd);
        }
    }

    private void DeliverExtents(Command cmd, string context, ReadOnlySpan<byte> descriptors, int count, bool wide)
    {
        int descriptorSize = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        int error = cmd.Error;
        int result = 0;
        if (cmd.Extent64 != null)
        {
            if (_wideEntries.Length < count)
                _wideEntries = new NbdExtent[Math.Max(count, _wideEntries.Length * 2)];
            for (int i = 0; i < count; i++)
            {
                BlockStatusChunk.ReadDescriptor(descriptors[(i * descriptorSize)..], wide, out ulong length, out ulong flags);
                _wideEntries[i] = new NbdExtent(length, flags);
            }
            result = Callbacks.InvokeExtent64(cmd.Extent64, context, cmd.Offset, _wideEntries.AsSpan(0, count), ref error);
        }
        else if (cmd.Extent != null)
        {
            if (_narrowEntries.Length < count * 2)
                _narrowEntries = new uint[Math.Max(count * 2, _narrowEntries.Length * 2)];
            int delivered = 0;
            for (int i = 0; i < count; i++)
            {
                BlockStatusChunk.ReadDescriptor(descriptors[(i * descriptorSize)..], wide, out ulong length, out ulong flags);
                bool stop = false;
                if (length > uint.MaxValue)
                {
                    // libnbd: a 64-bit extent shown to a 32-bit callback is cut to an aligned 32-bit length.
                    length = uint.MaxValue + 1UL - NbdProtocol.MaxRequestSize;
                    stop = true;
                }
                if (flags > uint.MaxValue)
                {
                    if (i > 0)
                        break;
                    cmd.SetError(Errno.EOVERFLOW, FailureKind.Server, context + ": extent flags do not fit in 32 bits");
                    error = cmd.Error;
                    flags = (uint)flags;
                    stop = true;
                }
                _narrowEntries[delivered * 2] = (uint)length;
                _narrowEntries[(delivered * 2) + 1] = (uint)flags;
                delivered++;
                if (stop)
                    break;
            }
            result = Callbacks.InvokeExtent(cmd.Extent, context, cmd.Offset, _narrowEntries.AsSpan(0, delivered * 2), ref error);
        }
        if (result == -1 && cmd.Error == 0)
            cmd.SetError(error != 0 ? error : Errno.EPROTO, FailureKind.Callback, null);
    }

    private static void InvokeChunk(Command cmd, ulong offset, ulong length, uint status, int error)
    {
        if (cmd.Chunk == null)
            return;
        int scratch = error;
        var subbuf = new ReadOnlySpan<byte>(cmd.Data + (offset - cmd.Offset), (int)length);
        if (Callbacks.InvokeChunk(cmd.Chunk, subbuf, offset, status, ref scratch) == -1 && cmd.Error == 0)
            cmd.SetError(scratch != 0 ? scratch : Errno.EPROTO, FailureKind.Callback, null);
    }

    /// <summary>
    /// Before touching a command's memory: false if its awaiter gave up (the payload is then drained).
    /// For a cancellable command it also marks the reader busy, so cancellation waits until
    /// <see cref="EndPayload"/> and never returns the caller's buffer while it is being written.
    /// </summary>
    private bool BeginPayload(Command cmd)
    {
        if (!cmd.CancellationToken.CanBeCanceled)
            return true;
        lock (_lock)
        {
            if (cmd.Abandoned)
                return false;
            cmd.ReaderBusy = true;
            return true;
        }
    }

    private void EndPayload(Command cmd)
    {
        if (!cmd.CancellationToken.CanBeCanceled)
            return;
        bool abandonNow;
        lock (_lock)
        {
            cmd.ReaderBusy = false;
            abandonNow = cmd.CancelPending && !cmd.Abandoned && !cmd.Done;
            if (abandonNow)
                cmd.Abandoned = true;
        }
        if (abandonNow)
            cmd.SetAsyncResult(new OperationCanceledException(cmd.CancellationToken));
    }

    /// <summary>Receives <paramref name="length"/> payload bytes into <paramref name="destination"/>, or drains them.</summary>
    private void ReceivePayload(bool deliver, byte* destination, ulong length)
    {
        if (deliver)
            ReceiveInto(destination, length);
        else
            Skip(length);
    }

    /// <summary>
    /// Makes at least <paramref name="count"/> bytes available in the receive buffer. At a message boundary
    /// a clean end of stream returns false; anywhere else it is an error.
    /// </summary>
    private bool FillAtLeast(int count, bool atMessageBoundary = false)
    {
        while (_receiveEnd - _receiveStart < count)
        {
            if (_receiveStart == _receiveEnd)
            {
                _receiveStart = 0;
                _receiveEnd = 0;
            }
            else if (_receiveBuffer.Length - _receiveStart < count)
            {
                int buffered = _receiveEnd - _receiveStart;
                Buffer.BlockCopy(_receiveBuffer, _receiveStart, _receiveBuffer, 0, buffered);
                _receiveStart = 0;
                _receiveEnd = buffered;
            }
            int received = _transport.Receive(_receiveBuffer.AsSpan(_receiveEnd));
            if (received == 0)
            {
                if (atMessageBoundary && _receiveEnd == _receiveStart)
                    return false;
                throw new TransportException(Errno.ENOTCONN, "server disconnected in the middle of a reply");
            }
            _receiveEnd += received;
            Interlocked.Add(ref _bytesReceived, received);
        }
        return true;
    }

    /// <summary>Copies what is buffered, then receives large remainders straight into the destination.</summary>
    private void ReceiveInto(byte* destination, ulong length)
    {
        while (length > 0)
        {
            int available = _receiveEnd - _receiveStart;
            if (available > 0)
            {
                int take = (int)Math.Min((ulong)available, length);
                _receiveBuffer.AsSpan(_receiveStart, take).CopyTo(new Span<byte>(destination, take));
                _receiveStart += take;
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

    /// <summary>Consumes and discards <paramref name="length"/> bytes.</summary>
    private void Skip(ulong length)
    {
        while (length > 0)
        {
            FillAtLeast(1);
            int take = (int)Math.Min((ulong)(_receiveEnd - _receiveStart), length);
            _receiveStart += take;
            length -= (ulong)take;
        }
    }

    /// <summary>
    /// Receives a block status payload into a scratch buffer that grows only as bytes actually arrive, so
    /// a length claim alone never sizes an allocation.
    /// </summary>
    private ReadOnlySpan<byte> ReceiveStatusPayload(int length)
    {
        int have = 0;
        while (have < length)
        {
            if (have == _statusBuffer.Length)
                Array.Resize(ref _statusBuffer, (int)Math.Min(length, Math.Max(InitialStatusBufferSize, (long)_statusBuffer.Length * 2)));
            int take = Math.Min(length - have, _statusBuffer.Length - have);
            fixed (byte* p = &_statusBuffer[have])
                ReceiveInto(p, (ulong)take);
            have += take;
        }
        ReadOnlySpan<byte> payload = _statusBuffer.AsSpan(0, length);
        if (_statusBuffer.Length > 1024 * 1024)
        {
            byte[] big = _statusBuffer;
            _statusBuffer = [];
            return big.AsSpan(0, length);
        }
        return payload;
    }

    private static string Name(Command cmd) => NbdProtocol.CommandName(cmd.Type);

    private static ProtocolViolation Violation(string message) => new(message);

    /// <summary>The server broke the protocol; the connection cannot continue.</summary>
    private sealed class ProtocolViolation : Exception
    {
        public ProtocolViolation(string message)
            : base(message)
        {
        }

        public ProtocolViolation()
        {
        }

        public ProtocolViolation(string message, Exception innerException)
            : base(message, innerException)
        {
        }
    }
}
