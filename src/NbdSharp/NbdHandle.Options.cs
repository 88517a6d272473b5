using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Negotiation;
using NbdSharp.Protocol;

namespace NbdSharp;

/// <summary>
/// Opt mode (libnbd's <c>nbd_set_opt_mode</c> and <c>nbd_opt_*</c>): the handshake pauses in the negotiating state
/// and the caller drives the options by hand: list exports and contexts, query an export, choose one, give up.
/// Each option exists synchronously and as libnbd's aio call, whose completion callback receives 0 or the errno
/// of the server's refusal once <see cref="Poll"/> sees the option finish.
/// </summary>
public sealed partial class NbdHandle
{
    private bool _optMode;
    private Negotiator? _negotiator;

    /// <summary>One option's exchange with the server, run on the handle's negotiator.</summary>
    private delegate ValueTask<T> OptionBody<T>(Negotiator negotiator, bool async, CancellationToken cancellationToken);

    /// <summary>
    /// Makes connecting stop in the negotiating state, after TLS, extended headers and structured replies, so the
    /// caller can use the <c>Opt*</c> calls (<c>nbd_set_opt_mode</c>; default false). Allowed only when newly created.
    /// </summary>
    /// <param name="enable">Whether to pause in negotiation.</param>
    public void SetOptMode(bool enable)
    {
        CheckState("nbd_set_opt_mode", Allowed.Created);
        _optMode = enable;
    }

    /// <summary>Whether opt mode is on (<c>nbd_get_opt_mode</c>).</summary>
    /// <returns>The setting.</returns>
    public bool GetOptMode() => _optMode;

    /// <summary>
    /// Ends negotiation and enters the transmission phase with the current export (<c>nbd_opt_go</c>), first
    /// selecting the contexts added with <see cref="AddMetaContext"/>. A refusal leaves the handle negotiating, so
    /// another export can be tried.
    /// </summary>
    /// <exception cref="NbdServerException">The server refused, with its own message; still negotiating.</exception>
    public void OptGo() => RunOption("nbd_opt_go", requireFixed: false, GoBody);

    /// <summary>The Task-free aio form of <see cref="OptGo"/> (<c>nbd_aio_opt_go</c>).</summary>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptGo(CompletionCallback? completion = null) =>
        StartOption("nbd_aio_opt_go", requireFixed: false, GoBody, completion, null);

    /// <summary>
    /// Asks about the current export without entering transmission (<c>nbd_opt_info</c>): afterwards
    /// <see cref="GetSize"/>, the <c>Can*</c> queries and <see cref="GetBlockSize"/> describe it.
    /// </summary>
    /// <exception cref="NbdServerException">The server refused, with its own message; still negotiating.</exception>
    public void OptInfo() => RunOption("nbd_opt_info", requireFixed: true, InfoBody);

    /// <summary>The aio form of <see cref="OptInfo"/> (<c>nbd_aio_opt_info</c>).</summary>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptInfo(CompletionCallback? completion = null) =>
        StartOption("nbd_aio_opt_info", requireFixed: true, InfoBody, completion, null);

    /// <summary>
    /// Ends negotiation without entering transmission and closes the connection cleanly (<c>nbd_opt_abort</c>). A
    /// server that is newstyle but not fixed newstyle has no NBD_OPT_ABORT: the call succeeds and, as in libnbd,
    /// leaves the handle dead rather than closed.
    /// </summary>
    public void OptAbort() => RunOption("nbd_opt_abort", requireFixed: false, AbortBody);

    /// <summary>The aio form of <see cref="OptAbort"/> (<c>nbd_aio_opt_abort</c>): done when <see cref="AioIsConnecting"/> turns false.</summary>
    public void AioOptAbort() => StartOption("nbd_aio_opt_abort", requireFixed: false, AbortBody, null, null);

    /// <summary>
    /// Asks for TLS and runs the TLS handshake with the handle's credentials (<c>nbd_opt_starttls</c>). Meant for
    /// testing servers: <see cref="SetTls"/> with <see cref="TlsMode.Require"/> already negotiates TLS before opt mode
    /// pauses, which is the safe way.
    /// </summary>
    /// <returns>True if TLS is now in use, false if the server refused (the connection stays in plaintext).</returns>
    /// <exception cref="NbdException">The TLS handshake failed (the handle is then dead).</exception>
    public bool OptStarttls() => RunOption("nbd_opt_starttls", requireFixed: true, StarttlsBody);

    /// <summary>The aio form of <see cref="OptStarttls"/> (<c>nbd_aio_opt_starttls</c>).</summary>
    /// <param name="completion">Called once with 0 if TLS is in use, or the errno of the refusal or failure.</param>
    public void AioOptStarttls(CompletionCallback? completion = null) =>
        StartOption("nbd_aio_opt_starttls", requireFixed: true, StarttlsBody, completion, Refused);

    private static ValueTask<bool> StarttlsBody(Negotiator negotiator, bool async, CancellationToken cancellationToken) =>
        negotiator.StartTlsAsync(async, cancellationToken);

    /// <summary>Asks for structured replies (<c>nbd_opt_structured_reply</c>).</summary>
    /// <returns>True if the server accepted, false if it refused.</returns>
    public bool OptStructuredReply() =>
        RunOption("nbd_opt_structured_reply", requireFixed: true, static (n, a, ct) => n.StructuredReplyAsync(a, ct));

    /// <summary>The aio form of <see cref="OptStructuredReply"/> (<c>nbd_aio_opt_structured_reply</c>).</summary>
    /// <param name="completion">Called once with 0 if accepted, or ENOTSUP/EINVAL if refused.</param>
    public void AioOptStructuredReply(CompletionCallback? completion = null) =>
        StartOption("nbd_aio_opt_structured_reply", requireFixed: true, static (n, a, ct) => n.StructuredReplyAsync(a, ct), completion, Refused);

    /// <summary>Asks for extended headers (<c>nbd_opt_extended_headers</c>); accepted, they imply structured replies.</summary>
    /// <returns>True if the server accepted, false if it refused.</returns>
    public bool OptExtendedHeaders() =>
        RunOption("nbd_opt_extended_headers", requireFixed: true, static (n, a, ct) => n.ExtendedHeadersAsync(a, ct));

    /// <summary>The aio form of <see cref="OptExtendedHeaders"/> (<c>nbd_aio_opt_extended_headers</c>).</summary>
    /// <param name="completion">Called once with 0 if accepted, or an errno if refused.</param>
    public void AioOptExtendedHeaders(CompletionCallback? completion = null) =>
        StartOption("nbd_aio_opt_extended_headers", requireFixed: true, static (n, a, ct) => n.ExtendedHeadersAsync(a, ct), completion, Refused);

    /// <summary>Lists the server's exports (<c>nbd_opt_list</c>).</summary>
    /// <param name="list">Called with each export's name and description ("" when none).</param>
    /// <returns>The number of exports.</returns>
    /// <exception cref="NbdServerException">The server refused to list.</exception>
    public int OptList(ListCallback list)
    {
        ArgumentNullException.ThrowIfNull(list);
        return RunOption("nbd_opt_list", requireFixed: true, (n, a, ct) => n.ListAsync(a, list, ct));
    }

    /// <summary>The aio form of <see cref="OptList"/> (<c>nbd_aio_opt_list</c>).</summary>
    /// <param name="list">Called with each export's name and description.</param>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptList(ListCallback list, CompletionCallback? completion = null)
    {
        ArgumentNullException.ThrowIfNull(list);
        var exports = new List<(string Name, string Description)>();
        StartOption("nbd_aio_opt_list", requireFixed: true, (n, a, ct) => n.ListAsync(a, (name, description) =>
        {
            exports.Add((name, description));
            return 0;
        }, ct), completion, null, () =>
        {
            foreach ((string name, string description) in exports)
                list(name, description);
        });
    }

    /// <summary>Lists the contexts the server offers for the queries added with <see cref="AddMetaContext"/> (<c>nbd_opt_list_meta_context</c>).</summary>
    /// <param name="context">Called with each context name.</param>
    /// <returns>The number of contexts.</returns>
    public int OptListMetaContext(ContextCallback context) =>
        ListMetaContexts("nbd_opt_list_meta_context", RequestedContexts(), context);

    /// <summary>Lists the contexts the server offers for <paramref name="queries"/> (<c>nbd_opt_list_meta_context_queries</c>).</summary>
    /// <param name="queries">Queries such as <c>base:</c> or <c>qemu:dirty-bitmap:</c>; none lists everything.</param>
    /// <param name="context">Called with each context name.</param>
    /// <returns>The number of contexts.</returns>
    public int OptListMetaContextQueries(IReadOnlyList<string> queries, ContextCallback context) =>
        ListMetaContexts("nbd_opt_list_meta_context_queries", queries, context);

    /// <summary>The aio form of <see cref="OptListMetaContext"/> (<c>nbd_aio_opt_list_meta_context</c>).</summary>
    /// <param name="context">Called with each context name.</param>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptListMetaContext(ContextCallback context, CompletionCallback? completion = null) =>
        StartMetaContexts("nbd_aio_opt_list_meta_context", RequestedContexts(), context, completion, set: false);

    /// <summary>The aio form of <see cref="OptListMetaContextQueries"/> (<c>nbd_aio_opt_list_meta_context_queries</c>).</summary>
    /// <param name="queries">Queries; none lists everything.</param>
    /// <param name="context">Called with each context name.</param>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptListMetaContextQueries(IReadOnlyList<string> queries, ContextCallback context, CompletionCallback? completion = null) =>
        StartMetaContexts("nbd_aio_opt_list_meta_context_queries", queries, context, completion, set: false);

    /// <summary>
    /// Selects the contexts added with <see cref="AddMetaContext"/> for block status (<c>nbd_opt_set_meta_context</c>);
    /// replaces any earlier selection.
    /// </summary>
    /// <param name="context">Called with each context the server selected.</param>
    /// <returns>The number of contexts selected.</returns>
    public int OptSetMetaContext(ContextCallback context) =>
        SetMetaContexts("nbd_opt_set_meta_context", RequestedContexts(), context);

    /// <summary>Selects the contexts matching <paramref name="queries"/> for block status (<c>nbd_opt_set_meta_context_queries</c>).</summary>
    /// <param name="queries">Context names.</param>
    /// <param name="context">Called with each context the server selected.</param>
    /// <returns>The number of contexts selected.</returns>
    public int OptSetMetaContextQueries(IReadOnlyList<string> queries, ContextCallback context) =>
        SetMetaContexts("nbd_opt_set_meta_context_queries", queries, context);

    /// <summary>The aio form of <see cref="OptSetMetaContext"/> (<c>nbd_aio_opt_set_meta_context</c>).</summary>
    /// <param name="context">Called with each context the server selected.</param>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptSetMetaContext(ContextCallback context, CompletionCallback? completion = null) =>
        StartMetaContexts("nbd_aio_opt_set_meta_context", RequestedContexts(), context, completion, set: true);

    /// <summary>The aio form of <see cref="OptSetMetaContextQueries"/> (<c>nbd_aio_opt_set_meta_context_queries</c>).</summary>
    /// <param name="queries">Context names.</param>
    /// <param name="context">Called with each context the server selected.</param>
    /// <param name="completion">Called once with 0 or the refusal's errno.</param>
    public void AioOptSetMetaContextQueries(IReadOnlyList<string> queries, ContextCallback context, CompletionCallback? completion = null) =>
        StartMetaContexts("nbd_aio_opt_set_meta_context_queries", queries, context, completion, set: true);

    private int ListMetaContexts(string call, IReadOnlyList<string> queries, ContextCallback context)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(context);
        return RunOption(call, requireFixed: true, (n, a, ct) => n.ListMetaContextAsync(a, queries, context, ct));
    }

    private int SetMetaContexts(string call, IReadOnlyList<string> queries, ContextCallback context)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(context);
        return RunOption(call, requireFixed: true, (n, a, ct) => n.SetMetaContextAsync(a, queries, context, strict: true, ct));
    }

    private void StartMetaContexts(string call, IReadOnlyList<string> queries, ContextCallback context, CompletionCallback? completion, bool set)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(context);
        var names = new List<string>();
        ContextCallback collect = name =>
        {
            names.Add(name);
            return 0;
        };
        OptionBody<int> body = set
            ? (n, a, ct) => n.SetMetaContextAsync(a, queries, collect, strict: true, ct)
            : (n, a, ct) => n.ListMetaContextAsync(a, queries, collect, ct);
        StartOption(call, requireFixed: true, body, completion, null, () =>
        {
            foreach (string name in names)
                context(name);
        });
    }

    private string[] RequestedContexts()
    {
        lock (_stateLock)
            return _metaContexts.ToArray();
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private async ValueTask<bool> GoBody(Negotiator negotiator, bool async, CancellationToken cancellationToken)
    {
        if (negotiator.IsFixedNewstyle)
            await negotiator.GoAsync(async, NbdOption.Go, abortOnFailure: false, cancellationToken).ConfigureAwait(false);
        else
            await negotiator.ExportNameAsync(async, cancellationToken).ConfigureAwait(false);
        EnterTransmission(negotiator);
        return true;
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<bool> InfoBody(Negotiator negotiator, bool async, CancellationToken cancellationToken)
    {
        await negotiator.GoAsync(async, NbdOption.Info, abortOnFailure: false, cancellationToken).ConfigureAwait(false);
        return true;
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private async ValueTask<bool> AbortBody(Negotiator negotiator, bool async, CancellationToken cancellationToken)
    {
        if (!negotiator.IsFixedNewstyle)
        {
            // libnbd: "handshake: server is not using fixed newstyle"; the connection is dropped, the call succeeds.
            if (_log.Enabled)
                _log.Write(negotiator.Call, "server is not using fixed newstyle: dropping the connection instead of NBD_OPT_ABORT");
            negotiator.Transport.Abort();
            lock (_stateLock)
                _state = HandleState.Dead;
            return true;
        }
        await negotiator.AbortAsync(async, cancellationToken).ConfigureAwait(false);
        lock (_stateLock)
            _state = HandleState.Closed;
        return true;
    }

    /// <summary>For the aio forms of yes/no options: a refusal is reported to the completion callback as ENOTSUP.</summary>
    private static int Refused(bool accepted) => accepted ? 0 : Errno.ENOTSUP;

    /// <summary>Runs an option synchronously on the caller's thread.</summary>
    private T RunOption<T>(string call, bool requireFixed, OptionBody<T> body)
    {
        Negotiator negotiator = BeginOption(call, requireFixed);
        try
        {
            return SyncPath.Result(OptionAsync(negotiator, body, async: false));
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
    }

    /// <summary>
    /// Starts an option in the background; <see cref="Poll"/> sees it finish, runs <paramref name="deliver"/> (the
    /// option's own callbacks) and then <paramref name="completion"/> with 0 or the errno of the refusal.
    /// </summary>
    private void StartOption<T>(string call, bool requireFixed, OptionBody<T> body, CompletionCallback? completion,
        Func<T, int>? outcome, Action? deliver = null)
    {
        Negotiator negotiator = BeginOption(call, requireFixed);
        StartPending(OptionAsync(negotiator, body, async: true).AsTask(), task =>
        {
            int error = task.IsCompletedSuccessfully
                ? outcome?.Invoke(((Task<T>)task).Result) ?? 0
                : (task.Exception?.InnerException as NbdException)?.Errno ?? Errno.EIO;
            deliver?.Invoke();
            if (completion != null)
                Engine.Callbacks.InvokeCompletion(completion, ref error);
        });
    }

    /// <summary>
    /// Checks that the handle is negotiating (and the server speaks fixed newstyle when the option needs it),
    /// hands the negotiator the current settings, and marks the handle busy (libnbd's "connecting") meanwhile.
    /// </summary>
    private Negotiator BeginOption(string call, bool requireFixed)
    {
        lock (_stateLock)
        {
            CheckState(call, Allowed.Negotiating);
            Negotiator negotiator = _negotiator!;
            if (requireFixed && !negotiator.IsFixedNewstyle)
                Throw(call, Errno.ENOTSUP, "server is not using fixed newstyle protocol");
            negotiator.Settings = CaptureSettings();
            negotiator.Call = call;
            _state = HandleState.Connecting;
            return negotiator;
        }
    }

    /// <summary>
    /// Runs an option and settles the handle's state: back to negotiating after a success or a refusal by the
    /// server (unless the option moved on to transmission or closed), dead after any other failure.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private async ValueTask<T> OptionAsync<T>(Negotiator negotiator, OptionBody<T> body, bool async)
    {
        using var deadline = new ConnectDeadline(this, GetConnectTimeout(), () => negotiator.Transport, CancellationToken.None);
        try
        {
            T result = await body(negotiator, async, deadline.Token).ConfigureAwait(false);
            lock (_stateLock)
            {
                if (_state == HandleState.Connecting)
                    _state = HandleState.Negotiating;
            }
            return result;
        }
        catch (NbdServerException)
        {
            lock (_stateLock)
            {
                if (_state == HandleState.Connecting)
                    _state = HandleState.Negotiating;
            }
            throw;
        }
        catch (Exception failure)
        {
            lock (_stateLock)
            {
                _state = HandleState.Dead;
                _negotiator = null;
            }
            negotiator.Transport.Dispose();
            negotiator.Dispose();
            if (deadline.Translate(negotiator.Call, failure) is { } timedOut)
                throw timedOut;
            throw;
        }
    }
}
