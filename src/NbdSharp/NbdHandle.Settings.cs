using System;
using System.Collections.Generic;
using System.Text;
using Microsoft.Extensions.Logging;
using NbdSharp.Negotiation;
using NbdSharp.Protocol;

namespace NbdSharp;

/// <summary>Handle settings (libnbd's <c>nbd_set_*</c> / <c>nbd_get_*</c> and friends).</summary>
public sealed partial class NbdHandle
{
    private readonly List<string> _metaContexts = [];
    private string _exportName = "";
    private bool _requestStructuredReplies = true;
    private bool _requestExtendedHeaders = true;
    private bool _requestBlockSize = true;
    private bool _requestMetaContext = true;
    private bool _fullInfo;
    private HandshakeFlag _handshakeFlags = HandshakeFlag.Mask;
    private StrictFlag _strict = StrictFlag.Mask;
    private volatile bool _preadInitialize = true;
    private AllowTransport _uriAllowTransports = AllowTransport.Mask;
    private TlsMode _uriAllowTls = TlsMode.Allow;
    private bool _uriAllowLocalFile;
    private nuint _privateData;

    /// <summary>Turns libnbd-style debug messages on or off (<c>nbd_set_debug</c>); on by default when <c>LIBNBD_DEBUG=1</c>.</summary>
    /// <param name="debug">Whether to emit debug messages.</param>
    public void SetDebug(bool debug) => _log.Enabled = debug;

    /// <summary>Whether debug messages are on (<c>nbd_get_debug</c>).</summary>
    /// <returns>The debug flag.</returns>
    public bool GetDebug() => _log.Enabled;

    /// <summary>
    /// Sends debug messages to <paramref name="callback"/> instead of stderr (<c>nbd_set_debug_callback</c>).
    /// Debugging must still be turned on with <see cref="SetDebug"/>.
    /// </summary>
    /// <param name="callback">Receives (context, message) pairs.</param>
    public void SetDebugCallback(DebugCallback callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        _log.Callback = callback;
    }

    /// <summary>Removes the debug callback, so messages go to stderr again (<c>nbd_clear_debug_callback</c>).</summary>
    public void ClearDebugCallback() => _log.Callback = null;

    /// <summary>
    /// Beyond libnbd: sends debug messages to an <see cref="ILogger"/> (at <see cref="LogLevel.Debug"/>)
    /// instead of stderr or the debug callback. Debugging must still be turned on with <see cref="SetDebug"/>.
    /// </summary>
    /// <param name="logger">The logger, or null to stop logging to one.</param>
    public void SetLogger(ILogger? logger) => _log.Logger = logger;

    /// <summary>Names the handle in debug messages (<c>nbd_set_handle_name</c>); the default is nbd1, nbd2, ...</summary>
    /// <param name="handleName">The new name.</param>
    public void SetHandleName(string handleName)
    {
        ArgumentNullException.ThrowIfNull(handleName);
        _log.HandleName = handleName;
    }

    /// <summary>The handle's name (<c>nbd_get_handle_name</c>).</summary>
    /// <returns>The name.</returns>
    public string GetHandleName() => _log.HandleName;

    /// <summary>Stores an application value in the handle and returns the previous one (<c>nbd_set_private_data</c>).</summary>
    /// <param name="privateData">Any value.</param>
    /// <returns>The previous value.</returns>
    public nuint SetPrivateData(nuint privateData)
    {
        lock (_stateLock)
        {
            nuint old = _privateData;
            _privateData = privateData;
            return old;
        }
    }

    /// <summary>The application value stored with <see cref="SetPrivateData"/> (<c>nbd_get_private_data</c>).</summary>
    /// <returns>The value (0 by default).</returns>
    public nuint GetPrivateData()
    {
        lock (_stateLock)
            return _privateData;
    }

    /// <summary>
    /// Chooses the export to connect to (<c>nbd_set_export_name</c>); the default "" is the server's default
    /// export. Allowed when newly created or negotiating.
    /// </summary>
    /// <param name="exportName">The export name, at most 4096 bytes of UTF-8.</param>
    /// <exception cref="NbdException">ENAMETOOLONG if too long; EINVAL/ENOTCONN in a wrong state.</exception>
    public void SetExportName(string exportName)
    {
        const string call = "nbd_set_export_name";
        ArgumentNullException.ThrowIfNull(exportName);
        CheckState(call, Allowed.Created | Allowed.Negotiating);
        if (Encoding.UTF8.GetByteCount(exportName) > NbdProtocol.MaxString)
            Throw(call, Errno.ENAMETOOLONG, "export name too long for NBD protocol");
        lock (_stateLock)
        {
            if (string.Equals(exportName, _exportName, StringComparison.Ordinal))
                return;
            _exportName = exportName;
            // In opt mode, what was learned about the previous export (size, flags, contexts) no longer applies.
            if (_negotiator is { } negotiator)
            {
                negotiator.Export.ResetExport();
                negotiator.Export.MetaValid = false;
            }
        }
    }

    /// <summary>The export name requested (<c>nbd_get_export_name</c>).</summary>
    /// <returns>The export name.</returns>
    public string GetExportName() => _exportName;

    /// <summary>
    /// Whether NBD_OPT_GO asks the server for its block size constraints (<c>nbd_set_request_block_size</c>;
    /// default true). Allowed when newly created or negotiating.
    /// </summary>
    /// <param name="request">Whether to ask.</param>
    public void SetRequestBlockSize(bool request)
    {
        CheckState("nbd_set_request_block_size", Allowed.Created | Allowed.Negotiating);
        _requestBlockSize = request;
    }

    /// <summary>Whether NBD_OPT_GO asks for block size constraints (<c>nbd_get_request_block_size</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetRequestBlockSize() => _requestBlockSize;

    /// <summary>
    /// Whether NBD_OPT_GO also asks for the canonical name and description of the export
    /// (<c>nbd_set_full_info</c>; default false). Allowed when newly created or negotiating.
    /// </summary>
    /// <param name="request">Whether to ask.</param>
    public void SetFullInfo(bool request)
    {
        CheckState("nbd_set_full_info", Allowed.Created | Allowed.Negotiating);
        _fullInfo = request;
    }

    /// <summary>Whether NBD_OPT_GO asks for name and description (<c>nbd_get_full_info</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetFullInfo() => _fullInfo;

    /// <summary>
    /// Whether connecting negotiates structured replies (<c>nbd_set_request_structured_replies</c>; default
    /// true). They are needed for block status and the DF flag. Allowed only when newly created.
    /// </summary>
    /// <param name="request">Whether to ask.</param>
    public void SetRequestStructuredReplies(bool request)
    {
        CheckState("nbd_set_request_structured_replies", Allowed.Created);
        _requestStructuredReplies = request;
    }

    /// <summary>Whether connecting asks for structured replies (<c>nbd_get_request_structured_replies</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetRequestStructuredReplies() => _requestStructuredReplies;

    /// <summary>
    /// Whether connecting negotiates extended headers (<c>nbd_set_request_extended_headers</c>; default true,
    /// as libnbd 1.18+), falling back to structured or simple replies when the server refuses. Ignored, as in libnbd,
    /// while <see cref="SetRequestStructuredReplies"/> is false: extended headers imply structured replies. Allowed
    /// only when newly created.
    /// </summary>
    /// <param name="request">Whether to ask.</param>
    public void SetRequestExtendedHeaders(bool request)
    {
        CheckState("nbd_set_request_extended_headers", Allowed.Created);
        _requestExtendedHeaders = request;
    }

    /// <summary>Whether connecting asks for extended headers (<c>nbd_get_request_extended_headers</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetRequestExtendedHeaders() => _requestExtendedHeaders;

    /// <summary>
    /// Whether connecting selects the contexts added with <see cref="AddMetaContext"/> using
    /// NBD_OPT_SET_META_CONTEXT (<c>nbd_set_request_meta_context</c>; default true).
    /// </summary>
    /// <param name="request">Whether to select them.</param>
    public void SetRequestMetaContext(bool request)
    {
        CheckState("nbd_set_request_meta_context", Allowed.Created | Allowed.Negotiating);
        _requestMetaContext = request;
    }

    /// <summary>Whether connecting selects metadata contexts (<c>nbd_get_request_meta_context</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetRequestMetaContext() => _requestMetaContext;

    /// <summary>
    /// Limits the handshake flags the client uses (<c>nbd_set_handshake_flags</c>; default all), to behave
    /// like an older client. Allowed only when newly created.
    /// </summary>
    /// <param name="flags">A combination of <see cref="HandshakeFlag"/> values.</param>
    /// <exception cref="NbdException">EINVAL for unknown flags.</exception>
    public void SetHandshakeFlags(HandshakeFlag flags)
    {
        const string call = "nbd_set_handshake_flags";
        CheckState(call, Allowed.Created);
        if ((flags & ~HandshakeFlag.Mask) != 0)
            Throw(call, Errno.EINVAL, "flags: invalid value for flag: 0x" + ((uint)flags).ToString("x", System.Globalization.CultureInfo.InvariantCulture));
        _handshakeFlags = flags;
    }

    /// <summary>
    /// Before connecting, the handshake flags the client is willing to use; once connected, the flags the
    /// client and server agreed on (<c>nbd_get_handshake_flags</c>).
    /// </summary>
    /// <returns>The flags.</returns>
    public HandshakeFlag GetHandshakeFlags() => _export?.Protocol.Length > 0 ? _export.HandshakeFlags : _handshakeFlags;

    /// <summary>
    /// Chooses which client-side checks run before a command is sent (<c>nbd_set_strict_mode</c>; default all).
    /// Turning checks off lets a request reach the server, which is useful to test servers.
    /// </summary>
    /// <param name="flags">A combination of <see cref="StrictFlag"/> values.</param>
    /// <exception cref="NbdException">EINVAL for unknown flags.</exception>
    public void SetStrictMode(StrictFlag flags)
    {
        if ((flags & ~StrictFlag.Mask) != 0)
            Throw("nbd_set_strict_mode", Errno.EINVAL, "flags: invalid value for flag: 0x" + ((uint)flags).ToString("x", System.Globalization.CultureInfo.InvariantCulture));
        _strict = flags;
    }

    /// <summary>The strict-mode checks in force (<c>nbd_get_strict_mode</c>).</summary>
    /// <returns>The flags.</returns>
    public StrictFlag GetStrictMode() => _strict;

    /// <summary>
    /// Whether read buffers are zeroed before each read (<c>nbd_set_pread_initialize</c>; default true), so
    /// that a failed or short read never exposes stale memory.
    /// </summary>
    /// <param name="request">Whether to zero buffers.</param>
    public void SetPreadInitialize(bool request) => _preadInitialize = request;

    /// <summary>Whether read buffers are zeroed first (<c>nbd_get_pread_initialize</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetPreadInitialize() => _preadInitialize;

    /// <summary>
    /// Adds a metadata context (e.g. <see cref="MetaContext.BaseAllocation"/>) to request while connecting
    /// (<c>nbd_add_meta_context</c>). Allowed when newly created or negotiating.
    /// </summary>
    /// <param name="name">The context name, at most 4096 bytes of UTF-8.</param>
    /// <exception cref="NbdException">ENAMETOOLONG if too long.</exception>
    public void AddMetaContext(string name)
    {
        const string call = "nbd_add_meta_context";
        ArgumentNullException.ThrowIfNull(name);
        CheckState(call, Allowed.Created | Allowed.Negotiating);
        if (Encoding.UTF8.GetByteCount(name) > NbdProtocol.MaxString)
            Throw(call, Errno.ENAMETOOLONG, "meta context name too long for NBD protocol");
        lock (_stateLock)
            _metaContexts.Add(name);
    }

    /// <summary>The number of metadata contexts added with <see cref="AddMetaContext"/> (<c>nbd_get_nr_meta_contexts</c>).</summary>
    /// <returns>The count.</returns>
    public long GetNrMetaContexts()
    {
        lock (_stateLock)
            return _metaContexts.Count;
    }

    /// <summary>The <paramref name="i"/>-th metadata context added with <see cref="AddMetaContext"/> (<c>nbd_get_meta_context</c>).</summary>
    /// <param name="i">The index.</param>
    /// <returns>The context name.</returns>
    /// <exception cref="NbdException">EINVAL if out of range.</exception>
    public string GetMetaContext(ulong i)
    {
        lock (_stateLock)
        {
            if (i >= (ulong)_metaContexts.Count)
                Throw("nbd_get_meta_context", Errno.EINVAL, "meta context request out of range");
            return _metaContexts[(int)i];
        }
    }

    /// <summary>Empties the list of metadata contexts to request (<c>nbd_clear_meta_contexts</c>).</summary>
    public void ClearMetaContexts()
    {
        CheckState("nbd_clear_meta_contexts", Allowed.Created | Allowed.Negotiating);
        lock (_stateLock)
            _metaContexts.Clear();
    }

    /// <summary>
    /// Sets the TLS policy (<c>nbd_set_tls</c>): <see cref="TlsMode.Disable"/> (the default) never asks for TLS;
    /// <see cref="TlsMode.Allow"/> asks and continues in plaintext if the server refuses; <see cref="TlsMode.Require"/>
    /// fails rather than continue without TLS. Credentials come from <see cref="SetTlsCertificates"/> (X.509) or
    /// <see cref="SetTlsPskFile"/> (TLS-PSK).
    /// </summary>
    /// <param name="tls">The policy.</param>
    public void SetTls(TlsMode tls)
    {
        const string call = "nbd_set_tls";
        CheckState(call, Allowed.Created);
        if (tls is < TlsMode.Disable or > TlsMode.Require)
            Throw(call, Errno.EINVAL, "tls: invalid value for parameter: " + ((int)tls).ToString(System.Globalization.CultureInfo.InvariantCulture));
        _tls = tls;
    }

    private TlsMode _tls;

    /// <summary>The TLS policy requested (<c>nbd_get_tls</c>), not whether TLS was negotiated.</summary>
    /// <returns>The policy.</returns>
    public TlsMode GetTls() => _tls;

    /// <summary>Limits the transports <see cref="ConnectUri(string)"/> accepts (<c>nbd_set_uri_allow_transports</c>; default all).</summary>
    /// <param name="mask">A combination of <see cref="AllowTransport"/> values.</param>
    public void SetUriAllowTransports(AllowTransport mask)
    {
        const string call = "nbd_set_uri_allow_transports";
        CheckState(call, Allowed.Created);
        if ((mask & ~AllowTransport.Mask) != 0)
            Throw(call, Errno.EINVAL, "mask: invalid value for flag: 0x" + ((uint)mask).ToString("x", System.Globalization.CultureInfo.InvariantCulture));
        _uriAllowTransports = mask;
    }

    /// <summary>
    /// Limits TLS in URIs (<c>nbd_set_uri_allow_tls</c>): <see cref="TlsMode.Disable"/> refuses <c>nbds:</c>,
    /// <see cref="TlsMode.Require"/> refuses <c>nbd:</c>, <see cref="TlsMode.Allow"/> (the default) takes both.
    /// </summary>
    /// <param name="tls">The policy.</param>
    public void SetUriAllowTls(TlsMode tls)
    {
        const string call = "nbd_set_uri_allow_tls";
        CheckState(call, Allowed.Created);
        if (tls is < TlsMode.Disable or > TlsMode.Require)
            Throw(call, Errno.EINVAL, "tls: invalid value for parameter: " + ((int)tls).ToString(System.Globalization.CultureInfo.InvariantCulture));
        _uriAllowTls = tls;
    }

    /// <summary>Allows URI parameters that read local files, such as <c>tls-certificates</c> (<c>nbd_set_uri_allow_local_file</c>; default false).</summary>
    /// <param name="allow">Whether to allow them.</param>
    public void SetUriAllowLocalFile(bool allow)
    {
        CheckState("nbd_set_uri_allow_local_file", Allowed.Created);
        _uriAllowLocalFile = allow;
    }

    /// <summary>Captures the settings that shape the handshake.</summary>
    private HandshakeSettings CaptureSettings()
    {
        lock (_stateLock)
        {
            return new HandshakeSettings
            {
                ExportName = _exportName,
                RequestStructuredReplies = _requestStructuredReplies,
                RequestExtendedHeaders = _requestExtendedHeaders,
                RequestBlockSize = _requestBlockSize,
                FullInfo = _fullInfo,
                RequestMetaContext = _requestMetaContext,
                HandshakeFlags = _handshakeFlags,
                Tls = _tls,
                TlsCredentials = CaptureTlsCredentials(),
                MetaContexts = _metaContexts.ToArray(),
            };
        }
    }
}
