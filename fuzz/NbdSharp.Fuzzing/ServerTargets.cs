using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Text;
using NbdSharp.Protocol;
using NbdSharp.Server;
using NbdSharp.Server.Negotiation;
using NbdSharp.Server.Transmission;

namespace NbdSharp.Fuzzing;

/// <summary>
/// The server's fuzzing targets: the fuzzer plays the client. Each runs a real server session (the handshake and the
/// transmission loop, as <see cref="NbdServer"/> runs them) on an in-memory stream (<see cref="ServerSession"/>) and
/// judges it against a model written from proto.md, not from the server's code:
/// <list type="bullet">
/// <item><c>server-request</c>: [setup][split] then transmission-phase bytes, after a canned handshake that the setup
/// byte picks (simple, structured or extended replies; minimum block 1 or 512; read-only or not; an export with or
/// without extents; two extents per block status reply or many). Every request header is put to <see cref="RequestRules.Check"/>, which
/// must accept exactly the requests proto.md allows; then the session runs and every request the server read must get
/// exactly one well-formed reply (a read's chunks tile it exactly, an error carries the rules' error) and the export
/// must only see calls inside the disk.</item>
/// <item><c>server-option</c>: [split] then everything the client sends from its flags on. The option decoders
/// (<see cref="OptionPayloads"/>) must agree with an independent decoder on every payload; the session's option replies
/// must come in order, one final reply per option, with well-formed payloads; a malformed payload must be refused.</item>
/// </list>
/// Cookies are rewritten to the request's number before the session, so that replies are matched without ambiguity
/// (the server never looks at them).
/// </summary>
public static class ServerTargets
{
    /// <summary>The size of the exports the server targets serve.</summary>
    public const long ExportSize = 1 << 20;

    /// <summary>The largest option the option target's server reads (the lowest limit NbdServerOptions allows is 4104).</summary>
    public const int MaxOptionLength = 8192;

    private const int MaxInput = 64 * 1024;
    /// <summary>The maximum payload the request target's export advertises: small, so that inputs stay small.</summary>
    private const int MaxPayload = 16 * 1024;
    private const ulong MaxDiscarded = 32 * 1024 * 1024;
    private const uint MaxSkippedOption = 16 * 1024 * 1024;
    private const CommandFlags KnownFlags = (CommandFlags)0x3F;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // ================================================================== server-request

    /// <summary>How the request target's canned handshake leaves the connection, from its first input byte.</summary>
    public readonly record struct RequestSetup(byte Value)
    {
        /// <summary>Simple, structured or extended replies (the low two bits modulo 3).</summary>
        public ReplyMode Mode => (ReplyMode)((Value & 3) % 3);

        /// <summary>Minimum block size 512 instead of 1.</summary>
        public bool Aligned => (Value & 0x04) != 0;

        /// <summary>A read-only export.</summary>
        public bool ReadOnly => (Value & 0x08) != 0;

        /// <summary>An export without extents: plain data chunks, block status as one allocated extent.</summary>
        public bool Dense => (Value & 0x10) != 0;

        /// <summary>At most two extents per block status reply.</summary>
        public bool FewExtents => (Value & 0x20) != 0;

        internal int MaxExtents => FewExtents ? 2 : 65536;

        internal bool Structured => Mode != ReplyMode.Simple;

        internal bool Extended => Mode == ReplyMode.Extended;

        internal ExportBlockSize BlockSize => new(Aligned ? 512u : 1u, 4096, MaxPayload);

        /// <summary>What the client sends before its requests: flags, the reply mode, base:allocation, GO.</summary>
        public byte[] ClientHandshake()
        {
            var s = new ClientScript().Flags(3);
            if (Extended)
                s.Option(NbdOption.ExtendedHeaders);
            else if (Structured)
                s.Option(NbdOption.StructuredReply);
            if (Structured)
                s.MetaContext(NbdOption.SetMetaContext, "", "base:allocation");
            s.Info(NbdOption.Go, "", NbdInfoType.BlockSize);
            return s.ToArray();
        }
    }

    /// <summary>One request the server reads whole, as the model frames the client's bytes.</summary>
    private sealed record ModelRequest(RequestHeader Header, RequestVerdict Verdict, uint Error, ulong Cookie)
    {
        public bool Answered { get; set; }
    }

    /// <summary>The request target: see the class remarks.</summary>
    public static FuzzOutcome Request(ReadOnlySpan<byte> input)
    {
        if (input.Length < 2)
            return new FuzzOutcome(false, 0, 0, 0);
        var setup = new RequestSetup(input[0]);
        int split = input[1];
        byte[] transmission = input[2..Math.Min(input.Length, 2 + MaxInput)].ToArray();
        using var export = new CheckingExport(ExportSize, setup.BlockSize, setup.ReadOnly, setup.Dense);
        var state = new TransmissionState(ExportSize, new ServedExport("", null, export).Flags(setup.Structured), setup.BlockSize,
            setup.Structured, setup.Extended, BaseAllocation: setup.Structured);
        List<ModelRequest> requests = FrameRequests(transmission, state);

        byte[] handshake = setup.ClientHandshake();
        var options = new NbdServerOptions { MaxRequestsInFlight = 4, MaxBytesInFlight = 2 * MaxPayload, MaxExtentsPerReply = setup.MaxExtents };
        byte[]? output = ServerSession.Run([.. handshake, .. transmission], split, options, [("", export, null)]);
        export.ThrowIfBroken();
        if (output == null)
            return new FuzzOutcome(true, requests.Count, 0, 0);
        var reader = new Reader(output);
        ExpectCannedHandshake(reader, setup);
        return CheckReplies(reader, setup, state, requests);
    }

    /// <summary>
    /// Frames the client's bytes as the server must (a header, then the payload its rules say follows), checking each
    /// verdict of <see cref="RequestRules.Check"/> against proto.md, and rewrites each cookie to the request's number.
    /// Stops where the server stops reading: end of input, a bad magic, a disconnect.
    /// </summary>
    private static List<ModelRequest> FrameRequests(byte[] bytes, in TransmissionState state)
    {
        var requests = new List<ModelRequest>();
        int headerSize = state.Extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize;
        int position = 0;
        while (bytes.Length - position >= headerSize)
        {
            if (!RequestHeader.TryRead(bytes.AsSpan(position), out RequestHeader header, out int size) || size != headerSize)
                break;
            ulong cookie = (ulong)requests.Count + 1;
            BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(position + 8), cookie);
            position += size;
            RequestVerdict verdict = RequestRules.Check(header, state, out ulong payload, out uint error, out _);
            CheckVerdict(header, state, verdict, payload, error);
            if (verdict == RequestVerdict.Disconnect || payload > (ulong)(bytes.Length - position))
                break;
            position += (int)payload;
            if (verdict == RequestVerdict.Ok && header.Type == NbdCommand.Disconnect)
                break;
            requests.Add(new ModelRequest(header, verdict, error, cookie));
        }
        return requests;
    }

    /// <summary>The rules' verdict on one header must be proto.md's (and the server's documented limits).</summary>
    private static void CheckVerdict(in RequestHeader h, in TransmissionState state, RequestVerdict verdict, ulong payload, uint error)
    {
        var flags = (CommandFlags)h.Flags;
        NbdCommand command = h.Type;
        bool payloadLen = (flags & CommandFlags.PayloadLen) != 0;
        ulong follows = state.Extended ? (payloadLen ? h.Length : 0) : (command == NbdCommand.Write ? h.Length : 0);
        bool unframed = state.Extended && command == NbdCommand.Write && !payloadLen;
        ExportBlockSize block = state.BlockSize;
        string request = $"{command} flags 0x{h.Flags:x} offset {h.Offset} length {h.Length} ({(state.Extended ? "extended" : state.Structured ? "structured" : "simple")})";

        if (unframed || follows > MaxDiscarded)
        {
            if (verdict != RequestVerdict.Disconnect)
                throw new FuzzInvariantException($"{request}: the payload cannot be read, yet the verdict is {verdict}");
            return;
        }
        if (verdict == RequestVerdict.Disconnect)
        {
            if (follows <= block.Maximum)
                throw new FuzzInvariantException($"{request}: disconnects though {follows} payload bytes could be read");
            return;
        }
        if (payload != follows)
            throw new FuzzInvariantException($"{request}: the rules read {payload} payload bytes, proto.md says {follows}");

        TransmissionFlags advertised = state.Flags;
        bool readOnly = (advertised & TransmissionFlags.ReadOnly) != 0;
        bool ranged = command is NbdCommand.Read or NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes or NbdCommand.Cache
            or NbdCommand.BlockStatus;
        ulong size = (ulong)state.Size;
        bool valid = (flags & ~KnownFlags) == 0 && (command is NbdCommand.Disconnect or NbdCommand.Flush || ranged);
        valid = valid && follows <= block.Maximum;
        valid = valid && ((flags & CommandFlags.Fua) == 0 || (advertised & TransmissionFlags.SendFua) != 0);
        valid = valid && ((flags & CommandFlags.Df) == 0 || (command == NbdCommand.Read && (advertised & TransmissionFlags.SendDf) != 0));
        valid = valid && ((flags & CommandFlags.ReqOne) == 0 || command == NbdCommand.BlockStatus);
        valid = valid && ((flags & CommandFlags.NoHole) == 0 || command == NbdCommand.WriteZeroes);
        valid = valid && ((flags & CommandFlags.FastZero) == 0 ||
            (command == NbdCommand.WriteZeroes && (advertised & TransmissionFlags.SendFastZero) != 0));
        valid = valid && (!payloadLen || (state.Extended && command == NbdCommand.Write));
        if (command == NbdCommand.Flush)
            valid = valid && (advertised & TransmissionFlags.SendFlush) != 0 && h.Offset == 0 && h.Length == 0;
        if (ranged)
        {
            valid = valid && h.Length > 0 && h.Offset <= size && h.Length <= size - h.Offset;
            valid = valid && h.Offset % block.Minimum == 0 && (h.Length % block.Minimum == 0 || h.Offset + h.Length == size);
        }
        if (command is NbdCommand.Read or NbdCommand.Write)
            valid = valid && h.Length <= block.Maximum;
        if (command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes)
            valid = valid && !readOnly;
        if (command == NbdCommand.Trim)
            valid = valid && (advertised & TransmissionFlags.SendTrim) != 0;
        if (command == NbdCommand.Cache)
            valid = valid && (advertised & TransmissionFlags.SendCache) != 0;
        if (command == NbdCommand.BlockStatus)
            valid = valid && state.BaseAllocation;

        if (valid != (verdict == RequestVerdict.Ok))
            throw new FuzzInvariantException($"{request}: the rules say {verdict}, proto.md says {(valid ? "valid" : "invalid")}");
        if (verdict == RequestVerdict.Error && error is not (NbdErrors.Einval or NbdErrors.Enospc or NbdErrors.Eperm or NbdErrors.Eoverflow))
            throw new FuzzInvariantException($"{request}: refused with error {error}");
    }

    private static void ExpectCannedHandshake(Reader reader, RequestSetup setup)
    {
        ExpectGreeting(reader);
        if (setup.Extended)
            ExpectFinal(reader, NbdOption.ExtendedHeaders, OptionReplyType.Ack);
        else if (setup.Structured)
            ExpectFinal(reader, NbdOption.StructuredReply, OptionReplyType.Ack);
        if (setup.Structured)
        {
            (OptionReplyHeader context, byte[] name) = ReadOptionReply(reader, "the canned handshake");
            if (context.Type != OptionReplyType.MetaContext || !name.AsSpan().SequenceEqual((byte[])[0, 0, 0, 1, .. "base:allocation"u8]))
                throw new FuzzInvariantException("the canned handshake: base:allocation was not granted as context 1");
            ExpectFinal(reader, NbdOption.SetMetaContext, OptionReplyType.Ack);
        }
        while (true)
        {
            (OptionReplyHeader reply, _) = ReadOptionReply(reader, "the canned handshake");
            if (reply.Option != NbdOption.Go || (reply.Type != OptionReplyType.Info && reply.Type != OptionReplyType.Ack))
                throw new FuzzInvariantException($"the canned handshake: GO got reply type 0x{(uint)reply.Type:x}");
            if (reply.Type == OptionReplyType.Ack)
                return;
        }
    }

    private static void ExpectFinal(Reader reader, NbdOption option, OptionReplyType type)
    {
        (OptionReplyHeader reply, _) = ReadOptionReply(reader, "the canned handshake");
        if (reply.Option != option || reply.Type != type)
            throw new FuzzInvariantException($"the canned handshake: {option} got reply type 0x{(uint)reply.Type:x}");
    }

    /// <summary>Reads every reply: each belongs to a request the server read and not yet answered, and is well formed.</summary>
    private static FuzzOutcome CheckReplies(Reader reader, RequestSetup setup, in TransmissionState state, List<ModelRequest> requests)
    {
        int succeeded = 0, failed = 0;
        while (!reader.AtEnd)
        {
            bool ok = setup.Structured ? StructuredReply(reader, setup, state, requests) : SimpleReply(reader, requests);
            if (ok)
                succeeded++;
            else
                failed++;
        }
        foreach (ModelRequest r in requests)
        {
            if (!r.Answered)
                throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type} offset {r.Header.Offset} length {r.Header.Length}) got no reply");
        }
        return new FuzzOutcome(true, requests.Count, succeeded, failed);
    }

    private static ModelRequest Match(List<ModelRequest> requests, ulong cookie)
    {
        if (cookie < 1 || cookie > (ulong)requests.Count)
            throw new FuzzInvariantException($"a reply to cookie {cookie}, which no request read by the server carries");
        ModelRequest r = requests[(int)cookie - 1];
        if (r.Answered)
            throw new FuzzInvariantException($"a second reply to request {cookie} ({r.Header.Type})");
        return r;
    }

    private static void ExpectOutcome(ModelRequest r, uint error)
    {
        if (r.Verdict == RequestVerdict.Error && error != r.Error)
            throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type}) was refused with {r.Error} but answered {error}");
        // A memory disk does not fail: what the rules accept succeeds.
        if (r.Verdict == RequestVerdict.Ok && error != NbdErrors.Success)
            throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type} offset {r.Header.Offset} length {r.Header.Length}) failed with {error}");
    }

    private static bool SimpleReply(Reader reader, List<ModelRequest> requests)
    {
        ReadOnlySpan<byte> bytes = reader.Take(SimpleReplyHeader.Size, "a simple reply");
        if (!SimpleReplyHeader.TryRead(bytes, out SimpleReplyHeader reply))
            throw new FuzzInvariantException("a reply without the simple reply magic");
        ModelRequest r = Match(requests, reply.Cookie);
        ExpectOutcome(r, reply.Error);
        if (reply.Error == NbdErrors.Success && r.Header.Type == NbdCommand.Read)
            reader.Take((int)r.Header.Length, "a read's data");
        r.Answered = true;
        return reply.Error == NbdErrors.Success;
    }

    /// <summary>One whole structured reply: chunks of one cookie up to the one flagged done (a simple reply is one too).</summary>
    private static bool StructuredReply(Reader reader, RequestSetup setup, in TransmissionState state, List<ModelRequest> requests)
    {
        bool extended = setup.Extended;
        ModelRequest? r = null;
        var pieces = new List<(ulong Offset, ulong Length)>();
        int contexts = 0;
        uint error = NbdErrors.Success;
        while (true)
        {
            ReadOnlySpan<byte> magic = reader.Peek(4, "a reply");
            uint m = BinaryPrimitives.ReadUInt32BigEndian(magic);
            if (m == NbdMagic.SimpleReply && !extended)
            {
                if (r != null)
                    throw new FuzzInvariantException($"request {r.Cookie}: a simple reply amid its chunks");
                SimpleReplyHeader.TryRead(reader.Take(SimpleReplyHeader.Size, "a simple reply"), out SimpleReplyHeader simple);
                r = Match(requests, simple.Cookie);
                // Under structured replies a simple reply may only carry a success without data.
                if (simple.Error != NbdErrors.Success || r.Header.Type is NbdCommand.Read or NbdCommand.BlockStatus)
                    throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type}): a simple reply with error {simple.Error} under structured replies");
                ExpectOutcome(r, NbdErrors.Success);
                r.Answered = true;
                return true;
            }
            ushort flags, type;
            ulong cookie, length, headerOffset = 0;
            if (extended)
            {
                if (m != NbdMagic.ExtendedReply)
                    throw new FuzzInvariantException($"a reply with magic 0x{m:x8} under extended headers");
                ReadOnlySpan<byte> h = reader.Take(ExtendedReplyHeader.Size, "an extended reply header");
                flags = BinaryPrimitives.ReadUInt16BigEndian(h[4..]);
                type = BinaryPrimitives.ReadUInt16BigEndian(h[6..]);
                cookie = BinaryPrimitives.ReadUInt64BigEndian(h[8..]);
                headerOffset = BinaryPrimitives.ReadUInt64BigEndian(h[16..]);
                length = BinaryPrimitives.ReadUInt64BigEndian(h[24..]);
            }
            else
            {
                if (!StructuredReplyHeader.TryRead(reader.Take(StructuredReplyHeader.Size, "a chunk header"), out StructuredReplyHeader h))
                    throw new FuzzInvariantException($"a reply with magic 0x{m:x8} under structured replies");
                (flags, type, cookie, length) = (h.Flags, h.Type, h.Cookie, h.Length);
            }
            if (r == null)
                r = Match(requests, cookie);
            else if (cookie != r.Cookie)
                throw new FuzzInvariantException($"request {r.Cookie}: a chunk of cookie {cookie} amid its reply");
            if (extended && headerOffset != r.Header.Offset)
                throw new FuzzInvariantException($"request {r.Cookie}: an extended chunk header with offset {headerOffset}, not the request's");
            if ((flags & ~NbdProtocol.ReplyFlagDone) != 0)
                throw new FuzzInvariantException($"request {r.Cookie}: chunk flags 0x{flags:x}");
            if (length > int.MaxValue)
                throw new FuzzInvariantException($"request {r.Cookie}: a chunk of {length} bytes");
            ReadOnlySpan<byte> payload = reader.Take((int)length, "a chunk payload");
            bool done = (flags & NbdProtocol.ReplyFlagDone) != 0;
            switch ((ChunkType)type)
            {
                case ChunkType.None:
                    if (!done || length != 0 || pieces.Count > 0 || contexts > 0 || r.Header.Type is NbdCommand.Read or NbdCommand.BlockStatus)
                        throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type}): a misplaced NONE chunk");
                    break;
                case ChunkType.OffsetData:
                case ChunkType.OffsetHole:
                    if (r.Header.Type != NbdCommand.Read)
                        throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type}): a data or hole chunk");
                    ulong at, count;
                    if (type == (ushort)ChunkType.OffsetData)
                    {
                        if (length <= OffsetDataChunk.PrefixSize)
                            throw new FuzzInvariantException($"request {r.Cookie}: a data chunk of {length} bytes");
                        at = BinaryPrimitives.ReadUInt64BigEndian(payload);
                        count = length - OffsetDataChunk.PrefixSize;
                    }
                    else
                    {
                        if (length != OffsetHoleChunk.Size || ((CommandFlags)r.Header.Flags & CommandFlags.Df) != 0)
                            throw new FuzzInvariantException($"request {r.Cookie}: a hole chunk of {length} bytes (or under DF)");
                        at = BinaryPrimitives.ReadUInt64BigEndian(payload);
                        count = BinaryPrimitives.ReadUInt32BigEndian(payload[8..]);
                    }
                    pieces.Add((at, count));
                    break;
                case ChunkType.BlockStatus:
                case ChunkType.BlockStatusExt:
                    CheckBlockStatus(r, payload, wide: type == (ushort)ChunkType.BlockStatusExt, setup, state);
                    contexts++;
                    break;
                case ChunkType.Error:
                    if (!done || length < ErrorChunkPrefix.Size)
                        throw new FuzzInvariantException($"request {r.Cookie}: an error chunk of {length} bytes, or not the last");
                    ErrorChunkPrefix prefix = ErrorChunkPrefix.Read(payload);
                    if (prefix.MessageLength != length - ErrorChunkPrefix.Size || prefix.Error == NbdErrors.Success)
                        throw new FuzzInvariantException($"request {r.Cookie}: an error chunk with error {prefix.Error} and message length {prefix.MessageLength} in {length} bytes");
                    try
                    {
                        StrictUtf8.GetString(payload[ErrorChunkPrefix.Size..]);
                    }
                    catch (DecoderFallbackException)
                    {
                        throw new FuzzInvariantException($"request {r.Cookie}: an error message that is not UTF-8");
                    }
                    error = prefix.Error;
                    break;
                default:
                    throw new FuzzInvariantException($"request {r.Cookie}: a chunk of type 0x{type:x}");
            }
            if (done)
                break;
        }
        ExpectOutcome(r, error);
        if (error == NbdErrors.Success)
        {
            if (r.Header.Type == NbdCommand.Read)
                CheckTiling(r, pieces);
            if (r.Header.Type == NbdCommand.BlockStatus && contexts != 1)
                throw new FuzzInvariantException($"request {r.Cookie}: {contexts} block status chunks for one context");
        }
        r.Answered = true;
        return error == NbdErrors.Success;
    }

    /// <summary>A successful read's data and hole chunks cover it exactly once.</summary>
    private static void CheckTiling(ModelRequest r, List<(ulong Offset, ulong Length)> pieces)
    {
        pieces.Sort();
        ulong next = r.Header.Offset;
        foreach ((ulong offset, ulong length) in pieces)
        {
            if (offset != next || length == 0)
                throw new FuzzInvariantException($"request {r.Cookie}: the read's chunks leave a gap or overlap at {offset} (expected {next})");
            next += length;
        }
        if (next != r.Header.Offset + r.Header.Length)
            throw new FuzzInvariantException($"request {r.Cookie}: the read's chunks end at {next}, not {r.Header.Offset + r.Header.Length}");
        if (((CommandFlags)r.Header.Flags & CommandFlags.Df) != 0 && pieces.Count != 1)
            throw new FuzzInvariantException($"request {r.Cookie}: a DF read in {pieces.Count} chunks");
    }

    private static void CheckBlockStatus(ModelRequest r, ReadOnlySpan<byte> payload, bool wide, RequestSetup setup, in TransmissionState state)
    {
        if (r.Header.Type != NbdCommand.BlockStatus || wide != setup.Extended)
            throw new FuzzInvariantException($"request {r.Cookie} ({r.Header.Type}): a block status chunk (wide {wide})");
        int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
        int descriptor = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        if (payload.Length < prefix + descriptor || (payload.Length - prefix) % descriptor != 0)
            throw new FuzzInvariantException($"request {r.Cookie}: a block status chunk of {payload.Length} bytes");
        int count = (payload.Length - prefix) / descriptor;
        if (BlockStatusChunk.ReadContextId(payload) != ServerHandshake.BaseAllocationId)
            throw new FuzzInvariantException($"request {r.Cookie}: block status for context {BlockStatusChunk.ReadContextId(payload)}");
        if (wide && BlockStatusChunk.ReadDescriptorCount(payload) != count)
            throw new FuzzInvariantException($"request {r.Cookie}: a wide block status chunk counting {BlockStatusChunk.ReadDescriptorCount(payload)} of {count} descriptors");
        if (((CommandFlags)r.Header.Flags & CommandFlags.ReqOne) != 0 && count != 1)
            throw new FuzzInvariantException($"request {r.Cookie}: REQ_ONE answered with {count} extents");
        if (count > setup.MaxExtents || (setup.Dense && count != 1))
            throw new FuzzInvariantException($"request {r.Cookie}: {count} extents (at most {setup.MaxExtents}, dense {setup.Dense})");
        ulong covered = 0;
        for (int i = 0; i < count; i++)
        {
            BlockStatusChunk.ReadDescriptor(payload[(prefix + (i * descriptor))..], wide, out ulong length, out ulong flags);
            if (length == 0 || flags > 3)
                throw new FuzzInvariantException($"request {r.Cookie}: extent {i} of length {length} flags {flags}");
            covered += length;
        }
        ulong room = Math.Min(r.Header.Length, (ulong)state.Size - r.Header.Offset);
        if (covered > room)
            throw new FuzzInvariantException($"request {r.Cookie}: extents cover {covered} bytes of a {room}-byte request");
    }

    // ================================================================== server-option

    /// <summary>One option the server reads whole, as the model frames the client's bytes.</summary>
    private sealed record ModelOption(NbdOption Option, byte[]? Payload)
    {
        /// <summary>Longer than the server reads (it skips it and answers ERR_TOO_BIG).</summary>
        public bool TooBig => Payload == null;
    }

    /// <summary>The exports of the option target: a default, one with 512-byte blocks, one with a UTF-8 name.</summary>
    internal static readonly string[] OptionExports = ["", "disk", "\u00e9t\u00e9"];

    /// <summary>The option target: see the class remarks.</summary>
    public static FuzzOutcome Option(ReadOnlySpan<byte> input)
    {
        if (input.Length < 1)
            return new FuzzOutcome(false, 0, 0, 0);
        int split = input[0];
        byte[] client = input[1..Math.Min(input.Length, 1 + MaxInput)].ToArray();
        (List<ModelOption> options, bool noZeroes) = FrameOptions(client);
        foreach (ModelOption o in options)
            CheckDecoders(o);

        using var main = new CheckingExport(ExportSize, ExportBlockSize.Default, readOnly: false, dense: false);
        using var disk = new CheckingExport(ExportSize, new ExportBlockSize(512, 4096, MaxPayload), readOnly: false, dense: false);
        using var third = new CheckingExport(ExportSize / 2, ExportBlockSize.Default, readOnly: true, dense: true);
        var serverOptions = new NbdServerOptions { MaxOptionLength = MaxOptionLength };
        byte[]? output = ServerSession.Run(client, split, serverOptions,
            [(OptionExports[0], main, "the default export"), (OptionExports[1], disk, "a disk"), (OptionExports[2], third, null)]);
        main.ThrowIfBroken();
        disk.ThrowIfBroken();
        third.ThrowIfBroken();
        if (output == null)
            return new FuzzOutcome(true, options.Count, 0, 0);
        return CheckOptionReplies(new Reader(output), client.Length >= 4, options, noZeroes);
    }

    /// <summary>Frames the client's bytes as the server must read them; stops where the server stops reading options.</summary>
    private static (List<ModelOption> Options, bool NoZeroes) FrameOptions(byte[] bytes)
    {
        var options = new List<ModelOption>();
        if (bytes.Length < 4)
            return (options, false);
        uint flags = BinaryPrimitives.ReadUInt32BigEndian(bytes);
        if ((flags & ~3u) != 0)
            return (options, false);
        int position = 4;
        while (bytes.Length - position >= OptionRequestHeader.Size)
        {
            if (!OptionRequestHeader.TryRead(bytes.AsSpan(position), out OptionRequestHeader header))
                break;
            position += OptionRequestHeader.Size;
            if (header.Length > MaxOptionLength)
            {
                if (header.Length > MaxSkippedOption || header.Option == NbdOption.ExportName || header.Length > (uint)(bytes.Length - position))
                    break;
                position += (int)header.Length;
                options.Add(new ModelOption(header.Option, null));
                continue;
            }
            if (header.Length > (uint)(bytes.Length - position))
                break;
            options.Add(new ModelOption(header.Option, bytes.AsSpan(position, (int)header.Length).ToArray()));
            position += (int)header.Length;
            if (header.Option is NbdOption.ExportName or NbdOption.Abort)
                break;
        }
        return (options, (flags & 2) != 0);
    }

    /// <summary>The server's option decoders must agree with proto.md's layouts, as decoded here independently.</summary>
    private static void CheckDecoders(ModelOption o)
    {
        if (o.Payload is not { } payload)
            return;
        switch (o.Option)
        {
            case NbdOption.Info:
            case NbdOption.Go:
            {
                bool valid = SpecInfo(payload, out string name, out bool n, out bool d, out bool b);
                string? problem = OptionPayloads.TryReadInfoRequest(payload, out string name2, out bool n2, out bool d2, out bool b2);
                if (valid != (problem == null) || (valid && (name != name2 || n != n2 || d != d2 || b != b2)))
                    throw new FuzzInvariantException($"{o.Option} payload {Convert.ToHexString(payload)}: decoded as {problem ?? $"'{name2}' {n2} {d2} {b2}"}, proto.md says {(valid ? $"'{name}' {n} {d} {b}" : "invalid")}");
                break;
            }
            case NbdOption.ListMetaContext:
            case NbdOption.SetMetaContext:
            {
                bool valid = SpecMetaContext(payload, out string name, out uint queries, out bool exact, out bool wildcard);
                string? problem = OptionPayloads.TryReadMetaContextRequest(payload, out string name2, out uint queries2, out bool exact2, out bool wildcard2);
                if (valid != (problem == null) || (valid && (name != name2 || queries != queries2 || exact != exact2 || wildcard != wildcard2)))
                    throw new FuzzInvariantException($"{o.Option} payload {Convert.ToHexString(payload)}: decoded as {problem ?? $"'{name2}' {queries2} {exact2} {wildcard2}"}, proto.md says {(valid ? $"'{name}' {queries} {exact} {wildcard}" : "invalid")}");
                break;
            }
            case NbdOption.ExportName:
            {
                bool valid = payload.Length <= NbdProtocol.MaxString && TryUtf8(payload, out string name);
                bool valid2 = OptionPayloads.TryReadExportName(payload, out string name2);
                if (valid != valid2 || (valid && !string.Equals(name2, StrictUtf8.GetString(payload), StringComparison.Ordinal)))
                    throw new FuzzInvariantException($"EXPORT_NAME payload {Convert.ToHexString(payload)}: decoded as {valid2} '{name2}'");
                break;
            }
            default:
                break;
        }
    }

    private static bool TryUtf8(ReadOnlySpan<byte> bytes, out string text)
    {
        try
        {
            text = StrictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            text = "";
            return false;
        }
    }

    /// <summary>proto.md's NBD_OPT_INFO / NBD_OPT_GO data: name length, name (at most 4096 bytes of UTF-8), count, requests.</summary>
    private static bool SpecInfo(ReadOnlySpan<byte> p, out string name, out bool wantsName, out bool wantsDescription, out bool wantsBlockSize)
    {
        name = "";
        wantsName = wantsDescription = wantsBlockSize = false;
        if (p.Length < 4)
            return false;
        long nameLength = BinaryPrimitives.ReadUInt32BigEndian(p);
        if (nameLength > NbdProtocol.MaxString || 4 + nameLength + 2 > p.Length)
            return false;
        int at = 4 + (int)nameLength;
        int count = BinaryPrimitives.ReadUInt16BigEndian(p[at..]);
        if (p.Length != at + 2 + (2 * count) || !TryUtf8(p.Slice(4, (int)nameLength), out name))
            return false;
        for (int i = 0; i < count; i++)
        {
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(p[(at + 2 + (2 * i))..]);
            wantsName |= type == 1;
            wantsDescription |= type == 2;
            wantsBlockSize |= type == 3;
        }
        return true;
    }

    /// <summary>
    /// proto.md's NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: name length, name, query count, then
    /// (length, query) pairs filling the rest exactly; queries of at most 4096 bytes, each "namespace:...".
    /// </summary>
    private static bool SpecMetaContext(ReadOnlySpan<byte> p, out string name, out uint queries, out bool exactBase, out bool baseWildcard)
    {
        name = "";
        queries = 0;
        exactBase = baseWildcard = false;
        if (p.Length < 4)
            return false;
        long nameLength = BinaryPrimitives.ReadUInt32BigEndian(p);
        if (nameLength > NbdProtocol.MaxString || 4 + nameLength + 4 > p.Length || !TryUtf8(p.Slice(4, (int)nameLength), out name))
            return false;
        int at = 4 + (int)nameLength;
        queries = BinaryPrimitives.ReadUInt32BigEndian(p[at..]);
        at += 4;
        for (long i = 0; i < queries; i++)
        {
            if (p.Length - at < 4)
                return false;
            long length = BinaryPrimitives.ReadUInt32BigEndian(p[at..]);
            at += 4;
            if (length > NbdProtocol.MaxString || length > p.Length - at)
                return false;
            ReadOnlySpan<byte> query = p.Slice(at, (int)length);
            at += (int)length;
            if (!query.Contains((byte)':'))
                return false;
            exactBase |= query.SequenceEqual("base:allocation"u8);
            baseWildcard |= query.SequenceEqual("base:"u8);
        }
        return at == p.Length;
    }

    /// <summary>
    /// The server's bytes: the greeting, then for each option the client sent whole, in order, its replies (each
    /// echoing the option, of a type that option may get, well formed) up to exactly one final ACK or error; then
    /// nothing, unless an export was entered.
    /// </summary>
    private static FuzzOutcome CheckOptionReplies(Reader reader, bool flagsSent, List<ModelOption> options, bool noZeroes)
    {
        ExpectGreeting(reader);
        int succeeded = 0, failed = 0;
        bool structured = false;
        foreach (ModelOption o in options)
        {
            if (o.Option == NbdOption.ExportName)
            {
                if (reader.AtEnd)
                    return new FuzzOutcome(false, options.Count, succeeded, failed + 1);
                reader.Take(noZeroes ? NbdProtocol.ExportNameReplyShortSize : NbdProtocol.ExportNameReplySize, "the EXPORT_NAME reply");
                return new FuzzOutcome(true, options.Count, succeeded + 1, failed);
            }
            if (reader.AtEnd && o.Option == NbdOption.Abort)
                return new FuzzOutcome(false, options.Count, succeeded, failed);
            int infos = 0;
            while (true)
            {
                (OptionReplyHeader reply, byte[] payload) = ReadOptionReply(reader, o.Option.ToString());
                if (reply.Option != o.Option)
                    throw new FuzzInvariantException($"{o.Option} answered as option {(uint)reply.Option}");
                if (reply.IsError)
                {
                    CheckError(o, reply.Type, payload, structured);
                    failed++;
                    break;
                }
                if (reply.Type == OptionReplyType.Ack)
                {
                    CheckAck(o, payload, structured, infos);
                    succeeded++;
                    if (o.Option is NbdOption.StructuredReply or NbdOption.ExtendedHeaders)
                        structured = true;
                    if (o.Option == NbdOption.Go)
                        return new FuzzOutcome(true, options.Count, succeeded, failed);
                    if (o.Option == NbdOption.Abort && !reader.AtEnd)
                        throw new FuzzInvariantException("bytes after the ACK of NBD_OPT_ABORT");
                    break;
                }
                CheckPartialReply(o, reply.Type, payload, ref infos);
            }
        }
        if (!reader.AtEnd)
            throw new FuzzInvariantException($"{reader.Remaining} bytes after the replies to every option sent (flags sent: {flagsSent})");
        return new FuzzOutcome(false, options.Count, succeeded, failed);
    }

    private static void CheckError(ModelOption o, OptionReplyType type, byte[] message, bool structured)
    {
        if (!TryUtf8(message, out _))
            throw new FuzzInvariantException($"{o.Option}: an error message that is not UTF-8");
        if (o.TooBig)
        {
            if (type != OptionReplyType.ErrTooBig)
                throw new FuzzInvariantException($"{o.Option} too long for the server, answered 0x{(uint)type:x}");
            return;
        }
        if (type == OptionReplyType.ErrTooBig)
            throw new FuzzInvariantException($"{o.Option} of {o.Payload!.Length} bytes answered ERR_TOO_BIG");
        bool malformed = o.Option switch
        {
            NbdOption.Info or NbdOption.Go => !SpecInfo(o.Payload, out _, out _, out _, out _),
            NbdOption.ListMetaContext or NbdOption.SetMetaContext => structured && !SpecMetaContext(o.Payload, out _, out _, out _, out _),
            NbdOption.List or NbdOption.StructuredReply or NbdOption.ExtendedHeaders or NbdOption.StartTls => o.Payload!.Length != 0,
            _ => false,
        };
        if (malformed && type != OptionReplyType.ErrInvalid)
            throw new FuzzInvariantException($"{o.Option} with the malformed payload {Convert.ToHexString(o.Payload!)} answered 0x{(uint)type:x}, not ERR_INVALID");
        if (type is not (OptionReplyType.ErrUnsup or OptionReplyType.ErrPolicy or OptionReplyType.ErrInvalid or OptionReplyType.ErrUnknown
            or OptionReplyType.ErrBlockSizeReqd or OptionReplyType.ErrExtHeaderReqd or OptionReplyType.ErrTlsReqd))
            throw new FuzzInvariantException($"{o.Option}: error reply type 0x{(uint)type:x}");
    }

    private static void CheckAck(ModelOption o, byte[] payload, bool structured, int infos)
    {
        if (payload.Length != 0)
            throw new FuzzInvariantException($"{o.Option}: an ACK with {payload.Length} bytes");
        if (o.TooBig)
            throw new FuzzInvariantException($"{o.Option}: too long for the server, yet acknowledged");
        bool wellFormed = o.Option switch
        {
            NbdOption.Info or NbdOption.Go => SpecInfo(o.Payload, out _, out _, out _, out _) && (infos & 1) != 0,
            NbdOption.ListMetaContext or NbdOption.SetMetaContext => structured && SpecMetaContext(o.Payload, out _, out _, out _, out _),
            NbdOption.List or NbdOption.StructuredReply or NbdOption.ExtendedHeaders => o.Payload!.Length == 0,
            NbdOption.Abort => true,
            _ => false,
        };
        if (!wellFormed)
            throw new FuzzInvariantException($"{o.Option} with payload {Convert.ToHexString(o.Payload!)} acknowledged");
    }

    /// <summary>The replies before the final one: SERVER to LIST, INFO to INFO and GO, META_CONTEXT to the context options.</summary>
    private static void CheckPartialReply(ModelOption o, OptionReplyType type, byte[] p, ref int infos)
    {
        switch (type)
        {
            case OptionReplyType.Server when o.Option == NbdOption.List:
                if (p.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(p) > (uint)(p.Length - 4) ||
                    !TryUtf8(p.AsSpan(4, (int)BinaryPrimitives.ReadUInt32BigEndian(p)), out string name) || Array.IndexOf(OptionExports, name) < 0 ||
                    !TryUtf8(p.AsSpan(4 + (int)BinaryPrimitives.ReadUInt32BigEndian(p)), out _))
                    throw new FuzzInvariantException($"a malformed SERVER reply {Convert.ToHexString(p)}");
                return;
            case OptionReplyType.Info when o.Option is NbdOption.Info or NbdOption.Go:
                if (p.Length < 2)
                    throw new FuzzInvariantException($"an INFO reply of {p.Length} bytes");
                var info = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(p);
                bool ok = info switch
                {
                    NbdInfoType.Export => p.Length == NbdInfoExport.Size && (infos & 1) == 0,
                    NbdInfoType.Name or NbdInfoType.Description => p.Length - 2 <= NbdProtocol.MaxString && TryUtf8(p.AsSpan(2), out _),
                    NbdInfoType.BlockSize => p.Length == NbdInfoBlockSize.Size && NbdInfoBlockSize.Read(p).IsSane(),
                    _ => false,
                };
                if (!ok)
                    throw new FuzzInvariantException($"a malformed INFO reply {Convert.ToHexString(p)}");
                if (info == NbdInfoType.Export)
                    infos |= 1;
                return;
            case OptionReplyType.MetaContext when o.Option is NbdOption.ListMetaContext or NbdOption.SetMetaContext:
                uint id = o.Option == NbdOption.SetMetaContext ? ServerHandshake.BaseAllocationId : 0;
                if (p.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(p) != id || !p.AsSpan(4).SequenceEqual("base:allocation"u8))
                    throw new FuzzInvariantException($"a malformed META_CONTEXT reply {Convert.ToHexString(p)}");
                return;
            default:
                throw new FuzzInvariantException($"{o.Option} got reply type 0x{(uint)type:x}");
        }
    }

    // ================================================================== shared

    private static void ExpectGreeting(Reader reader)
    {
        ReadOnlySpan<byte> greeting = reader.Take(18, "the greeting");
        if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != NbdMagic.Greeting || BinaryPrimitives.ReadUInt64BigEndian(greeting[8..]) != NbdMagic.IHaveOpt ||
            BinaryPrimitives.ReadUInt16BigEndian(greeting[16..]) != 3)
            throw new FuzzInvariantException("not a fixed newstyle greeting: " + Convert.ToHexString(greeting));
    }

    private static (OptionReplyHeader Header, byte[] Payload) ReadOptionReply(Reader reader, string what)
    {
        if (!OptionReplyHeader.TryRead(reader.Take(OptionReplyHeader.Size, "an option reply to " + what), out OptionReplyHeader header))
            throw new FuzzInvariantException("an option reply to " + what + " without the reply magic");
        if (header.Length > 2 * NbdProtocol.MaxString + 64)
            throw new FuzzInvariantException($"an option reply of {header.Length} bytes to {what}");
        return (header, reader.Take((int)header.Length, "an option reply's payload").ToArray());
    }

    /// <summary>The server's bytes, taken in order; running out in the middle of a message is a broken promise.</summary>
    private sealed class Reader(byte[] bytes)
    {
        private int _position;

        public bool AtEnd => _position == bytes.Length;

        public int Remaining => bytes.Length - _position;

        public ReadOnlySpan<byte> Peek(int count, string what)
        {
            if (bytes.Length - _position < count)
                throw new FuzzInvariantException($"the server's output ends inside {what} ({bytes.Length - _position} of {count} bytes)");
            return bytes.AsSpan(_position, count);
        }

        public ReadOnlySpan<byte> Take(int count, string what)
        {
            ReadOnlySpan<byte> span = Peek(count, what);
            _position += count;
            return span;
        }
    }
}

/// <summary>Builds what a client sends: flags, options, requests, each encoded with the library's wire structs.</summary>
public sealed class ClientScript
{
    private readonly List<byte> _bytes = [];

    /// <summary>The client flags after the greeting.</summary>
    public ClientScript Flags(uint flags)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        _bytes.AddRange(b);
        return this;
    }

    internal ClientScript Option(NbdOption option, ReadOnlySpan<byte> payload = default)
    {
        var header = new byte[OptionRequestHeader.Size];
        new OptionRequestHeader(option, (uint)payload.Length).Write(header);
        _bytes.AddRange(header);
        _bytes.AddRange(payload);
        return this;
    }

    internal ClientScript Info(NbdOption option, string name, params NbdInfoType[] requests)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        var p = new byte[4 + n.Length + 2 + (2 * requests.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(p, (uint)n.Length);
        n.CopyTo(p, 4);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4 + n.Length), (ushort)requests.Length);
        for (int i = 0; i < requests.Length; i++)
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6 + n.Length + (2 * i)), (ushort)requests[i]);
        return Option(option, p);
    }

    internal ClientScript MetaContext(NbdOption option, string name, params string[] queries)
    {
        var p = new List<byte>();
        byte[] n = Encoding.UTF8.GetBytes(name);
        var word = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)n.Length);
        p.AddRange(word);
        p.AddRange(n);
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)queries.Length);
        p.AddRange(word);
        foreach (string query in queries)
        {
            byte[] q = Encoding.UTF8.GetBytes(query);
            BinaryPrimitives.WriteUInt32BigEndian(word, (uint)q.Length);
            p.AddRange(word);
            p.AddRange(q);
        }
        return Option(option, p.ToArray());
    }

    internal ClientScript Request(bool extended, NbdCommand command, ulong offset, ulong length, CommandFlags flags = CommandFlags.None,
        ReadOnlySpan<byte> payload = default, ulong cookie = 0)
    {
        if (extended && !payload.IsEmpty)
            flags |= CommandFlags.PayloadLen;
        var header = new byte[extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize];
        new RequestHeader((ushort)flags, command, cookie, offset, length).Write(header, extended);
        _bytes.AddRange(header);
        _bytes.AddRange(payload);
        return this;
    }

    /// <summary>Raw bytes.</summary>
    public ClientScript Bytes(ReadOnlySpan<byte> bytes)
    {
        _bytes.AddRange(bytes);
        return this;
    }

    /// <summary>Everything so far.</summary>
    public byte[] ToArray() => [.. _bytes];
}
