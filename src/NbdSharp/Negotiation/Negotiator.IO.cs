using System;
using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Protocol;
using NbdSharp.Transport;

namespace NbdSharp.Negotiation;

/// <summary>Option framing and the I/O primitives of the handshake.</summary>
internal sealed partial class Negotiator
{
    private bool _payloadSkipped;

    /// <summary>The header <see cref="ReceiveOptionReplyAsync"/> read last (a field, not the task's result: a task of
    /// this struct would be .NET generic code compiled at run time, see SyncPathBuilder).</summary>
    private OptionReplyHeader _reply;

    /// <summary>Input read ahead from the server: one receive usually brings a whole reply sequence.</summary>
    private byte[] _input = System.Buffers.ArrayPool<byte>.Shared.Rent(InputBufferSize);
    private int _inputStart;
    private int _inputEnd;

    /// <summary>Output gathered until the next flush: a whole option (with the client flags before the first) in one send.</summary>
    private byte[] _output = System.Buffers.ArrayPool<byte>.Shared.Rent(ReplyBufferSize);
    private int _outputLength;

    private const int InputBufferSize = 16384;

    /// <summary>
    /// Bytes the server sent beyond the end of the handshake (normally none), for the engine to read first.
    /// </summary>
    public ReadOnlySpan<byte> Leftover => _input.AsSpan(_inputStart, _inputEnd - _inputStart);

    /// <summary>Appends an option request header; the option's data follows with the Put methods.</summary>
    private void BeginOption(NbdOption option, int length)
    {
        EnsureOutput(OptionRequestHeader.Size + length);
        new OptionRequestHeader(option, (uint)length).Write(_output.AsSpan(_outputLength));
        _outputLength += OptionRequestHeader.Size;
        ChunksSent++;
    }

    private void PutUInt32(uint value)
    {
        EnsureOutput(4);
        BinaryPrimitives.WriteUInt32BigEndian(_output.AsSpan(_outputLength), value);
        _outputLength += 4;
    }

    private void PutUInt16(ushort value)
    {
        EnsureOutput(2);
        BinaryPrimitives.WriteUInt16BigEndian(_output.AsSpan(_outputLength), value);
        _outputLength += 2;
    }

    /// <summary>Appends the UTF-8 bytes of <paramref name="text"/> with no length.</summary>
    private void PutBytes(string text)
    {
        EnsureOutput(Utf8Length(text));
        _outputLength += Encoding.UTF8.GetBytes(text, _output.AsSpan(_outputLength));
    }

    /// <summary>Appends a 4-byte length and the UTF-8 bytes of <paramref name="text"/>.</summary>
    private void PutString(string text)
    {
        PutUInt32((uint)Utf8Length(text));
        PutBytes(text);
    }

    /// <summary>Grows the output buffer for what this client is about to send (never for what a server sent).</summary>
    private void EnsureOutput(int more)
    {
        if (_outputLength + more <= _output.Length)
            return;
        byte[] bigger = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(_output.Length * 2, _outputLength + more));
        _output.AsSpan(0, _outputLength).CopyTo(bigger);
        ReturnToPool(ref _output);
        _output = bigger;
    }

    /// <summary>Sends everything gathered so far.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask FlushAsync(bool async, CancellationToken cancellationToken)
    {
        int count = _outputLength;
        _outputLength = 0;
        try
        {
            if (async)
                await _transport.SendAsync(_output.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
            else
                _transport.Send(_output.AsSpan(0, count));
        }
        catch (TransportException e)
        {
            throw Fail(e.Errno, "handshake: " + e.Message, e);
        }
        BytesSent += count;
    }

    /// <summary>
    /// Reads an option reply header for <paramref name="option"/>, checks the lengths the protocol fixes, and
    /// reads its payload into the buffer (or skips an informational payload too large to be useful).
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask ReceiveOptionReplyAsync(bool async, NbdOption option, CancellationToken cancellationToken)
    {
        await ReceiveAsync(async, OptionReplyHeader.Size, cancellationToken).ConfigureAwait(false);
        if (!OptionReplyHeader.TryRead(_buffer, out OptionReplyHeader reply) || reply.Option != option)
            throw Violation("handshake: invalid option reply magic or option");
        ChunksReceived++;
        uint length = reply.Length;
        switch (reply.Type)
        {
            case OptionReplyType.Ack when length != 0:
                throw Violation("handshake: invalid NBD_REP_ACK option reply length");
            case OptionReplyType.Info when length < 2:
                throw Violation("handshake: NBD_REP_INFO reply length too small");
            case OptionReplyType.MetaContext when length <= 4 || length > 4 + NbdProtocol.MaxString:
                throw Violation("handshake: invalid NBD_REP_META_CONTEXT reply length");
            case OptionReplyType.Server when length < 4:
                throw Violation("handshake: invalid NBD_REP_SERVER reply length");
        }
        if (length > MaxOptionReplyLength)
            throw Violation("handshake: invalid option reply length " + length.ToString(CultureInfo.InvariantCulture));
        if (reply.IsError && length > NbdProtocol.MaxString)
            throw Violation("handshake: option error string too long");
        _payloadSkipped = length > ReplyBufferSize;
        if (_payloadSkipped)
        {
            Debug("skipping large option reply of " + length.ToString(CultureInfo.InvariantCulture) + " bytes");
            await SkipAsync(async, length, cancellationToken).ConfigureAwait(false);
        }
        else if (length > 0)
        {
            await ReceiveAsync(async, (int)length, cancellationToken).ConfigureAwait(false);
        }
        _reply = reply;
    }

    /// <summary>
    /// The server refused an option: the connection stays in negotiation, so this is a server refusal, never a
    /// broken connection (a reply that is not an error at all is a protocol error, though). libnbd's errno: ENOTSUP
    /// for the refusal of a listing or a metadata context request (<paramref name="request"/> names it: "list",
    /// "meta context"), otherwise the errno of the reply type, or ENOTSUP where it has none.
    /// </summary>
    private NbdServerException Refusal(OptionReplyHeader reply, string? request = null)
    {
        RequireError(reply);
        string detail = DescribeOptionError(reply, out int errno);
        if (request != null)
        {
            detail = "server replied with error to " + request + " request: " + detail;
            errno = Errno.ENOTSUP;
        }
        else if (errno == 0)
        {
            errno = Errno.ENOTSUP;
        }
        return new NbdServerException(errno, NbdException.Format(_call, detail, errno));
    }

    /// <summary>Anything but an error reply here breaks the protocol.</summary>
    private void RequireError(OptionReplyHeader reply)
    {
        if (!reply.IsError)
            throw Violation("handshake: unexpected option reply type " + ((uint)reply.Type).ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// libnbd's wording of an option error, followed by the server's own message (non-printable bytes quoted),
    /// and the errno libnbd reports for it (0 where libnbd has none).
    /// </summary>
    private string DescribeOptionError(OptionReplyHeader reply, out int errno)
    {
        errno = 0;
        string text;
        switch (reply.Type)
        {
            case OptionReplyType.ErrUnsup:
                errno = Errno.ENOTSUP;
                text = "the operation is not supported by the server";
                break;
            case OptionReplyType.ErrPolicy:
                text = "server policy prevents the operation";
                break;
            case OptionReplyType.ErrPlatform:
                text = "the operation is not supported by the server platform";
                break;
            case OptionReplyType.ErrInvalid:
                errno = Errno.EINVAL;
                text = "the server rejected this operation as invalid";
                break;
            case OptionReplyType.ErrTooBig:
                errno = Errno.EINVAL;
                text = "the operation is too large to process";
                break;
            case OptionReplyType.ErrTlsReqd:
                errno = Errno.ENOTSUP;
                text = "the server requires TLS encryption first";
                break;
            case OptionReplyType.ErrUnknown:
                errno = Errno.ENOENT;
                text = "the server has no export named '" + Settings.ExportName + "'";
                break;
            case OptionReplyType.ErrShutdown:
                errno = Errno.ESHUTDOWN;
                text = "the server is shutting down";
                break;
            case OptionReplyType.ErrBlockSizeReqd:
                errno = Errno.EINVAL;
                text = "the server requires specific block sizes";
                break;
            case OptionReplyType.ErrExtHeaderReqd:
                errno = Errno.EINVAL;
                text = "the server requires extended headers first";
                break;
            default:
                text = "handshake: unknown reply from the server: 0x" + ((uint)reply.Type).ToString("x", CultureInfo.InvariantCulture);
                break;
        }
        if (reply.Length > 0 && !_payloadSkipped)
            text += ": " + ServerText.Quote(Payload(reply));
        return text;
    }

    /// <summary>The payload of the option reply just received (read into the message buffer).</summary>
    private ReadOnlySpan<byte> Payload(OptionReplyHeader reply) => _buffer.AsSpan(0, (int)reply.Length);

    private static int Utf8Length(string text) => Encoding.UTF8.GetByteCount(text);

    /// <summary>Makes the next <paramref name="count"/> bytes of the server's stream the start of the message buffer.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask ReceiveAsync(bool async, int count, CancellationToken cancellationToken)
    {
        await FillAsync(async, count, cancellationToken).ConfigureAwait(false);
        _input.AsSpan(_inputStart, count).CopyTo(_buffer);
        _inputStart += count;
    }

    /// <summary>Consumes and discards <paramref name="count"/> bytes of the server's stream.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask SkipAsync(bool async, uint count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            int take = (int)Math.Min(count, (uint)ReplyBufferSize);
            await FillAsync(async, take, cancellationToken).ConfigureAwait(false);
            _inputStart += take;
            count -= (uint)take;
        }
    }

    /// <summary>Reads from the server until at least <paramref name="count"/> bytes are buffered (taking whatever else has arrived).</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask FillAsync(bool async, int count, CancellationToken cancellationToken)
    {
        if (_inputEnd - _inputStart >= count)
            return;
        int buffered = _inputEnd - _inputStart;
        _input.AsSpan(_inputStart, buffered).CopyTo(_input);
        _inputStart = 0;
        _inputEnd = buffered;
        try
        {
            while (_inputEnd < count)
            {
                int received = async
                    ? await _transport.ReceiveAsync(_input.AsMemory(_inputEnd), cancellationToken).ConfigureAwait(false)
                    : _transport.Receive(_input.AsSpan(_inputEnd));
                if (received == 0)
                    throw Fail(Errno.ENOTCONN, "handshake: server disconnected unexpectedly");
                _inputEnd += received;
                BytesReceived += received;
            }
        }
        catch (TransportException e)
        {
            throw Fail(e.Errno, "handshake: " + e.Message, e);
        }
    }

    /// <summary>The handshake cannot go on (the server went away, a transport or TLS failure, TLS required but refused).</summary>
    private NbdConnectionException Fail(int errno, string detail, Exception? inner = null) =>
        new(errno, NbdException.Format(_call, detail, errno), inner);

    /// <summary>The server broke the protocol (with libnbd's errno: EPROTO, or what libnbd reports for the case).</summary>
    private NbdProtocolException Violation(string detail, int errno = Errno.EPROTO) =>
        new(errno, NbdException.Format(_call, detail, errno));

    private void Debug(string message)
    {
        if (_log.Enabled)
            _log.Write(_call, message);
    }
}
