using System;
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

    /// <summary>Writes a command's request (and write payload). A transport failure kills the connection.</summary>
    private void SendRequest(Command cmd)
    {
        ulong payloadLength = cmd.Type == NbdCommand.Write ? cmd.Count : 0;
        var header = new RequestHeader(cmd.WireFlags, cmd.Type, cmd.Cookie, cmd.Offset, cmd.Count);
        lock (_writeLock)
        {
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
                    var payload = new ReadOnlySpan<byte>(cmd.Data, (int)payloadLength);
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
    /// Sends every byte. When the socket is full, makes sure somebody reads replies meanwhile (a server may
    /// stop reading requests until its replies are read: the deadlock libnbd's PAUSE states avoid).
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
            bool mayBlockLong = sent == 0 || data.Length > 16 * 1024;
            if (mayBlockLong)
                OnSendBlocked();
            try
            {
                if (sent < 0)
                {
                    _transport.Send(data);
                    return;
                }
                _transport.WaitWritable(-1);
            }
            finally
            {
                if (mayBlockLong)
                    OnSendUnblocked();
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
                OnSendBlocked();
                try
                {
                    _transport.WaitWritable(-1);
                }
                finally
                {
                    OnSendUnblocked();
                }
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
