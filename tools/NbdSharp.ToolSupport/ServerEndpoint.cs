using System;
using System.Collections.Generic;

namespace NbdSharp.Tools;

/// <summary>
/// Where a tool's export is: an NBD URI, or a server command run with systemd socket activation
/// (<c>[ CMD ARGS ... ]</c>), as libnbd's tools accept.
/// </summary>
public sealed class ServerEndpoint
{
    private ServerEndpoint(string? uri, IReadOnlyList<string>? command)
    {
        Uri = uri;
        Command = command;
    }

    /// <summary>The NBD URI, or null for a command.</summary>
    public string? Uri { get; }

    /// <summary>The server command, or null for a URI.</summary>
    public IReadOnlyList<string>? Command { get; }

    /// <summary>An endpoint from a URI.</summary>
    /// <param name="uri">The NBD URI.</param>
    /// <returns>The endpoint.</returns>
    public static ServerEndpoint FromUri(string uri) => new(uri, null);

    /// <summary>An endpoint that runs <paramref name="command"/> with socket activation.</summary>
    /// <param name="command">The server and its arguments.</param>
    /// <returns>The endpoint.</returns>
    public static ServerEndpoint FromCommand(IReadOnlyList<string> command) => new(null, command);

    /// <summary>
    /// The endpoint of a command line: <paramref name="serverCommand"/> when it had <c>[ ... ]</c>, else its one
    /// positional word, which must be a URI.
    /// </summary>
    /// <param name="serverCommand">The words inside <c>[ ... ]</c>, or null.</param>
    /// <param name="positionals">The other positional words.</param>
    /// <param name="usageHint">What to say when the endpoint is missing or doubled.</param>
    /// <returns>The endpoint.</returns>
    /// <exception cref="ToolException">No endpoint, or more than one.</exception>
    public static ServerEndpoint FromCommandLine(IReadOnlyList<string>? serverCommand, IReadOnlyList<string> positionals, string usageHint)
    {
        ArgumentNullException.ThrowIfNull(positionals);
        if (serverCommand != null)
        {
            if (positionals.Count != 0)
                throw new ToolException(usageHint);
            return FromCommand(serverCommand);
        }
        if (positionals.Count != 1)
            throw new ToolException(usageHint);
        return FromUri(positionals[0]);
    }

    /// <summary>
    /// Connects <paramref name="handle"/>: a URI may name local TLS files (as in libnbd's tools), a command is
    /// started with socket activation.
    /// </summary>
    /// <param name="handle">A handle in the created state, configured by the tool.</param>
    /// <param name="timeout">
    /// The tool's --timeout: the connect timeout and the request timeout of the handle (zero for none).
    /// </param>
    public void Connect(NbdHandle handle, TimeSpan timeout = default)
    {
        ArgumentNullException.ThrowIfNull(handle);
        if (timeout > TimeSpan.Zero)
        {
            handle.SetConnectTimeout(timeout);
            handle.SetRequestTimeout(timeout);
        }
        if (Uri != null)
        {
            handle.SetUriAllowLocalFile(true);
            handle.ConnectUri(Uri);
        }
        else
        {
            handle.ConnectSystemdSocketActivation(Command!);
        }
    }

    /// <summary>The endpoint as the user wrote it, for messages.</summary>
    /// <returns>The URI, or the command in brackets.</returns>
    public override string ToString() => Uri ?? "[ " + string.Join(' ', Command!) + " ]";
}
