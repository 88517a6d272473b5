using System;
using System.Collections.Generic;
using System.Threading;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Engine;

/// <summary>The request writer: one request at a time, header and payload together, never blocking the reader.</summary>
internal sealed unsafe partial class CommandEngine
{
    /// <summary>Payloads up to this size are copied behind the header when the transport cannot gather.</summary>
    private const int SendBufferSize = 64 * 1024;

    private readonly Lock _writeLock = new();
    private readonly SocketTransport? _gatherTransport;

    /// <summary>
    /// Holds a request header; where the transport cannot gather header and payload into one system call, it is
    /// rented from the shared pool large enough to copy a small payload behind the header.
    /// </summary>
    private byte[] _sendBuffer;
    private int _sending;
    private long _bytesSent;
    private long _chunksSent;

    public long BytesSent => Interlocked.Read(ref _bytesSent);
    public long ChunksSent => Interlocked.Read(ref _chunksSent);

    [ThreadStatic]
    private static CommandEngine? t_sending;

    /// <summary>
    /// Requests issued on a thread that cannot send now without risking a deadlock or splitting another
    /// request: from a callback while this thread reads or sends. The thread sends them as soon as it is
    /// between messages (libnbd's queue of commands to issue).
    /// </summary>
    private readonly Queue<Command> _deferred = new();
    private volatile int _deferredCount;

    /// <summary>Sends a command's request, or queues it when this thread is in the middle of reading or sending.</summary>
    private void SendRequest(Command cmd)
    {
        if (t_sending == this || t_reading == this)
        {
            lock (_lock)
            {
                _deferred.Enqueue(cmd);
                _deferredCount = _deferred.Count;
            }
            return;
        }
        lock (_writeLock)
        {
            // Restored, not cleared: this may run in a callback while the thread is sending on another handle.
            CommandEngine? outer = t_sending;
            t_sending = this;
            try
            {
                WriteRequest(cmd);
                WriteDeferred();
            }
            finally
            {
                t_sending = outer;
            }
        }
    }

    /// <summary>
    /// Sends what callbacks issued; called between messages by whoever reads. Not while this thread is itself
    /// in the middle of a request (it reads while waiting to send): that sender sends them next.
    /// </summary>
    private void SendDeferred()
    {
        if (_deferredCount == 0 || t_sending == this)
            return;
        lock (_writeLock)
        {
            CommandEngine? outer = t_sending;
            t_sending = this;
            try
            {
                WriteDeferred();
            }
            finally
            {
                t_sending = outer;
            }
        }
    }

    private void WriteDeferred()
    {
        while (true)
        {
            Command? next;
            lock (_lock)
            {
                if (!_deferred.TryDequeue(out next))
                    return;
                _deferredCount = _deferred.Count;
            }
            WriteRequest(next);
        }
    }

    /// <summary>Writes one request (and write payload), holding the write lock. A transport failure kills the connection.</summary>
    private void WriteRequest(Command cmd)
    {
        if (_state != EngineState.Ready)
            return; // The connection died: the command is failed with the rest of those in flight.
        ulong payloadLength = cmd.Type == NbdCommand.Write ? cmd.Count : 0;
        ulong wireCount = cmd.Count;
        byte* payloadData = cmd.Data;
        if (cmd.RequestPayload != null)
        {
            // A filtered block status: the header's length is the payload's; it goes out only as PAYLOAD_LEN
            // announces it, and only with extended headers (as libnbd).
            wireCount = (ulong)cmd.RequestPayloadLength;
            payloadLength = ExtendedHeaders && (cmd.WireFlags & (ushort)CmdFlag.PayloadLen) != 0 ? wireCount : 0;
        }
        var header = new RequestHeader(cmd.WireFlags, cmd.Type, cmd.Cookie, cmd.Offset, wireCount);
        Interlocked.Increment(ref _sending);
        try
        {
            int headerSize = header.Write(_sendBuffer, ExtendedHeaders);
            if (payloadLength == 0)
            {
                SendAll(_sendBuffer.AsSpan(0, headerSize));
            }
            else
            {
                ReadOnlySpan<byte> payload = cmd.RequestPayload != null
                    ? cmd.RequestPayload.AsSpan(0, (int)payloadLength)
                    : new ReadOnlySpan<byte>(payloadData, (int)payloadLength);
                if (_gatherTransport != null)
                {
                    SendGathered(_sendBuffer.AsSpan(0, headerSize), payload);
                }
                else if (payload.Length <= SendBufferSize)
                {
                    payload.CopyTo(_sendBuffer.AsSpan(headerSize));
                    SendAll(_sendBuffer.AsSpan(0, headerSize + payload.Length));
                }
                else
                {
                    SendAll(_sendBuffer.AsSpan(0, headerSize));
                    SendAll(payload);
                }
            }
            Interlocked.Increment(ref _chunksSent);
            Interlocked.Add(ref _bytesSent, headerSize + (long)payloadLength);
        }
        catch (TransportException failure)
        {
            Break(failure.Errno, failure.Message);
        }
        finally
        {
            Interlocked.Decrement(ref _sending);
        }
    }

    /// <summary>Sends NBD_CMD_DISC (which has no reply) and shuts down the sending side.</summary>
    private void SendDisconnect()
    {
        ulong cookie;
        lock (_lock)
            cookie = ++_lastCookie;
        var header = new RequestHeader(0, NbdCommand.Disconnect, cookie, 0, 0);
        lock (_writeLock)
        {
            try
            {
                int headerSize = header.Write(_sendBuffer, ExtendedHeaders);
                SendAll(_sendBuffer.AsSpan(0, headerSize));
                Interlocked.Increment(ref _chunksSent);
                Interlocked.Add(ref _bytesSent, headerSize);
                _transport.ShutdownSend();
            }
            catch (TransportException failure)
            {
                Break(failure.Errno, failure.Message);
            }
        }
    }

    /// <summary>
    /// Sends every byte. When the socket is full the server may have stopped reading requests until its replies
    /// are read (the deadlock libnbd's PAUSE states avoid), so a blocked sender reads replies itself while it
    /// waits, as libnbd does, unless another thread is reading already.
    /// </summary>
    private void SendAll(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            int sent = _transport.TrySend(data);
            if (sent > 0)
            {
                data = data[sent..];
                continue;
            }
            if (sent == 0)
            {
                WaitToSend();
                continue;
            }
            // A transport that cannot try a send: keep the reader thread going during a large blocking send.
            bool large = data.Length > 16 * 1024;
            if (large)
                OnSendBlocked();
            try
            {
                _transport.Send(data);
            }
            finally
            {
                if (large)
                    OnSendUnblocked();
            }
            return;
        }
    }

    /// <summary>
    /// The socket is full: until it can take more, read replies if this thread holds (or can take) the reader
    /// role; otherwise another thread is reading, and waiting is enough. Callbacks that run meanwhile may issue
    /// commands: they are deferred (<see cref="SendRequest"/>) and sent after the current request.
    /// </summary>
    private void WaitToSend()
    {
        bool holding = t_reading == this;
        bool took = false;
        if (!holding)
        {
            lock (_lock)
            {
                if (!_readerActive && _inFlight.Count > 0 && _state == EngineState.Ready)
                {
                    _readerActive = true;
                    took = true;
                }
            }
        }
        if (!holding && !took)
        {
            _transport.WaitWritable(-1);
            return;
        }
        CommandEngine? outerReading = t_reading;
        if (took)
            t_reading = this;
        try
        {
            while (true)
            {
                if (HasBufferedMessage)
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
        finally
        {
            if (took)
            {
                t_reading = outerReading;
                ReleaseReader();
            }
        }
    }

    /// <summary>Sends a header and its payload with one gathering system call where possible, without copying.</summary>
    private void SendGathered(ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload)
    {
        while (!header.IsEmpty)
        {
            int sent = _gatherTransport!.TrySend(header, payload);
            if (sent < 0)
            {
                SendAll(header);
                break;
            }
            if (sent == 0)
            {
                WaitToSend();
                continue;
            }
            if (sent < header.Length)
            {
                header = header[sent..];
            }
            else
            {
                payload = payload[(sent - header.Length)..];
                header = default;
            }
        }
        SendAll(payload);
    }
}
