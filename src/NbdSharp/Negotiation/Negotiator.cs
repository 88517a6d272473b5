using System;
using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Diagnostics;
using NbdSharp.Protocol;

namespace NbdSharp.Negotiation;

/// <summary>
/// The handshake, written as the spec's sequence: greeting, client flags, then options (extended headers,
/// structured replies, metadata contexts, GO with the <c>NBD_OPT_EXPORT_NAME</c> fallback), or the
/// oldstyle header. Every method takes <c>async</c>: false runs the same code with blocking I/O and
/// completes synchronously, so one implementation serves <c>ConnectUnix</c> and <c>ConnectUnixAsync</c>.
/// </summary>
/// <remarks>Every server length is checked before it is used; no buffer is sized by a number the server sent.</remarks>
internal sealed partial class Negotiator : IDisposable
{
    /// <summary>Option replies longer than this are a protocol error (libnbd's bound).</summary>
    private const uint MaxOptionReplyLength = NbdProtocol.MaxRequestSize;

    /// <summary>Option reply payloads up to this size are read; longer informational ones are skipped.</summary>
    private const int ReplyBufferSize = 8192;

    private Transport.Transport _transport;
    private readonly DebugLog _log;
    private string _call;
    /// <summary>Holds the message being parsed (an option reply and its payload, the greeting...).</summary>
    private byte[] _buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(ReplyBufferSize + 64);

    public Negotiator(Transport.Transport transport, HandshakeSettings settings, DebugLog log, string call)
    {
        _transport = transport;
        Settings = settings;
        _log = log;
        _call = call;
    }

    public HandshakeSettings Settings { get; set; }

    /// <summary>The libnbd call messages are attributed to (the connect call, then each opt call).</summary>
    public string Call
    {
        get => _call;
        set => _call = value;
    }

    /// <summary>The transport the handshake runs on (handed to the engine afterwards).</summary>
    public Transport.Transport Transport => _transport;

    /// <summary>Returns the handshake buffers to the pool; the negotiator is not used afterwards.</summary>
    public void Dispose()
    {
        ReturnToPool(ref _buffer);
        ReturnToPool(ref _input);
        ReturnToPool(ref _output);
    }

    private static void ReturnToPool(ref byte[] buffer)
    {
        byte[] rented = buffer;
        buffer = [];
        if (rented.Length > 0)
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
    }

    public NegotiatedExport Export { get; } = new();

    public long BytesSent { get; private set; }
    public long BytesReceived { get; private set; }
    public long ChunksSent { get; private set; }
    public long ChunksReceived { get; private set; }

    private bool FixedNewstyle => (Export.HandshakeFlags & HandshakeFlag.FixedNewstyle) != 0;

    /// <summary>
    /// The handshake of a connect: reads the greeting and negotiates up to the transmission phase, or, in opt
    /// mode, up to the point where libnbd pauses (after TLS, extended headers and structured replies). Returns
    /// true when the handle should wait in the negotiating state. Throws <see cref="NbdException"/> if the server
    /// cannot give us the export.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<bool> RunAsync(bool async, bool optMode, CancellationToken cancellationToken)
    {
        bool newstyle = await GreetingAsync(async, cancellationToken).ConfigureAwait(false);
        if (!newstyle)
            return false;
        if (!FixedNewstyle)
        {
            if (optMode)
                return true;
            await ExportNameAsync(async, cancellationToken).ConfigureAwait(false);
            return false;
        }
        if (Settings.Tls != TlsMode.Disable)
            await StartTlsAsync(async, cancellationToken).ConfigureAwait(false);
        // As libnbd: asking for no structured replies means no extended headers either, whatever that knob says,
        // since extended headers imply structured replies.
        if (Settings.RequestExtendedHeaders && Settings.RequestStructuredReplies)
            await ExtendedHeadersAsync(async, cancellationToken).ConfigureAwait(false);
        if (Settings.RequestStructuredReplies && !Export.StructuredReplies)
            await StructuredReplyAsync(async, cancellationToken).ConfigureAwait(false);
        if (optMode)
            return true;
        await GoAsync(async, NbdOption.Go, abortOnFailure: true, cancellationToken).ConfigureAwait(false);
        return false;
    }

    /// <summary>Whether the server speaks fixed newstyle (needed for every option but NBD_OPT_EXPORT_NAME).</summary>
    public bool IsFixedNewstyle => FixedNewstyle;

    /// <summary>
    /// Reads the greeting. For oldstyle, reads the rest of the oldstyle header and returns false (the
    /// export is known); for newstyle, agrees the handshake flags and returns true.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<bool> GreetingAsync(bool async, CancellationToken cancellationToken)
    {
        await ReceiveAsync(async, Greeting.Size, cancellationToken).ConfigureAwait(false);
        Greeting greeting = Greeting.Read(_buffer);
        if (!greeting.IsNbd)
            throw Violation("handshake: server did not send expected NBD magic");
        ChunksReceived++;
        if (greeting.IsOldstyle)
        {
            await ReceiveAsync(async, OldstyleHandshake.RemainderSize, cancellationToken).ConfigureAwait(false);
            OldstyleHandshake old = OldstyleHandshake.Read(_buffer);
            // CVE-2019-14842: an oldstyle server cannot do TLS, so TLS=require must not fall back to plaintext.
            if (Settings.Tls == TlsMode.Require)
                throw Fail(Errno.ENOTSUP, "handshake: server is oldstyle, but handle TLS setting is 'require' (2)");
            if (old.GlobalFlags != 0)
                throw Violation("handshake: oldstyle server should not set gflags");
            Export.Protocol = "oldstyle";
            Export.HandshakeFlags = HandshakeFlag.None;
            SetSizeAndFlags(old.ExportSize, old.TransmissionFlags);
            SetPayloadMaximum();
            return false;
        }
        if (!greeting.IsNewstyle)
            throw Violation("handshake: server is not either an oldstyle or fixed newstyle NBD server");

        await ReceiveAsync(async, 2, cancellationToken).ConfigureAwait(false);
        ushort serverFlags = BinaryPrimitives.ReadUInt16BigEndian(_buffer);
        HandshakeFlag agreed = (HandshakeFlag)serverFlags & Settings.HandshakeFlags & HandshakeFlag.Mask;
        Export.HandshakeFlags = agreed;
        if ((agreed & HandshakeFlag.FixedNewstyle) == 0 && Settings.Tls == TlsMode.Require)
            throw Fail(Errno.ENOTSUP, "handshake: server is not using fixed newstyle, but handle TLS setting is 'require' (2)");
        Export.Protocol = (agreed & HandshakeFlag.FixedNewstyle) != 0 ? "newstyle-fixed" : "newstyle";
        Debug("gflags: 0x" + serverFlags.ToString("x", CultureInfo.InvariantCulture));

        // The client flags have no reply: they go out together with the first option.
        PutUInt32((uint)agreed);
        return true;
    }

    /// <summary>
    /// NBD_OPT_STARTTLS, then the TLS handshake on the same connection. Returns whether TLS is now in use; a server
    /// that refuses leaves the connection in plaintext, unless TLS is required, in which case the handshake is
    /// abandoned with ENOTSUP (libnbd). Everything negotiated before TLS is forgotten, as the spec requires.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<bool> StartTlsAsync(bool async, CancellationToken cancellationToken)
    {
        BeginOption(NbdOption.StartTls, 0);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        await ReceiveOptionReplyAsync(async, NbdOption.StartTls, cancellationToken).ConfigureAwait(false);
        OptionReplyHeader reply = _reply;
        if (reply.Type == OptionReplyType.Ack)
        {
            if (Export.TlsNegotiated)
                throw Violation("handshake: unable to support server accepting TLS twice");
            // Anything after the reply would have been injected in plaintext (CVE-2021-3716's kind): refuse it.
            if (_inputEnd > _inputStart)
                throw Violation("handshake: server sent unencrypted data after accepting NBD_OPT_STARTTLS");
            Export.ResetExport();
            Export.StructuredReplies = false;
            Export.ExtendedHeaders = false;
            Export.MetaValid = false;
            Export.MetaContexts.Clear();
            try
            {
                _transport = await Tls.TlsUpgrade.StartAsync(_transport, Settings.TlsCredentials ?? new Tls.TlsCredentials(), async,
                    cancellationToken).ConfigureAwait(false);
            }
            catch (Tls.TlsFailure e)
            {
                throw Fail(e.Errno, e.Message, e);
            }
            Export.TlsNegotiated = true;
            Debug("connection is using TLS: " + _transport.Description);
            return true;
        }
        RequireError(reply);
        string refusal = DescribeOptionError(reply, out _);
        if (Settings.Tls == TlsMode.Require)
        {
            await AbortAsync(async, cancellationToken).ConfigureAwait(false);
            throw Fail(Errno.ENOTSUP, "handshake: server refused TLS, but handle TLS setting is 'require' (2)");
        }
        Debug("server refused TLS (" + refusal + "); continuing with unencrypted connection");
        return false;
    }

    /// <summary>NBD_OPT_EXTENDED_HEADERS. Returns whether the server accepted (which implies structured replies).</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<bool> ExtendedHeadersAsync(bool async, CancellationToken cancellationToken)
    {
        BeginOption(NbdOption.ExtendedHeaders, 0);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        await ReceiveOptionReplyAsync(async, NbdOption.ExtendedHeaders, cancellationToken).ConfigureAwait(false);
        OptionReplyHeader reply = _reply;
        if (reply.Type == OptionReplyType.Ack)
        {
            Debug("negotiated extended headers on this connection");
            Export.ExtendedHeaders = true;
            Export.StructuredReplies = true;
            return true;
        }
        RequireError(reply);
        Debug("extended headers are not supported by this server: " + DescribeOptionError(reply, out _));
        return false;
    }

    /// <summary>NBD_OPT_STRUCTURED_REPLY. Returns whether the server accepted.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<bool> StructuredReplyAsync(bool async, CancellationToken cancellationToken)
    {
        BeginOption(NbdOption.StructuredReply, 0);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        await ReceiveOptionReplyAsync(async, NbdOption.StructuredReply, cancellationToken).ConfigureAwait(false);
        OptionReplyHeader reply = _reply;
        if (reply.Type == OptionReplyType.Ack)
        {
            Debug("negotiated structured replies on this connection");
            Export.StructuredReplies = true;
            return true;
        }
        RequireError(reply);
        Debug("structured replies are not supported by this server: " + DescribeOptionError(reply, out _));
        return false;
    }

    /// <summary>
    /// NBD_OPT_SET_META_CONTEXT for <paramref name="queries"/> on the current export name. Replaces the
    /// selection. With <paramref name="strict"/> false (automatic use while connecting), an error reply is
    /// ignored as libnbd does; otherwise it is thrown. Returns the number of contexts selected.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<int> SetMetaContextAsync(bool async, System.Collections.Generic.IReadOnlyList<string> queries,
        ContextCallback? callback, bool strict, CancellationToken cancellationToken)
    {
        Export.MetaContexts.Clear();
        Export.MetaValid = false;
        SendMetaContextOption(NbdOption.SetMetaContext, queries);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);

        while (true)
        {
            await ReceiveOptionReplyAsync(async, NbdOption.SetMetaContext, cancellationToken).ConfigureAwait(false);
            OptionReplyHeader reply = _reply;
            if (reply.Type == OptionReplyType.Ack)
            {
                Export.MetaValid = true;
                return Export.MetaContexts.Count;
            }
            if (reply.Type == OptionReplyType.MetaContext)
            {
                if (!MetaContextReply.TryRead(Payload(reply), out uint id, out string name))
                    throw Violation("handshake: invalid NBD_REP_META_CONTEXT reply length");
                Debug("negotiated " + name + " with context ID " + id.ToString(CultureInfo.InvariantCulture));
                Export.MetaContexts.Add(new NegotiatedContext(id, name));
                callback?.Invoke(name);
                continue;
            }
            if (strict)
                throw Refusal(reply, "meta context");
            RequireError(reply);
            Debug("handshake: ignoring unexpected error from NBD_OPT_SET_META_CONTEXT: " + DescribeOptionError(reply, out _));
            Export.MetaValid = Export.MetaContexts.Count == 0;
            return 0;
        }
    }

    /// <summary>
    /// NBD_OPT_GO (or NBD_OPT_INFO) for the current export name, after selecting the requested metadata
    /// contexts. GO falls back to NBD_OPT_EXPORT_NAME when the server does not know it. On any other refusal
    /// it throws with the server's own message, after NBD_OPT_ABORT when <paramref name="abortOnFailure"/>
    /// (a normal connect; in opt mode the caller may try something else).
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    public async ValueTask GoAsync(bool async, NbdOption option, bool abortOnFailure, CancellationToken cancellationToken)
    {
        if (Settings.RequestMetaContext)
        {
            // Requesting afresh forgets any earlier selection, even when there is nothing to request (libnbd).
            Export.MetaContexts.Clear();
            Export.MetaValid = false;
            if (Export.StructuredReplies && Settings.MetaContexts.Count > 0)
                await SetMetaContextAsync(async, Settings.MetaContexts, null, strict: false, cancellationToken).ConfigureAwait(false);
        }

        Export.ResetExport();
        int infos = (Settings.RequestBlockSize ? 1 : 0) + (Settings.FullInfo ? 2 : 0);
        int nameLength = Utf8Length(Settings.ExportName);
        BeginOption(option, 4 + nameLength + 2 + (2 * infos));
        PutString(Settings.ExportName);
        PutUInt16((ushort)infos);
        if (Settings.RequestBlockSize)
            PutUInt16((ushort)NbdInfoType.BlockSize);
        if (Settings.FullInfo)
        {
            PutUInt16((ushort)NbdInfoType.Name);
            PutUInt16((ushort)NbdInfoType.Description);
        }
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);

        while (true)
        {
            await ReceiveOptionReplyAsync(async, option, cancellationToken).ConfigureAwait(false);
            OptionReplyHeader reply = _reply;
            switch (reply.Type)
            {
                case OptionReplyType.Info:
                    // An information item too large to keep was skipped; none that we know is that large.
                    if (!_payloadSkipped)
                        HandleInfo(reply.Length);
                    continue;
                case OptionReplyType.Ack:
                    if (Export.TransmissionFlags == 0)
                        throw Violation("handshake: server acknowledged " + NbdProtocol.OptionName(option) + " without sending NBD_INFO_EXPORT");
                    SetPayloadMaximum();
                    return;
                case OptionReplyType.ErrUnsup when option == NbdOption.Go:
                    Debug("server is confused by NBD_OPT_GO, continuing anyway");
                    await ExportNameAsync(async, cancellationToken).ConfigureAwait(false);
                    return;
                default:
                    NbdServerException refusal = Refusal(reply);
                    Export.ResetExport();
                    Export.MetaValid = false;
                    if (option == NbdOption.Go && abortOnFailure)
                        await AbortAsync(async, cancellationToken).ConfigureAwait(false);
                    throw refusal;
            }
        }
    }

    /// <summary>NBD_OPT_LIST: calls <paramref name="callback"/> with each export's name and description; returns their number.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<int> ListAsync(bool async, ListCallback callback, CancellationToken cancellationToken)
    {
        BeginOption(NbdOption.List, 0);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        int count = 0;
        while (true)
        {
            await ReceiveOptionReplyAsync(async, NbdOption.List, cancellationToken).ConfigureAwait(false);
            OptionReplyHeader reply = _reply;
            if (reply.Type == OptionReplyType.Ack)
                return count;
            if (reply.Type == OptionReplyType.Server)
            {
                if (_payloadSkipped)
                {
                    Debug("skipping an export description too long to keep");
                    continue;
                }
                if (!ServerReply.TryRead(Payload(reply), out string name, out string description))
                    throw Violation("handshake: invalid NBD_REP_SERVER name length " +
                               BinaryPrimitives.ReadUInt32BigEndian(_buffer).ToString(CultureInfo.InvariantCulture));
                count++;
                callback(name, description);
                continue;
            }
            throw Refusal(reply, "list");
        }
    }

    /// <summary>
    /// NBD_OPT_LIST_META_CONTEXT for <paramref name="queries"/> on the current export name: calls
    /// <paramref name="callback"/> with each context the server offers; returns their number. Selects nothing.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public async ValueTask<int> ListMetaContextAsync(bool async, System.Collections.Generic.IReadOnlyList<string> queries,
        ContextCallback? callback, CancellationToken cancellationToken)
    {
        SendMetaContextOption(NbdOption.ListMetaContext, queries);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        int count = 0;
        while (true)
        {
            await ReceiveOptionReplyAsync(async, NbdOption.ListMetaContext, cancellationToken).ConfigureAwait(false);
            OptionReplyHeader reply = _reply;
            if (reply.Type == OptionReplyType.Ack)
                return count;
            if (reply.Type == OptionReplyType.MetaContext)
            {
                if (!MetaContextReply.TryRead(Payload(reply), out _, out string name))
                    throw Violation("handshake: invalid NBD_REP_META_CONTEXT reply length");
                count++;
                callback?.Invoke(name);
                continue;
            }
            throw Refusal(reply, "meta context");
        }
    }

    /// <summary>The request of NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT: export name and queries.</summary>
    private void SendMetaContextOption(NbdOption option, System.Collections.Generic.IReadOnlyList<string> queries)
    {
        int length = 4 + Utf8Length(Settings.ExportName) + 4;
        foreach (string query in queries)
            length += 4 + Utf8Length(query);
        BeginOption(option, length);
        PutString(Settings.ExportName);
        PutUInt32((uint)queries.Count);
        foreach (string query in queries)
            PutString(query);
    }

    /// <summary>NBD_OPT_EXPORT_NAME: the old way to enter transmission; the server closes the connection on failure.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    public async ValueTask ExportNameAsync(bool async, CancellationToken cancellationToken)
    {
        BeginOption(NbdOption.ExportName, Utf8Length(Settings.ExportName));
        PutBytes(Settings.ExportName);
        await FlushAsync(async, cancellationToken).ConfigureAwait(false);
        bool noZeroes = (Export.HandshakeFlags & HandshakeFlag.NoZeroes) != 0;
        int size = noZeroes ? NbdProtocol.ExportNameReplyShortSize : NbdProtocol.ExportNameReplySize;
        try
        {
            await ReceiveAsync(async, size, cancellationToken).ConfigureAwait(false);
        }
        catch (NbdException e) when (e.Errno == Errno.ENOTCONN)
        {
            throw Fail(Errno.ENOENT, "handshake: server closed the connection after NBD_OPT_EXPORT_NAME '" +
                       Settings.ExportName + "' (the export may not exist)");
        }
        ChunksReceived++;
        ExportNameReply reply = ExportNameReply.Read(_buffer);
        SetSizeAndFlags(reply.ExportSize, reply.TransmissionFlags);
        SetPayloadMaximum();
    }

    /// <summary>NBD_OPT_ABORT: a soft disconnect during negotiation. The server's reply, if any, is not awaited.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    public async ValueTask AbortAsync(bool async, CancellationToken cancellationToken)
    {
        try
        {
            BeginOption(NbdOption.Abort, 0);
            await FlushAsync(async, cancellationToken).ConfigureAwait(false);
            _transport.ShutdownSend();
        }
        catch (NbdException)
        {
            // The server may already be gone; aborting is best effort.
        }
    }

    private void HandleInfo(uint length)
    {
        ReadOnlySpan<byte> info = _buffer.AsSpan(0, (int)Math.Min(length, ReplyBufferSize));
        NbdInfoType type = InfoReply.ReadType(info);
        switch (type)
        {
            case NbdInfoType.Export:
                if (length != NbdInfoExport.Size)
                    throw Violation("handshake: incorrect NBD_INFO_EXPORT option reply length");
                NbdInfoExport export = NbdInfoExport.Read(info);
                SetSizeAndFlags(export.ExportSize, export.TransmissionFlags);
                break;
            case NbdInfoType.BlockSize:
                if (length != NbdInfoBlockSize.Size)
                    throw Violation("handshake: incorrect NBD_INFO_BLOCK_SIZE option reply length");
                NbdInfoBlockSize sizes = NbdInfoBlockSize.Read(info);
                Debug($"server block size constraints: min: {sizes.Minimum} preferred: {sizes.Preferred} max: {sizes.Maximum}");
                if (sizes.IsSane())
                {
                    Export.BlockMinimum = sizes.Minimum;
                    Export.BlockPreferred = sizes.Preferred;
                    Export.BlockMaximum = sizes.Maximum;
                }
                else
                {
                    Debug("ignoring improper server size constraints");
                }
                break;
            case NbdInfoType.Name:
            case NbdInfoType.Description:
                if (!InfoReply.TryReadText(info, out string text))
                    throw Violation("handshake: incorrect NBD_INFO_" + (type == NbdInfoType.Name ? "NAME" : "DESCRIPTION") + " option reply length");
                if (type == NbdInfoType.Name)
                    Export.CanonicalName = text;
                else
                    Export.Description = text;
                break;
            default:
                Debug("skipping unknown NBD_REP_INFO type " + ((int)type).ToString(CultureInfo.InvariantCulture));
                break;
        }
    }

    /// <summary>libnbd's nbd_internal_set_size_and_flags: validates and records what the server said.</summary>
    private void SetSizeAndFlags(ulong exportSize, ushort flags)
    {
        if (_log.Enabled)
            Debug($"exportsize: {exportSize} eflags: 0x{flags:x}");
        // libnbd's errno for this one is EINVAL, not EPROTO: kept so that callers see the same errno.
        if (flags == 0)
            throw Violation("handshake: invalid eflags == 0 from server", Errno.EINVAL);
        var eflags = (TransmissionFlags)flags;
        if ((eflags & TransmissionFlags.SendDf) != 0 && !Export.StructuredReplies)
        {
            Debug("server lacks structured replies, ignoring claim of df");
            eflags &= ~TransmissionFlags.SendDf;
        }
        if ((eflags & TransmissionFlags.BlockStatusPayload) != 0 && !Export.ExtendedHeaders)
        {
            Debug("server lacks extended headers, ignoring claim of block status payload");
            eflags &= ~TransmissionFlags.BlockStatusPayload;
        }
        if ((eflags & TransmissionFlags.SendFastZero) != 0 && (eflags & TransmissionFlags.SendWriteZeroes) == 0)
        {
            Debug("server lacks write zeroes, ignoring claim of fast zero");
            eflags &= ~TransmissionFlags.SendFastZero;
        }
        if (Settings.RequestMetaContext && (!Export.StructuredReplies || Settings.MetaContexts.Count == 0))
            Export.MetaValid = true;
        Export.ExportSize = exportSize;
        Export.TransmissionFlags = (ushort)eflags;
    }

    /// <summary>
    /// libnbd's payload cap: the server's maximum clamped to 1 MiB..64 MiB, or 32 MiB when it did not say
    /// (proto.md: a client should not assume more).
    /// </summary>
    private void SetPayloadMaximum() =>
        Export.PayloadMaximum = Export.BlockMaximum != 0
            ? Math.Min(NbdProtocol.MaxRequestSize, Math.Max(1024u * 1024u, Export.BlockMaximum))
            : 32u * 1024 * 1024;
}
