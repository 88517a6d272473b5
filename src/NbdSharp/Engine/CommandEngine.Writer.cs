using System;
using System.Collections.Generic;
using System.Threading;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>
/// The request writer: a queue of requests (libnbd's <c>cmds_to_issue</c>) sent in order, one at a time, header
/// and payload together, by whichever thread holds the write lock.
/// </summary>
/// <remarks>
/// <para>An aio call queues its request and sends what the socket takes without blocking (<see cref="TrySendQueued"/>);
/// it never waits and never reads. What is left goes out when somebody drives the handle: <c>Poll</c>,
/// <c>AioNotifyWrite</c>, the reader between two replies, or a synchronous or Task-based call, which sends the whole
/// queue before its own request and may wait for room meanwhile (<see cref="SendAllQueued"/>).</para>
/// <para>A sender waiting for room reads replies meanwhile when nobody else does: a server may stop reading requests
/// until its replies are read (the deadlock libnbd's PAUSE states avoid).</para>
/// </remarks>
internal sealed unsafe partial class CommandEngine
{
    private readonly Lock _writeLock = new();

    /// <summary>Requests not yet (wholly) sent, in order; the head may be partly sent. Changed under <see cref="_lock"/>.</summary>
    private readonly Queue<Command> _sendQueue = new();

    /// <summary>The length of <see cref="_sendQueue"/>, readable without the lock.</summary>
    private volatile int _queued;

    /// <summary>A thread holds the write lock to send the whole queue (it waits for room itself).</summary>
    private volatile bool _blockingSender;

    /// <summary>The head's header, encoded when its first byte goes out (under the write lock).</summary>
    private readonly byte[] _headHeader = new byte[RequestHeader.ExtendedSize];
    private int _headHeaderSize;

    /// <summary>Bytes of the head request (header and payload) already sent (under the write lock).</summary>
    private long _headSent;

    private long _bytesSent;
    private long _chunksSent;

    public long BytesSent => Interlocked.Read(ref _bytesSent);
    public long ChunksSent => Interlocked.Read(ref _chunksSent);

    /// <summary>Requests are waiting to be sent (libnbd's direction WRITE).</summary>
    public bool HasQueuedRequests => _queued > 0;

    [ThreadStatic]
    private static CommandEngine? t_sending;

    private void EnqueueLocked(Command cmd)
    {
        _sendQueue.Enqueue(cmd);
        _queued = _sendQueue.Count;
    }

    /// <summary>
    /// Sends queued requests for as long as the transport takes them without blocking. Never waits and never
    /// reads; does nothing when another thread is sending (it will send the rest) or this thread is in the middle
    /// of a request. Returns whether any byte went out.
    /// </summary>
    public bool TrySendQueued()
    {
        if (_queued == 0 || t_sending == this || !_writeLock.TryEnter())
            return false;
        try
        {
            return SendQueued(blocking: false);
        }
        finally
        {
            _writeLock.Exit();
        }
    }

    /// <summary>
    /// <c>nbd_aio_notify_write</c>: the socket has room; sends what it takes of the queued requests. EINVAL when
    /// nothing waits to be written, as libnbd's state machine refuses the event in a state that does not write.
    /// </summary>
    public void NotifyWrite(string call, string stateName)
    {
        if (_queued == 0)
        {
            throw new NbdException(Errno.EINVAL, NbdException.Format(call,
                "external event 1 (notify write) is invalid in state " + stateName + ": nothing is waiting to be written", Errno.EINVAL));
        }
        TrySendQueued();
    }

    /// <summary>
    /// Sends every queued request, waiting for room in the socket (and reading replies meanwhile when needed). On a
    /// thread that is reading replies or sending already (a callback), only what can go out at once is sent.
    /// </summary>
    private void SendAllQueued()
    {
        if (t_sending == this || t_reading == this)
        {
            TrySendQueued();
            return;
        }
        lock (_writeLock)
        {
            _blockingSender = true;
            try
            {
                SendQueued(blocking: true);
            }
            finally
            {
                _blockingSender = false;
            }
        }
    }

    /// <summary>The queue's loop; the caller holds the write lock. Returns whether any byte went out.</summary>
    private bool SendQueued(bool blocking)
    {
        CommandEngine? outer = t_sending; // restored, not cleared: a callback may be sending on another handle
        t_sending = this;
        bool progressed = false;
        try
        {
            while (true)
            {
                Command? head;
                lock (_lock)
                {
                    if (_state != EngineState.Ready || !_sendQueue.TryPeek(out head))
                        return progressed;
                }
                if (!blocking && _headSent == 0 && head.Type != NbdCommand.Disconnect && RequestPayload(head).IsEmpty)
                {
                    int gathered = SendGathered(ref progressed);
                    if (gathered < 0)
                        return progressed;
                    if (gathered > 0)
                        continue;
                }
                if (!SendHead(head, blocking, ref progressed))
                    return progressed;
                lock (_lock)
                {
                    // A failure on this thread may have emptied the queue meanwhile.
                    if (_sendQueue.TryPeek(out Command? still) && still == head)
                    {
                        _sendQueue.Dequeue();
                        _queued = _sendQueue.Count;
                    }
                }
                _headSent = 0;
                if (head.Type == NbdCommand.Disconnect)
                {
                    head.Release();
                    _transport.ShutdownSend();
                }
            }
        }
        catch (TransportException failure)
        {
            Break(failure.Errno, failure.Message);
            return progressed;
        }
        finally
        {
            t_sending = outer;
        }
    }

    /// <summary>The most header-only requests that go out in one send.</summary>
    private const int GatherLimit = 16;

    private readonly byte[] _gather = new byte[GatherLimit * RequestHeader.ExtendedSize];
    private readonly Command?[] _gathered = new Command?[GatherLimit];

    /// <summary>
    /// Requests without a payload (reads, zeroes, block status...) queued one behind another (in a
    /// <see cref="NbdHandle.BatchRequests"/> scope, or while the socket was full) go out in one send, so that the
    /// server is woken once for them all. Only where the send must not wait. Returns how many were sent whole (0 when
    /// the head is alone: the caller sends it as any other), or -1 when the transport took less than all of them (the
    /// rest stay queued; a request sent in part is the head, its header kept to finish).
    /// </summary>
    private int SendGathered(ref bool progressed)
    {
        int size = ExtendedHeaders ? RequestHeader.ExtendedSize : RequestHeader.CompactSize;
        int count = 0;
        lock (_lock)
        {
            if (_state != EngineState.Ready)
                return -1;
            // The head alone (the common case outside a batch): the caller builds and sends it as any other.
            if (_sendQueue.Count < 2)
                return 0;
            foreach (Command cmd in _sendQueue)
            {
                if (count == GatherLimit || cmd.Type == NbdCommand.Disconnect || !RequestPayload(cmd).IsEmpty)
                    break;
                WireHeader(cmd).Write(_gather.AsSpan(count * size), ExtendedHeaders);
                _gathered[count++] = cmd;
            }
        }
        if (count < 2)
        {
            _gathered[0] = null;
            return 0;
        }
        int sent, whole;
        try
        {
            sent = _transport.TrySend(_gather.AsSpan(0, count * size), default);
            if (sent <= 0)
                return -1;
            whole = sent / size;
            lock (_lock)
            {
                // A failure on this thread may have emptied the queue meanwhile.
                for (int i = 0; i < whole && _sendQueue.TryPeek(out Command? still) && still == _gathered[i]; i++)
                    _sendQueue.Dequeue();
                _queued = _sendQueue.Count;
            }
        }
        finally
        {
            Array.Clear(_gathered);
        }
        progressed = true;
        Interlocked.Add(ref _bytesSent, sent);
        int part = sent % size;
        Interlocked.Add(ref _chunksSent, whole);
        if (part == 0)
            return whole == count ? whole : -1;
        _gather.AsSpan(whole * size, size).CopyTo(_headHeader);
        _headHeaderSize = size;
        _headSent = part;
        return -1;
    }

    /// <summary>
    /// Sends the rest of the head request. Returns true once all of it is sent; false when the transport takes no
    /// more without blocking (<paramref name="blocking"/> false) or the connection died meanwhile, in which case the
    /// command's memory must not be touched again (a failure may have completed it).
    /// </summary>
    private bool SendHead(Command cmd, bool blocking, ref bool progressed)
    {
        if (_headSent == 0)
        {
            _headHeaderSize = WireHeader(cmd).Write(_headHeader, ExtendedHeaders);
        }
        ReadOnlySpan<byte> payload = RequestPayload(cmd);
        long total = _headHeaderSize + (long)payload.Length;
        while (_headSent < total)
        {
            ReadOnlySpan<byte> header = _headSent < _headHeaderSize ? _headHeader.AsSpan((int)_headSent, _headHeaderSize - (int)_headSent) : default;
            ReadOnlySpan<byte> rest = payload[(int)Math.Max(0, _headSent - _headHeaderSize)..];
            int sent;
            if (blocking && _transport.PrefersBlockingSend)
            {
                SendBlocking(header, rest);
                sent = header.Length + rest.Length;
            }
            else
            {
                sent = _transport.TrySend(header, rest);
            }
            if (sent > 0)
            {
                _headSent += sent;
                Interlocked.Add(ref _bytesSent, sent);
                progressed = true;
                continue;
            }
            if (!blocking)
                return false;
            WaitToSend();
            if (_state != EngineState.Ready)
                return false;
        }
        Interlocked.Increment(ref _chunksSent);
        return true;
    }

    private static RequestHeader WireHeader(Command cmd)
    {
        ulong wireCount = cmd.RequestPayload != null ? (ulong)cmd.RequestPayloadLength : cmd.Count;
        return new RequestHeader((ushort)cmd.WireFlags, cmd.Type, cmd.Cookie, cmd.Offset, wireCount);
    }

    /// <summary>What follows a request's header: write data, the context ids of a filtered block status, or nothing.</summary>
    private ReadOnlySpan<byte> RequestPayload(Command cmd)
    {
        if (cmd.RequestPayload != null)
        {
            // A filtered block status: the header's length is the payload's; it goes out only as PAYLOAD_LEN
            // announces it, and only with extended headers (as libnbd).
            bool sent = ExtendedHeaders && (cmd.WireFlags & CommandFlags.PayloadLen) != 0;
            return sent ? cmd.RequestPayload.AsSpan(0, cmd.RequestPayloadLength) : default;
        }
        return cmd.Type == NbdCommand.Write ? new ReadOnlySpan<byte>(cmd.Data, (int)cmd.Count) : default;
    }

    /// <summary>
    /// A blocking send on a transport that prefers it. During a large one a reader runs meanwhile, in case the server
    /// waits for us to read; a small one goes out at once and needs none (waking one would cost a thread hand-off).
    /// </summary>
    private void SendBlocking(ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload)
    {
        bool large = header.Length + payload.Length > LargeSend;
        if (large)
            OnSendBlocked();
        try
        {
            _transport.Send(header, payload);
        }
        finally
        {
            if (large)
                OnSendUnblocked();
        }
    }

    /// <summary>A blocking send larger than this may wait for the server, which may wait for its replies to be read.</summary>
    private const int LargeSend = 16 * 1024;

    /// <summary>
    /// The socket is full: until it can take more, read replies if this thread holds (or can take) the reader
    /// role; otherwise another thread is reading, and waiting is enough (the role goes to the reader thread when
    /// that one leaves). Callbacks that run meanwhile may issue commands: they join the queue this thread is
    /// sending.
    /// </summary>
    private void WaitToSend()
    {
        bool holding = t_reading == this;
        bool took = false;
        if (!holding)
        {
            lock (_lock)
                took = _inFlight.Count > 0 && _state == EngineState.Ready && TryTakeReaderLocked();
        }
        if (!holding && !took)
        {
            OnSendBlocked();
            try
            {
                _transport.WaitWritable(-1);
            }
            finally
            {
                OnSendUnblocked();
            }
            return;
        }
        using ReaderScope role = took ? new ReaderScope(this) : default;
        while (true)
        {
            if (_input.HasWholeHeader)
            {
                if (!Step())
                    return;
                continue;
            }
            (bool readable, bool writable) = _transport.WaitReadableOrWritable(-1);
            if (writable || _state != EngineState.Ready)
                return;
            if (readable && !Step())
                return;
        }
    }

    /// <summary>
    /// Queues NBD_CMD_DISC (it has no reply) behind every request issued before it; the sending side is shut down
    /// once it has gone out. With <paramref name="wait"/> false only what the socket takes at once is sent now.
    /// </summary>
    public void Disconnect(string call, bool wait)
    {
        Command disc = Rent();
        disc.Type = NbdCommand.Disconnect;
        lock (_lock)
        {
            if (_state != EngineState.Ready || _disconnectRequested)
            {
                disc.Release();
                throw _state != EngineState.Ready ? NotReady(call) : DisconnectRequestedError(call);
            }
            _disconnectRequested = true;
            disc.Cookie = ++_lastCookie;
            EnqueueLocked(disc);
        }
        if (wait)
            SendAllQueued();
        else
            TrySendQueued();
    }

    /// <summary>
    /// Fails the queued requests that have not had a byte sent (<c>LIBNBD_SHUTDOWN_ABANDON_PENDING</c>): they
    /// complete with ENOTCONN and are never sent.
    /// </summary>
    public void AbandonUnsent()
    {
        List<Command> abandoned = new();
        lock (_writeLock)
        {
            lock (_lock)
            {
                int keep = _headSent > 0 ? 1 : 0;
                int count = _sendQueue.Count;
                for (int i = 0; i < count; i++)
                {
                    Command cmd = _sendQueue.Dequeue();
                    if (i < keep || cmd.Type == NbdCommand.Disconnect)
                        _sendQueue.Enqueue(cmd);
                    else
                        abandoned.Add(cmd);
                }
                _queued = _sendQueue.Count;
            }
        }
        foreach (Command cmd in abandoned)
        {
            cmd.SetError(Errno.ENOTCONN, FailureKind.Connection, NbdProtocol.CommandName(cmd.Type) + ": abandoned before it was sent");
            Complete(cmd);
        }
    }

    /// <summary>Empties the queue when the connection has died; the caller holds both locks.</summary>
    private void DropQueueLocked(List<Command> disconnects)
    {
        while (_sendQueue.TryDequeue(out Command? cmd))
        {
            if (cmd.Type == NbdCommand.Disconnect)
                disconnects.Add(cmd);
        }
        _queued = 0;
        _headSent = 0;
    }

    private static NbdException DisconnectRequestedError(string call) =>
        new(Errno.EINVAL, NbdException.Format(call, "cannot request more commands after NBD_CMD_DISC", Errno.EINVAL));
}
