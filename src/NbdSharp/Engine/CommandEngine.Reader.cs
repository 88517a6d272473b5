using System;
using System.Buffers.Binary;
using System.Globalization;
using System.Threading;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>The reply reader: frames replies, checks every server length against the request, moves payloads.</summary>
internal sealed unsafe partial class CommandEngine
{
    /// <summary>libnbd's bound: the largest read we ask for plus its offset prefix; anything longer kills the connection.</summary>
    private const ulong MaxChunkLength = NbdProtocol.MaxRequestSize + OffsetDataChunk.PrefixSize;

    private readonly NegotiatedContext[] _metaContexts;
    private readonly ReceiveBuffer _input;
    private volatile bool _midReply;
    private long _chunksReceived;
    private Exception? _internalError;

    public long BytesReceived => _input.BytesReceived;
    public long ChunksReceived => Interlocked.Read(ref _chunksReceived);

    /// <summary>
    /// The first unexpected exception the reader turned into a dead connection: a bug of ours, which the fuzzing
    /// harness reports rather than let pass as a protocol error.
    /// </summary>
    public Exception? InternalError => Volatile.Read(ref _internalError);

    /// <summary>
    /// One step of the reader role: reads and processes one reply or chunk. Returns false when the connection
    /// has ended (closed or dead), after failing whatever was in flight.
    /// </summary>
    private bool Step()
    {
        try
        {
            SendQueuedUntilReadable();
            if (_state == EngineState.Ready && ProcessOne() && _state == EngineState.Ready)
            {
                // Between replies: requests the callbacks issued, or that waited for room, go out now.
                TrySendQueued();
                return true;
            }
        }
        catch (ProtocolViolation violation)
        {
            Break(Errno.EPROTO, violation.Message, protocolViolation: true);
        }
        catch (TransportException failure)
        {
            Break(failure.Errno, failure.Message);
        }
#pragma warning disable CA1031 // Whatever goes wrong while reading, every command must still complete.
        catch (Exception unexpected)
#pragma warning restore CA1031
        {
            Interlocked.CompareExchange(ref _internalError, unexpected, null);
            Break(Errno.EIO, "internal error while reading a reply: " + unexpected.Message);
        }
        FailAll();
        return false;
    }

    /// <summary>
    /// Before waiting for a reply: requests left in the queue (the socket was full when they were issued, from a callback
    /// or an aio call) go out as the socket makes room, until something arrives to read. The reply being waited for may
    /// need them, and nobody else may be sending. Not while a sender waits for room itself, or on that sender's thread.
    /// </summary>
    private void SendQueuedUntilReadable()
    {
        while (_queued > 0 && !_blockingSender && !_input.HasData && t_sending != this && _state == EngineState.Ready)
        {
            if (TrySendQueued())
                continue;
            (bool readable, _) = _transport.WaitReadableOrWritable(-1);
            if (readable)
                return;
        }
    }

    /// <summary>Reads one reply or chunk. Returns false at a clean end of stream.</summary>
    private bool ProcessOne()
    {
        if (!_input.FillAtLeast(4, atMessageBoundary: true))
            return OnEndOfStream();
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(_input.Available);
        if (ReplyFraming.CheckMagic(magic, StructuredReplies, ExtendedHeaders) is { } wrong)
            throw Violation(wrong);
        int size = ReplyFraming.HeaderSize(magic);
        _input.FillAtLeast(size);
        _midReply = true;
        try
        {
            ReadOnlySpan<byte> header = _input.Available[..size];
            Interlocked.Increment(ref _chunksReceived);
            switch (magic)
            {
                case NbdMagic.SimpleReply:
                {
                    SimpleReplyHeader.TryRead(header, out SimpleReplyHeader simple);
                    _input.Consume(size);
                    HandleSimpleReply(Lookup(simple.Cookie), simple.Error);
                    break;
                }
                case NbdMagic.StructuredReply:
                {
                    StructuredReplyHeader.TryRead(header, out StructuredReplyHeader chunk);
                    _input.Consume(size);
                    HandleChunk(Lookup(chunk.Cookie), chunk.Flags, chunk.Type, chunk.Length);
                    break;
                }
                default:
                {
                    ExtendedReplyHeader.TryRead(header, out ExtendedReplyHeader chunk);
                    _input.Consume(size);
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
                _watchdog.Dispose();
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
                _input.Skip(cmd.Count);
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
        _input.FillAtLeast(OffsetDataChunk.PrefixSize);
        ulong offset = OffsetDataChunk.ReadOffset(_input.Available);
        _input.Consume(OffsetDataChunk.PrefixSize);
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
        _input.FillAtLeast(OffsetHoleChunk.Size);
        OffsetHoleChunk hole = OffsetHoleChunk.Read(_input.Available);
        _input.Consume(OffsetHoleChunk.Size);
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
    /// A data or hole chunk must lie inside the request (<see cref="ContentChunkBounds"/>), must not overlap earlier
    /// chunks (<see cref="Coverage"/>), and must be the only one under DF.
    /// </summary>
    private static void CheckContentChunk(Command cmd, ulong offset, ulong length)
    {
        if (!ContentChunkBounds.IsInsideRequest(cmd.Offset, cmd.Count, offset, length))
        {
            throw Violation($"range of structured reply is out of bounds, offset={offset}, cmd->offset={cmd.Offset}, " +
                            $"length={length}, cmd->count={cmd.Count}: this is likely to be a bug in the NBD server");
        }
        if ((cmd.WireFlags & CommandFlags.Df) != 0 && cmd.ContentChunks > 0)
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
        _input.FillAtLeast(ErrorChunkPrefix.Size);
        ErrorChunkPrefix prefix = ErrorChunkPrefix.Read(_input.Available);
        _input.Consume(ErrorChunkPrefix.Size);
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
            _input.FillAtLeast(ErrorChunkPrefix.OffsetSize);
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(_input.Available);
            _input.Consume(ErrorChunkPrefix.OffsetSize);
            if (!ContentChunkBounds.IsInsideRequest(cmd.Offset, cmd.Count, offset, 0))
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
            _input.Skip(rest);
        }
        string detail = message.Length == 0
            ? Name(cmd) + ": command failed"
            : Name(cmd) + ": command failed: server said: " + message;
        cmd.SetError(errno, FailureKind.Server, detail);
    }

    /// <summary>Reads an error message (at most 4096 bytes), quoted as all server text is (<see cref="ServerText"/>).</summary>
    private string ReceiveMessage(int length)
    {
        if (length == 0)
            return "";
        Span<byte> raw = stackalloc byte[length];
        _input.ReceiveInto(raw);
        return ServerText.Quote(raw);
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
            _input.ReceiveInto(destination, length);
        else
            _input.Skip(length);
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
