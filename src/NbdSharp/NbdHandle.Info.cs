using System;
using System.Threading;
using NbdSharp.Negotiation;
using NbdSharp.Protocol;

namespace NbdSharp;

/// <summary>What the server said about the export and the connection (libnbd's queries after connecting).</summary>
public sealed partial class NbdHandle
{
    private const Allowed AfterNegotiation = Allowed.Negotiating | Allowed.Connected | Allowed.Closed;

    /// <summary>The export the server described, or libnbd's error when it has not described one yet.</summary>
    private NegotiatedExport DescribedExport(string call, string what)
    {
        CheckState(call, AfterNegotiation);
        NegotiatedExport? export = _export;
        if (export == null || export.TransmissionFlags == 0)
            Throw(call, Errno.EINVAL, "server has not returned export " + what + ", you need to connect to the server first");
        return export;
    }

    private bool Flag(string call, TransmissionFlags flag) =>
        ((TransmissionFlags)DescribedExport(call, "flags").TransmissionFlags & flag) != 0;

    /// <summary>The export size in bytes (<c>nbd_get_size</c>).</summary>
    /// <returns>The size.</returns>
    /// <exception cref="NbdException">EOVERFLOW if the server claims more than 2^63-1 bytes (CVE-2023-5215);
    /// EINVAL/ENOTCONN before the server described the export.</exception>
    public long GetSize()
    {
        const string call = "nbd_get_size";
        ulong size = DescribedExport(call, "size").ExportSize;
        if (size > long.MaxValue)
            Throw(call, Errno.EOVERFLOW, "server claims size " + size.ToString(System.Globalization.CultureInfo.InvariantCulture) + " which does not fit in signed result");
        return (long)size;
    }

    /// <summary>
    /// A block size constraint (<c>nbd_get_block_size</c>): the server's minimum, preferred or maximum (0 if
    /// it did not advertise them), or the largest payload this client sends.
    /// </summary>
    /// <param name="sizeType">Which size.</param>
    /// <returns>The size in bytes.</returns>
    public long GetBlockSize(SizeKind sizeType)
    {
        const string call = "nbd_get_block_size";
        NegotiatedExport export = DescribedExport(call, "flags");
        return sizeType switch
        {
            SizeKind.Minimum => export.BlockMinimum,
            SizeKind.Preferred => export.BlockPreferred,
            SizeKind.Maximum => export.BlockMaximum,
            SizeKind.Payload => export.PayloadMaximum,
            _ => throw Error(call, Errno.EINVAL, "size_type: invalid value for parameter: " + ((int)sizeType).ToString(System.Globalization.CultureInfo.InvariantCulture)),
        };
    }

    /// <summary>Whether the export is read-only (<c>nbd_is_read_only</c>).</summary>
    /// <returns>The flag.</returns>
    public bool IsReadOnly() => Flag("nbd_is_read_only", TransmissionFlags.ReadOnly);

    /// <summary>Whether the export behaves like a rotational disk (<c>nbd_is_rotational</c>).</summary>
    /// <returns>The flag.</returns>
    public bool IsRotational() => Flag("nbd_is_rotational", TransmissionFlags.Rotational);

    /// <summary>Whether the server supports <see cref="Flush"/> (<c>nbd_can_flush</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanFlush() => Flag("nbd_can_flush", TransmissionFlags.SendFlush);

    /// <summary>Whether the server supports <see cref="CmdFlag.Fua"/> (<c>nbd_can_fua</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanFua() => Flag("nbd_can_fua", TransmissionFlags.SendFua);

    /// <summary>Whether the server supports <see cref="Trim"/> (<c>nbd_can_trim</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanTrim() => Flag("nbd_can_trim", TransmissionFlags.SendTrim);

    /// <summary>Whether the server supports <see cref="Zero"/> (<c>nbd_can_zero</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanZero() => Flag("nbd_can_zero", TransmissionFlags.SendWriteZeroes);

    /// <summary>Whether the server supports <see cref="CmdFlag.FastZero"/> (<c>nbd_can_fast_zero</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanFastZero() => Flag("nbd_can_fast_zero", TransmissionFlags.SendFastZero);

    /// <summary>Whether the server supports <see cref="CmdFlag.Df"/> on structured reads (<c>nbd_can_df</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanDf() => Flag("nbd_can_df", TransmissionFlags.SendDf);

    /// <summary>Whether several connections to this export share one cache, so multi-conn is safe (<c>nbd_can_multi_conn</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanMultiConn() => Flag("nbd_can_multi_conn", TransmissionFlags.CanMultiConn);

    /// <summary>Whether the server supports <see cref="Cache"/> (<c>nbd_can_cache</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanCache() => Flag("nbd_can_cache", TransmissionFlags.SendCache);

    /// <summary>Whether the server accepts a block status payload (filtered block status; <c>nbd_can_block_status_payload</c>).</summary>
    /// <returns>The flag.</returns>
    public bool CanBlockStatusPayload() => Flag("nbd_can_block_status_payload", TransmissionFlags.BlockStatusPayload);

    /// <summary>Whether metadata context <paramref name="metacontext"/> was negotiated (<c>nbd_can_meta_context</c>).</summary>
    /// <param name="metacontext">A context name, e.g. <see cref="MetaContext.BaseAllocation"/>.</param>
    /// <returns>Whether block status can report it.</returns>
    public bool CanMetaContext(string metacontext)
    {
        const string call = "nbd_can_meta_context";
        ArgumentNullException.ThrowIfNull(metacontext);
        CheckState(call, AfterNegotiation);
        NegotiatedExport? export = _export;
        bool requested;
        lock (_stateLock)
            requested = _metaContexts.Count > 0;
        if (export == null || (requested && !export.MetaValid))
            Throw(call, Errno.EINVAL, "need a successful server meta context request first");
        foreach (NegotiatedContext context in export.MetaContexts)
        {
            if (string.Equals(context.Name, metacontext, StringComparison.Ordinal))
                return true;
        }
        return false;
    }

    /// <summary>The handshake the server used: "oldstyle", "newstyle" or "newstyle-fixed" (<c>nbd_get_protocol</c>).</summary>
    /// <returns>The protocol name.</returns>
    public string GetProtocol()
    {
        CheckState("nbd_get_protocol", AfterNegotiation);
        return _export!.Protocol;
    }

    /// <summary>The export's canonical name, if the server sent one (<c>nbd_get_canonical_export_name</c>; see <see cref="SetFullInfo"/>).</summary>
    /// <returns>The name.</returns>
    /// <exception cref="NbdException">ENOTSUP if the server did not send one.</exception>
    public string GetCanonicalExportName()
    {
        const string call = "nbd_get_canonical_export_name";
        NegotiatedExport export = DescribedExport(call, "flags");
        return export.CanonicalName ?? throw Error(call, Errno.ENOTSUP, "server did not advertise a canonical name");
    }

    /// <summary>The export's description, if the server sent one (<c>nbd_get_export_description</c>; see <see cref="SetFullInfo"/>).</summary>
    /// <returns>The description.</returns>
    /// <exception cref="NbdException">ENOTSUP if the server did not send one.</exception>
    public string GetExportDescription()
    {
        const string call = "nbd_get_export_description";
        NegotiatedExport export = DescribedExport(call, "flags");
        return export.Description ?? throw Error(call, Errno.ENOTSUP, "server did not advertise a description");
    }

    /// <summary>Whether structured replies were negotiated (<c>nbd_get_structured_replies_negotiated</c>).</summary>
    /// <returns>The flag.</returns>
    public bool GetStructuredRepliesNegotiated()
    {
        CheckState("nbd_get_structured_replies_negotiated", AfterNegotiation);
        return _export!.StructuredReplies;
    }

    /// <summary>Whether extended headers were negotiated (<c>nbd_get_extended_headers_negotiated</c>).</summary>
    /// <returns>The flag.</returns>
    public bool GetExtendedHeadersNegotiated()
    {
        CheckState("nbd_get_extended_headers_negotiated", AfterNegotiation);
        return _export!.ExtendedHeaders;
    }

    /// <summary>Whether the connection uses TLS (<c>nbd_get_tls_negotiated</c>).</summary>
    /// <returns>The flag.</returns>
    public bool GetTlsNegotiated()
    {
        CheckState("nbd_get_tls_negotiated", AfterNegotiation);
        return _export!.TlsNegotiated;
    }

    /// <summary>Plaintext NBD protocol bytes sent so far, handshake included (<c>nbd_stats_bytes_sent</c>).</summary>
    /// <returns>The count.</returns>
    public ulong StatsBytesSent() => (ulong)(Interlocked.Read(ref _handshakeBytesSent) + (_engine?.BytesSent ?? 0));

    /// <summary>NBD messages (requests and options) sent so far (<c>nbd_stats_chunks_sent</c>).</summary>
    /// <returns>The count.</returns>
    public ulong StatsChunksSent() => (ulong)(Interlocked.Read(ref _handshakeChunksSent) + (_engine?.ChunksSent ?? 0));

    /// <summary>Plaintext NBD protocol bytes received so far, handshake included (<c>nbd_stats_bytes_received</c>).</summary>
    /// <returns>The count.</returns>
    public ulong StatsBytesReceived() => (ulong)(Interlocked.Read(ref _handshakeBytesReceived) + (_engine?.BytesReceived ?? 0));

    /// <summary>NBD messages (replies, chunks and option replies) received so far (<c>nbd_stats_chunks_received</c>).</summary>
    /// <returns>The count.</returns>
    public ulong StatsChunksReceived() => (ulong)(Interlocked.Read(ref _handshakeChunksReceived) + (_engine?.ChunksReceived ?? 0));
}
