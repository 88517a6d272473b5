using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading.Tasks;
using NbdSharp.Protocol;

namespace NbdSharp.Testing;

/// <summary>What the scripted server's default handshake offers.</summary>
public sealed class ScriptedExport
{
    public ulong Size { get; set; } = 1024 * 1024;

    /// <summary>Transmission flags (NBD_FLAG_*): by default has-flags, flush, FUA, trim, write zeroes, cache, fast zero, multi-conn.</summary>
    public ushort Flags { get; set; } = 0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0400 | 0x0800 | 0x0100;

    public bool StructuredReplies { get; set; } = true;
    public bool ExtendedHeaders { get; set; }

    /// <summary>Contexts the server offers, by name, with their ids.</summary>
    public Dictionary<string, uint> MetaContexts { get; } = new() { ["base:allocation"] = 1 };

    /// <summary>Block size constraints to advertise (minimum, preferred, maximum), or null.</summary>
    public (uint Minimum, uint Preferred, uint Maximum)? BlockSize { get; set; }
}

/// <summary>A request as the scripted server received it.</summary>
public sealed record ScriptedRequest(ushort Flags, ushort Type, ulong Cookie, ulong Offset, ulong Length, byte[] Payload)
{
    public bool IsRead => Type == 0;
    public bool IsWrite => Type == 1;
    public bool IsDisconnect => Type == 2;
}

/// <summary>The server side of one connection of a <see cref="ScriptedServer"/>.</summary>
public sealed class ScriptedConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;

    internal ScriptedConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    /// <summary>Whether structured replies were negotiated by <see cref="NegotiateAsync"/>.</summary>
    public bool Structured { get; private set; }

    /// <summary>Whether extended headers were negotiated by <see cref="NegotiateAsync"/>.</summary>
    public bool Extended { get; private set; }

    /// <summary>Contexts selected by the client's last NBD_OPT_SET_META_CONTEXT, name to id.</summary>
    public Dictionary<string, uint> SelectedContexts { get; } = new();

    /// <summary>Options the client sent, in order.</summary>
    public List<uint> OptionsSeen { get; } = new();

    public Task WriteAsync(byte[] data) => _stream.WriteAsync(data).AsTask();

    public async Task<byte[]> ReadExactlyAsync(int count)
    {
        byte[] buffer = new byte[count];
        await _stream.ReadExactlyAsync(buffer).ConfigureAwait(false);
        return buffer;
    }

    /// <summary>Reads until the client closes the connection (or it breaks); returns the bytes read.</summary>
    public async Task<long> DrainAsync()
    {
        byte[] buffer = new byte[65536];
        long total = 0;
        try
        {
            int n;
            while ((n = await _stream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
                total += n;
        }
        catch (IOException)
        {
        }
        return total;
    }

    /// <summary>Closes the connection abruptly.</summary>
    public void Close()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _stream.Dispose();
    }

    public Task SendNewstyleGreetingAsync(ushort globalFlags = 0x0003)
    {
        byte[] greeting = new byte[18];
        new Greeting(NbdMagic.Greeting, NbdMagic.IHaveOpt).Write(greeting);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), globalFlags);
        return WriteAsync(greeting);
    }

    public Task SendOldstyleHandshakeAsync(ulong size, ushort flags)
    {
        byte[] handshake = new byte[NbdProtocol.OldstyleHandshakeSize];
        new Greeting(NbdMagic.Greeting, NbdMagic.Oldstyle).Write(handshake);
        new OldstyleHandshake(size, 0, flags).Write(handshake.AsSpan(Greeting.Size));
        return WriteAsync(handshake);
    }

    public async Task<uint> ReadClientFlagsAsync() => BinaryPrimitives.ReadUInt32BigEndian(await ReadExactlyAsync(4).ConfigureAwait(false));

    public async Task<(uint Option, byte[] Data)> ReadOptionAsync()
    {
        byte[] header = await ReadExactlyAsync(OptionRequestHeader.Size).ConfigureAwait(false);
        if (!OptionRequestHeader.TryRead(header, out OptionRequestHeader request))
            throw new InvalidDataException("client sent a bad option header");
        byte[] data = await ReadExactlyAsync((int)request.Length).ConfigureAwait(false);
        OptionsSeen.Add((uint)request.Option);
        return ((uint)request.Option, data);
    }

    public Task ReplyOptionAsync(uint option, uint type, byte[]? payload = null, uint? claimedLength = null)
    {
        payload ??= [];
        byte[] reply = new byte[OptionReplyHeader.Size + payload.Length];
        new OptionReplyHeader((NbdOption)option, (OptionReplyType)type, claimedLength ?? (uint)payload.Length).Write(reply);
        payload.CopyTo(reply, OptionReplyHeader.Size);
        return WriteAsync(reply);
    }

    public static byte[] InfoExport(ulong size, ushort flags)
    {
        byte[] info = new byte[NbdInfoExport.Size];
        new NbdInfoExport(size, flags).Write(info);
        return info;
    }

    /// <summary>
    /// A well-behaved fixed-newstyle handshake offering <paramref name="export"/>: greeting, then it answers
    /// options until NBD_OPT_GO or NBD_OPT_EXPORT_NAME. Returns false if the client aborted.
    /// </summary>
    public async Task<bool> NegotiateAsync(ScriptedExport export)
    {
        await SendNewstyleGreetingAsync().ConfigureAwait(false);
        await ReadClientFlagsAsync().ConfigureAwait(false);
        while (true)
        {
            (uint option, byte[] data) = await ReadOptionAsync().ConfigureAwait(false);
            switch ((NbdOption)option)
            {
                case NbdOption.ExtendedHeaders when export.ExtendedHeaders:
                    Extended = true;
                    Structured = true;
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Ack).ConfigureAwait(false);
                    break;
                case NbdOption.StructuredReply when export.StructuredReplies && !Extended:
                    Structured = true;
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Ack).ConfigureAwait(false);
                    break;
                case NbdOption.SetMetaContext when Structured:
                    SelectedContexts.Clear();
                    foreach (string query in ParseQueries(data))
                    {
                        if (!export.MetaContexts.TryGetValue(query, out uint id))
                            continue;
                        SelectedContexts[query] = id;
                        byte[] payload = new byte[4 + Encoding.UTF8.GetByteCount(query)];
                        BinaryPrimitives.WriteUInt32BigEndian(payload, id);
                        Encoding.UTF8.GetBytes(query, payload.AsSpan(4));
                        await ReplyOptionAsync(option, (uint)OptionReplyType.MetaContext, payload).ConfigureAwait(false);
                    }
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Ack).ConfigureAwait(false);
                    break;
                case NbdOption.Go:
                case NbdOption.Info:
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Info, InfoExport(export.Size, export.Flags)).ConfigureAwait(false);
                    if (export.BlockSize is { } sizes)
                    {
                        byte[] info = new byte[NbdInfoBlockSize.Size];
                        new NbdInfoBlockSize(sizes.Minimum, sizes.Preferred, sizes.Maximum).Write(info);
                        await ReplyOptionAsync(option, (uint)OptionReplyType.Info, info).ConfigureAwait(false);
                    }
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Ack).ConfigureAwait(false);
                    if ((NbdOption)option == NbdOption.Go)
                        return true;
                    break;
                case NbdOption.ExportName:
                    byte[] reply = new byte[NbdProtocol.ExportNameReplyShortSize];
                    new ExportNameReply(export.Size, export.Flags).Write(reply, noZeroes: true);
                    await WriteAsync(reply).ConfigureAwait(false);
                    return true;
                case NbdOption.Abort:
                    await ReplyOptionAsync(option, (uint)OptionReplyType.Ack).ConfigureAwait(false);
                    return false;
                default:
                    await ReplyOptionAsync(option, (uint)OptionReplyType.ErrUnsup).ConfigureAwait(false);
                    break;
            }
        }
    }

    private static List<string> ParseQueries(byte[] data)
    {
        var queries = new List<string>();
        int at = 0;
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(at));
        at += 4 + (int)nameLength;
        uint count = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(at));
        at += 4;
        for (uint i = 0; i < count; i++)
        {
            int length = (int)BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(at));
            queries.Add(Encoding.UTF8.GetString(data, at + 4, length));
            at += 4 + length;
        }
        return queries;
    }

    /// <summary>Reads one request (and its write payload).</summary>
    public async Task<ScriptedRequest> ReadRequestAsync()
    {
        int size = Extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize;
        byte[] header = await ReadExactlyAsync(size).ConfigureAwait(false);
        if (!RequestHeader.TryRead(header, out RequestHeader request, out _))
            throw new InvalidDataException("client sent a bad request header");
        // A write carries its data; with extended headers, any request flagged PAYLOAD_LEN carries a payload.
        bool hasPayload = request.Type == NbdCommand.Write || (Extended && (request.Flags & 0x20) != 0);
        byte[] payload = hasPayload
            ? await ReadExactlyAsync((int)request.Length).ConfigureAwait(false)
            : [];
        return new ScriptedRequest(request.Flags, (ushort)request.Type, request.Cookie, request.Offset, request.Length, payload);
    }

    public Task SendSimpleReplyAsync(ulong cookie, uint error = 0, byte[]? data = null)
    {
        data ??= [];
        byte[] reply = new byte[SimpleReplyHeader.Size + data.Length];
        new SimpleReplyHeader(error, cookie).Write(reply);
        data.CopyTo(reply, SimpleReplyHeader.Size);
        return WriteAsync(reply);
    }

    /// <summary>
    /// Sends a chunk in the negotiated framing (structured, or extended with <paramref name="requestOffset"/>).
    /// <paramref name="claimedLength"/> lies about the payload length when a test wants it to.
    /// </summary>
    public Task SendChunkAsync(ulong cookie, ushort flags, ushort type, byte[] payload, ulong requestOffset = 0, ulong? claimedLength = null)
    {
        ulong length = claimedLength ?? (ulong)payload.Length;
        byte[] chunk;
        if (Extended)
        {
            chunk = new byte[ExtendedReplyHeader.Size + payload.Length];
            new ExtendedReplyHeader(flags, type, cookie, requestOffset, length).Write(chunk);
            payload.CopyTo(chunk, ExtendedReplyHeader.Size);
        }
        else
        {
            chunk = new byte[StructuredReplyHeader.Size + payload.Length];
            new StructuredReplyHeader(flags, type, cookie, (uint)length).Write(chunk);
            payload.CopyTo(chunk, StructuredReplyHeader.Size);
        }
        return WriteAsync(chunk);
    }

    public const ushort Done = 1;

    public Task SendDataChunkAsync(ScriptedRequest request, ulong offset, byte[] data, bool done)
    {
        byte[] payload = new byte[8 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(payload, offset);
        data.CopyTo(payload, 8);
        return SendChunkAsync(request.Cookie, done ? Done : (ushort)0, (ushort)ChunkType.OffsetData, payload, request.Offset);
    }

    public Task SendHoleChunkAsync(ScriptedRequest request, ulong offset, uint length, bool done)
    {
        byte[] payload = new byte[OffsetHoleChunk.Size];
        new OffsetHoleChunk(offset, length).Write(payload);
        return SendChunkAsync(request.Cookie, done ? Done : (ushort)0, (ushort)ChunkType.OffsetHole, payload, request.Offset);
    }

    public Task SendNoneChunkAsync(ScriptedRequest request) =>
        SendChunkAsync(request.Cookie, Done, (ushort)ChunkType.None, [], request.Offset);

    public Task SendErrorChunkAsync(ScriptedRequest request, uint error, string message, bool done, ulong? errorOffset = null)
    {
        byte[] text = Encoding.UTF8.GetBytes(message);
        byte[] payload = new byte[ErrorChunkPrefix.Size + text.Length + (errorOffset.HasValue ? 8 : 0)];
        new ErrorChunkPrefix(error, (ushort)text.Length).Write(payload);
        text.CopyTo(payload, ErrorChunkPrefix.Size);
        if (errorOffset.HasValue)
            BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(ErrorChunkPrefix.Size + text.Length), errorOffset.Value);
        ushort type = (ushort)(errorOffset.HasValue ? ChunkType.ErrorOffset : ChunkType.Error);
        return SendChunkAsync(request.Cookie, done ? Done : (ushort)0, type, payload, request.Offset);
    }

    /// <summary>A block status chunk for context <paramref name="contextId"/> (32- or 64-bit per the framing).</summary>
    public Task SendBlockStatusAsync(ScriptedRequest request, uint contextId, IReadOnlyList<(ulong Length, ulong Flags)> extents, bool done)
    {
        byte[] payload;
        ushort type;
        if (Extended)
        {
            payload = new byte[8 + (16 * extents.Count)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4), (uint)extents.Count);
            for (int i = 0; i < extents.Count; i++)
            {
                BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(8 + (16 * i)), extents[i].Length);
                BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(16 + (16 * i)), extents[i].Flags);
            }
            type = (ushort)ChunkType.BlockStatusExt;
        }
        else
        {
            payload = new byte[4 + (8 * extents.Count)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
            for (int i = 0; i < extents.Count; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + (8 * i)), (uint)extents[i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + (8 * i)), (uint)extents[i].Flags);
            }
            type = (ushort)ChunkType.BlockStatus;
        }
        return SendChunkAsync(request.Cookie, done ? Done : (ushort)0, type, payload, request.Offset);
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync().ConfigureAwait(false);
    }
}
