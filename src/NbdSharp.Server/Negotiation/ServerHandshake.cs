using System;
using System.Buffers;
using System.Buffers.Binary;
using System.IO;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Protocol;
using NbdSharp.Server.Transmission;

namespace NbdSharp.Server.Negotiation;

/// <summary>What the handshake agreed: the export and how replies are framed.</summary>
internal sealed record Negotiated(ServedExport Export, bool Structured, bool Extended, bool BaseAllocation, TransmissionFlags Flags);

/// <summary>
/// The server's side of the handshake (proto.md, "Handshake"): the fixed-newstyle greeting, option haggling
/// (EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, STRUCTURED_REPLY, EXTENDED_HEADERS, LIST/SET_META_CONTEXT) or the
/// oldstyle greeting. Straight-line async code over the connection's stream; every length the client sends is
/// checked against a limit before anything is read for it.
/// </summary>
internal sealed class ServerHandshake
{
    /// <summary>The context id this server gives <c>base:allocation</c>.</summary>
    public const uint BaseAllocationId = 1;

    private const uint ClientFixedNewstyle = 1;
    private const uint ClientNoZeroes = 2;

    /// <summary>An option longer than this is not even read to stay in sync: the connection is closed.</summary>
    private const uint MaxSkippedOption = 16 * 1024 * 1024;

    private readonly InputBuffer _input;
    private readonly ExportRegistry _exports;
    private readonly NbdServerOptions _options;
    private readonly ServerLog _log;
    private readonly byte[] _scratch = new byte[64];
    private Stream _stream;
    private bool _noZeroes;
    private bool _tls;
    private bool _structured;
    private bool _extended;
    private string? _metaExport;

    public ServerHandshake(Stream stream, InputBuffer input, ExportRegistry exports, NbdServerOptions options, ServerLog log)
    {
        _stream = stream;
        _input = input;
        _exports = exports;
        _options = options;
        _log = log;
    }

    /// <summary>The stream after the handshake: the TLS one if the client upgraded.</summary>
    public Stream Stream => _stream;

    /// <summary>Runs the handshake; null when the client went away, aborted or broke the protocol.</summary>
    public async Task<Negotiated?> RunAsync(CancellationToken cancellationToken)
    {
        if (_options.Oldstyle)
            return await OldstyleAsync(cancellationToken).ConfigureAwait(false);

        new Greeting(NbdMagic.Greeting, NbdMagic.IHaveOpt).Write(_scratch);
        BinaryPrimitives.WriteUInt16BigEndian(_scratch.AsSpan(16), (ushort)(GlobalFlags.FixedNewstyle | GlobalFlags.NoZeroes));
        await _stream.WriteAsync(_scratch.AsMemory(0, 18), cancellationToken).ConfigureAwait(false);
        await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);

        if (!await _input.EnsureAsync(4, cancellationToken).ConfigureAwait(false))
            return null;
        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(_input.Span);
        _input.Consume(4);
        if ((clientFlags & ~(ClientFixedNewstyle | ClientNoZeroes)) != 0)
        {
            _log.Refused("unknown client flags 0x" + clientFlags.ToString("x", System.Globalization.CultureInfo.InvariantCulture));
            return null;
        }
        _noZeroes = (clientFlags & ClientNoZeroes) != 0;

        byte[] payload = ArrayPool<byte>.Shared.Rent(_options.MaxOptionLength);
        try
        {
            while (true)
            {
                if (!await _input.EnsureAsync(OptionRequestHeader.Size, cancellationToken).ConfigureAwait(false))
                    return null;
                if (!OptionRequestHeader.TryRead(_input.Span, out OptionRequestHeader header))
                {
                    _log.Refused("bad option magic");
                    return null;
                }
                _input.Consume(OptionRequestHeader.Size);
                NbdOption option = header.Option;
                if (header.Length > (uint)_options.MaxOptionLength)
                {
                    if (header.Length > MaxSkippedOption || option == NbdOption.ExportName)
                    {
                        _log.Refused(NbdProtocol.OptionName(option) + ": option of " + header.Length + " bytes is too long");
                        return null;
                    }
                    await _input.SkipAsync(header.Length, cancellationToken).ConfigureAwait(false);
                    await ErrorAsync(option, OptionReplyType.ErrTooBig, "option too long", cancellationToken).ConfigureAwait(false);
                    continue;
                }
                int length = (int)header.Length;
                await _input.ReadExactlyAsync(payload.AsMemory(0, length), cancellationToken).ConfigureAwait(false);
                ReadOnlyMemory<byte> data = payload.AsMemory(0, length);
                _log.Option(NbdProtocol.OptionName(option), length);

                if (_options.Tls == ServerTlsMode.Require && !_tls && option is not (NbdOption.StartTls or NbdOption.Abort))
                {
                    if (option == NbdOption.ExportName)
                    {
                        _log.Refused("NBD_OPT_EXPORT_NAME before TLS, which is required");
                        return null;
                    }
                    await ErrorAsync(option, OptionReplyType.ErrTlsReqd, "TLS is required", cancellationToken).ConfigureAwait(false);
                    continue;
                }

                switch (option)
                {
                    case NbdOption.ExportName:
                        return await ExportNameAsync(data, cancellationToken).ConfigureAwait(false);
                    case NbdOption.Abort:
                        await TryAckAbortAsync(cancellationToken).ConfigureAwait(false);
                        return null;
                    case NbdOption.List:
                        await ListAsync(length, cancellationToken).ConfigureAwait(false);
                        break;
                    case NbdOption.StartTls:
                        if (!await StartTlsAsync(length, cancellationToken).ConfigureAwait(false))
                            return null;
                        break;
                    case NbdOption.Info:
                    case NbdOption.Go:
                        Negotiated? chosen = await InfoOrGoAsync(option, data, cancellationToken).ConfigureAwait(false);
                        if (chosen != null)
                            return chosen;
                        break;
                    case NbdOption.StructuredReply:
                        if (length != 0)
                            await ErrorAsync(option, OptionReplyType.ErrInvalid, "unexpected option payload", cancellationToken).ConfigureAwait(false);
                        else if (!_options.StructuredReplies)
                            await ErrorAsync(option, OptionReplyType.ErrUnsup, "structured replies are disabled", cancellationToken).ConfigureAwait(false);
                        else if (_extended)
                            await ErrorAsync(option, OptionReplyType.ErrExtHeaderReqd, "extended headers are already negotiated", cancellationToken).ConfigureAwait(false);
                        else
                        {
                            _structured = true;
                            await ReplyAsync(option, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
                        }
                        break;
                    case NbdOption.ExtendedHeaders:
                        if (length != 0)
                            await ErrorAsync(option, OptionReplyType.ErrInvalid, "unexpected option payload", cancellationToken).ConfigureAwait(false);
                        else if (!_options.ExtendedHeaders || !_options.StructuredReplies)
                            await ErrorAsync(option, OptionReplyType.ErrUnsup, "extended headers are disabled", cancellationToken).ConfigureAwait(false);
                        else
                        {
                            _structured = _extended = true;
                            await ReplyAsync(option, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
                        }
                        break;
                    case NbdOption.ListMetaContext:
                    case NbdOption.SetMetaContext:
                        await MetaContextAsync(option, data, cancellationToken).ConfigureAwait(false);
                        break;
                    default:
                        await ErrorAsync(option, OptionReplyType.ErrUnsup, "unknown option", cancellationToken).ConfigureAwait(false);
                        break;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(payload);
        }
    }

    private async Task<Negotiated?> OldstyleAsync(CancellationToken cancellationToken)
    {
        ServedExport? export = _exports.Default;
        if (export == null)
            return null;
        TransmissionFlags flags = export.Flags(structured: false);
        byte[] message = new byte[NbdProtocol.OldstyleHandshakeSize];
        new Greeting(NbdMagic.Greeting, NbdMagic.Oldstyle).Write(message);
        new OldstyleHandshake((ulong)export.Export.Size, 0, (ushort)flags).Write(message.AsSpan(Greeting.Size));
        await _stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
        await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        return new Negotiated(export, false, false, false, flags);
    }

    private async Task<Negotiated?> ExportNameAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (_extended)
        {
            _log.Refused("NBD_OPT_EXPORT_NAME after extended headers were negotiated");
            return null;
        }
        ServedExport? export = OptionPayloads.TryReadExportName(data.Span, out string name) ? _exports.Find(name) : null;
        if (export == null)
        {
            // proto.md: the only answer to an unknown name here is closing the connection.
            _log.Refused("NBD_OPT_EXPORT_NAME: no export named \"" + name + "\"");
            return null;
        }
        TransmissionFlags flags = export.Flags(_structured);
        byte[] reply = new byte[NbdProtocol.ExportNameReplySize];
        int size = new ExportNameReply((ulong)export.Export.Size, (ushort)flags).Write(reply, _noZeroes);
        await _stream.WriteAsync(reply.AsMemory(0, size), cancellationToken).ConfigureAwait(false);
        await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        return new Negotiated(export, _structured, false, BaseAllocationFor(export), flags);
    }

    private bool BaseAllocationFor(ServedExport export) =>
        _metaExport != null && ReferenceEquals(_exports.Find(_metaExport), export);

    private async Task TryAckAbortAsync(CancellationToken cancellationToken)
    {
        try
        {
            await ReplyAsync(NbdOption.Abort, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // proto.md: the client may close without waiting for the acknowledgement.
        }
    }

    private async Task ListAsync(int length, CancellationToken cancellationToken)
    {
        if (length != 0)
        {
            await ErrorAsync(NbdOption.List, OptionReplyType.ErrInvalid, "unexpected option payload", cancellationToken).ConfigureAwait(false);
            return;
        }
        if (!_options.AllowList)
        {
            await ErrorAsync(NbdOption.List, OptionReplyType.ErrPolicy, "listing exports is not allowed", cancellationToken).ConfigureAwait(false);
            return;
        }
        foreach (ServedExport export in _exports.Snapshot())
        {
            byte[] name = Encoding.UTF8.GetBytes(export.Name);
            byte[] description = Encoding.UTF8.GetBytes(Truncate(export.Description ?? ""));
            byte[] body = new byte[4 + name.Length + description.Length];
            BinaryPrimitives.WriteUInt32BigEndian(body, (uint)name.Length);
            name.CopyTo(body, 4);
            description.CopyTo(body, 4 + name.Length);
            await ReplyAsync(NbdOption.List, OptionReplyType.Server, body, cancellationToken).ConfigureAwait(false);
        }
        await ReplyAsync(NbdOption.List, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> StartTlsAsync(int length, CancellationToken cancellationToken)
    {
        if (length != 0)
        {
            await ErrorAsync(NbdOption.StartTls, OptionReplyType.ErrInvalid, "unexpected option payload", cancellationToken).ConfigureAwait(false);
            return true;
        }
        if (_options.Tls == ServerTlsMode.Off)
        {
            await ErrorAsync(NbdOption.StartTls, OptionReplyType.ErrUnsup, "TLS is not enabled on this server", cancellationToken).ConfigureAwait(false);
            return true;
        }
        if (_tls)
        {
            await ErrorAsync(NbdOption.StartTls, OptionReplyType.ErrInvalid, "TLS is already active", cancellationToken).ConfigureAwait(false);
            return true;
        }
        if (_input.Buffered != 0)
        {
            // Bytes sent after STARTTLS but before the TLS handshake would be taken as if they had come over TLS.
            _log.Refused("NBD_OPT_STARTTLS followed by plaintext data");
            return false;
        }
        await ReplyAsync(NbdOption.StartTls, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
        try
        {
            _stream = await NbdSharp.Server.Tls.ServerTls.AcceptAsync(_stream, _options, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException)
        {
            _log.Refused("TLS handshake failed: " + e.Message);
            return false;
        }
        _input.Stream = _stream;
        _tls = true;
        // proto.md: whatever was negotiated before STARTTLS is forgotten.
        _structured = _extended = false;
        _metaExport = null;
        _log.TlsEstablished();
        return true;
    }

    private async Task<Negotiated?> InfoOrGoAsync(NbdOption option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        string? problem = OptionPayloads.TryReadInfoRequest(data.Span, out string name, out bool wantsName, out bool wantsDescription,
            out bool wantsBlockSize);
        if (problem != null)
        {
            await ErrorAsync(option, OptionReplyType.ErrInvalid, problem, cancellationToken).ConfigureAwait(false);
            return null;
        }
        ServedExport? export = _exports.Find(name);
        if (export == null)
        {
            await ErrorAsync(option, OptionReplyType.ErrUnknown, "export \"" + name + "\" not found", cancellationToken).ConfigureAwait(false);
            return null;
        }
        TransmissionFlags flags = export.Flags(_structured);
        ExportBlockSize blockSize = export.BlockSize;
        if (option == NbdOption.Go && blockSize.Minimum > 1 && !wantsBlockSize)
        {
            await ErrorAsync(option, OptionReplyType.ErrBlockSizeReqd, "the export needs requests aligned to " + blockSize.Minimum + " bytes",
                cancellationToken).ConfigureAwait(false);
            return null;
        }

        byte[] info = new byte[2 + NbdProtocol.MaxString];
        new NbdInfoExport((ulong)export.Export.Size, (ushort)flags).Write(info);
        await ReplyAsync(option, OptionReplyType.Info, info.AsMemory(0, NbdInfoExport.Size), cancellationToken).ConfigureAwait(false);
        if (wantsName)
        {
            int n = TextInfo(info, NbdInfoType.Name, export.Name);
            await ReplyAsync(option, OptionReplyType.Info, info.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
        if (wantsDescription && export.Description != null)
        {
            int n = TextInfo(info, NbdInfoType.Description, export.Description);
            await ReplyAsync(option, OptionReplyType.Info, info.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
        new NbdInfoBlockSize(blockSize.Minimum, blockSize.Preferred, blockSize.Maximum).Write(info);
        await ReplyAsync(option, OptionReplyType.Info, info.AsMemory(0, NbdInfoBlockSize.Size), cancellationToken).ConfigureAwait(false);
        await ReplyAsync(option, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
        if (option != NbdOption.Go)
            return null;
        return new Negotiated(export, _structured, _extended, BaseAllocationFor(export), flags);
    }

    private static int TextInfo(byte[] info, NbdInfoType type, string text)
    {
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)type);
        return 2 + Encoding.UTF8.GetBytes(Truncate(text), info.AsSpan(2));
    }

    private async Task MetaContextAsync(NbdOption option, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        bool set = option == NbdOption.SetMetaContext;
        if (set)
            _metaExport = null;
        if (!_structured)
        {
            await ErrorAsync(option, OptionReplyType.ErrInvalid, "structured replies are not negotiated", cancellationToken).ConfigureAwait(false);
            return;
        }
        string? problem = OptionPayloads.TryReadMetaContextRequest(data.Span, out string name, out uint queries, out bool exactBase,
            out bool baseWildcard);
        if (problem != null)
        {
            await ErrorAsync(option, OptionReplyType.ErrInvalid, problem, cancellationToken).ConfigureAwait(false);
            return;
        }
        if (_exports.Find(name) == null)
        {
            await ErrorAsync(option, OptionReplyType.ErrUnknown, "export \"" + name + "\" not found", cancellationToken).ConfigureAwait(false);
            return;
        }
        bool match = set ? exactBase : queries == 0 || exactBase || baseWildcard;
        if (match)
        {
            byte[] body = new byte[4 + OptionPayloads.BaseAllocation.Length];
            BinaryPrimitives.WriteUInt32BigEndian(body, set ? BaseAllocationId : 0);
            Encoding.ASCII.GetBytes(OptionPayloads.BaseAllocation, body.AsSpan(4));
            await ReplyAsync(option, OptionReplyType.MetaContext, body, cancellationToken).ConfigureAwait(false);
            if (set)
                _metaExport = name;
        }
        await ReplyAsync(option, OptionReplyType.Ack, default, cancellationToken).ConfigureAwait(false);
    }

    private static string Truncate(string text)
    {
        // Strings on the wire are at most 4096 bytes; cut on a character boundary.
        if (Encoding.UTF8.GetByteCount(text) <= NbdProtocol.MaxString)
            return text;
        int length = Math.Min(text.Length, NbdProtocol.MaxString);
        while (length > 0 && Encoding.UTF8.GetByteCount(text.AsSpan(0, length)) > NbdProtocol.MaxString)
            length--;
        if (length > 0 && char.IsHighSurrogate(text[length - 1]))
            length--;
        return text[..length];
    }

    private Task ErrorAsync(NbdOption option, OptionReplyType type, string message, CancellationToken cancellationToken)
    {
        _log.OptionError(NbdProtocol.OptionName(option), message);
        return ReplyAsync(option, type, Encoding.UTF8.GetBytes(message), cancellationToken);
    }

    private async Task ReplyAsync(NbdOption option, OptionReplyType type, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        new OptionReplyHeader(option, type, (uint)body.Length).Write(_scratch);
        if (body.Length <= _scratch.Length - OptionReplyHeader.Size)
        {
            body.Span.CopyTo(_scratch.AsSpan(OptionReplyHeader.Size));
            await _stream.WriteAsync(_scratch.AsMemory(0, OptionReplyHeader.Size + body.Length), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            byte[] message = new byte[OptionReplyHeader.Size + body.Length];
            _scratch.AsSpan(0, OptionReplyHeader.Size).CopyTo(message);
            body.Span.CopyTo(message.AsSpan(OptionReplyHeader.Size));
            await _stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
        }
        await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
    }
}
