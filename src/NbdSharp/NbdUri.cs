using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace NbdSharp;

/// <summary>The transport an NBD URI names.</summary>
public enum NbdUriTransport
{
    /// <summary>TCP (<c>nbd://</c>, <c>nbds://</c>).</summary>
    Tcp,
    /// <summary>A Unix domain socket (<c>nbd+unix://</c>, <c>nbds+unix://</c>), given by the <c>socket</c> parameter.</summary>
    Unix,
    /// <summary>AF_VSOCK (<c>nbd+vsock://</c>, <c>nbds+vsock://</c>); the host is the numeric CID.</summary>
    Vsock,
    /// <summary>An SSH tunnel (<c>nbd+ssh://</c>, <c>nbds+ssh://</c>).</summary>
    Ssh,
}

/// <summary>
/// A parsed NBD URI (NBD's doc/uri.md plus libnbd's extensions): <c>nbd[s][+unix|+vsock|+ssh]://[user@][host][:port][/export][?query]</c>.
/// The export name is the path without its leading slash, percent-decoded; query values are percent-decoded.
/// </summary>
public sealed class NbdUri
{
    private readonly bool _literalHost;

    private NbdUri(string scheme, NbdUriTransport transport, bool tls, string? user, string? host, bool literalHost, int? port,
        string exportName, IReadOnlyList<KeyValuePair<string, string>> query)
    {
        _literalHost = literalHost;
        Scheme = scheme;
        Transport = transport;
        Tls = tls;
        User = user;
        Host = host;
        Port = port;
        ExportName = exportName;
        Query = query;
    }

    /// <summary>
    /// A URI for what a handle connected to (<c>nbd_get_uri</c>): the scheme follows <paramref name="transport"/> and
    /// <paramref name="tls"/>, the host is an IPv6 literal when it holds a colon.
    /// </summary>
    internal static NbdUri Describe(NbdUriTransport transport, bool tls, string? user, string? host, int? port, string exportName,
        IReadOnlyList<KeyValuePair<string, string>> query)
    {
        string scheme = (tls ? "nbds" : "nbd") + transport switch
        {
            NbdUriTransport.Unix => "+unix",
            NbdUriTransport.Vsock => "+vsock",
            NbdUriTransport.Ssh => "+ssh",
            _ => "",
        };
        bool literalHost = host != null && host.Contains(':', StringComparison.Ordinal);
        return new NbdUri(scheme, transport, tls, user, host, literalHost, port, exportName, query);
    }

    /// <summary>The scheme, lower case (e.g. <c>nbd+unix</c>).</summary>
    public string Scheme { get; }

    /// <summary>The transport the scheme names.</summary>
    public NbdUriTransport Transport { get; }

    /// <summary>Whether the scheme requires TLS (<c>nbds</c>...).</summary>
    public bool Tls { get; }

    /// <summary>The user part of the authority (the TLS username), or null.</summary>
    public string? User { get; }

    /// <summary>The host (IPv6 literals without brackets), or null when absent.</summary>
    public string? Host { get; }

    /// <summary>The port, or null when absent.</summary>
    public int? Port { get; }

    /// <summary>The export name: the path without its leading '/', percent-decoded ("" for none).</summary>
    public string ExportName { get; }

    /// <summary>The query parameters in order, names and values percent-decoded.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Query { get; }

    /// <summary>The value of query parameter <paramref name="name"/> (case-insensitive, last one wins), or null.</summary>
    /// <param name="name">The parameter name, e.g. <c>socket</c>.</param>
    /// <returns>The decoded value, or null if absent.</returns>
    public string? GetQueryParameter(string name)
    {
        string? value = null;
        foreach (KeyValuePair<string, string> parameter in Query)
        {
            if (string.Equals(parameter.Key, name, StringComparison.OrdinalIgnoreCase))
                value = parameter.Value;
        }
        return value;
    }

    /// <summary>The Unix socket path of the <c>socket</c> parameter, or null.</summary>
    public string? Socket => GetQueryParameter("socket");

    /// <summary>Parses an NBD URI.</summary>
    /// <param name="uri">The URI text.</param>
    /// <returns>The parsed URI.</returns>
    /// <exception cref="NbdException">EINVAL with a message saying what is wrong.</exception>
    public static NbdUri Parse(string uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        if (TryParse(uri, out NbdUri? result, out string? error))
            return result;
        throw new NbdException(Errno.EINVAL, NbdException.Format("nbd_connect_uri", error, Errno.EINVAL));
    }

    /// <summary>Parses an NBD URI without throwing.</summary>
    /// <param name="uri">The URI text.</param>
    /// <param name="result">The parsed URI on success.</param>
    /// <returns>Whether <paramref name="uri"/> is a valid NBD URI.</returns>
    public static bool TryParse(string uri, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out NbdUri? result) =>
        TryParse(uri, out result, out _);

    /// <summary>Parses an NBD URI, returning what is wrong with it on failure.</summary>
    internal static bool TryParse(string uri, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out NbdUri? result,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out string? error)
    {
        result = null;
        int colon = uri.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || !IsScheme(uri.AsSpan(0, colon)))
        {
            error = "NBD URI does not have a scheme: valid NBD URIs should start with a scheme like nbd://, nbds:// or nbd+unix://";
            if (uri.StartsWith('/'))
                error += ": to open a local socket use \"nbd+unix://?socket=PATH\"";
            else if (uri.StartsWith("localhost", StringComparison.OrdinalIgnoreCase))
                error += ": to open a local port use \"nbd://localhost\" or \"nbd://localhost:PORT\"";
            return false;
        }
        string scheme = uri[..colon].ToLowerInvariant();
        NbdUriTransport transport;
        bool tls;
        switch (scheme)
        {
            case "nbd": transport = NbdUriTransport.Tcp; tls = false; break;
            case "nbds": transport = NbdUriTransport.Tcp; tls = true; break;
            case "nbd+unix": transport = NbdUriTransport.Unix; tls = false; break;
            case "nbds+unix": transport = NbdUriTransport.Unix; tls = true; break;
            case "nbd+vsock": transport = NbdUriTransport.Vsock; tls = false; break;
            case "nbds+vsock": transport = NbdUriTransport.Vsock; tls = true; break;
            case "nbd+ssh": transport = NbdUriTransport.Ssh; tls = false; break;
            case "nbds+ssh": transport = NbdUriTransport.Ssh; tls = true; break;
            default:
                error = "unknown NBD URI scheme: " + uri[..colon];
                if (scheme == "localhost")
                    error += ": to open a local port use \"nbd://localhost\" or \"nbd://localhost:PORT\"";
                return false;
        }
        if (string.CompareOrdinal(uri, colon, "://", 0, 3) != 0)
        {
            error = "URI must begin with '" + uri[..colon] + "://'";
            return false;
        }

        // scheme://authority[/path][?query][#fragment]
        string rest = uri[(colon + 3)..];
        int hash = rest.IndexOf('#', StringComparison.Ordinal);
        if (hash >= 0)
        {
            if (!AllOf(rest.AsSpan(hash + 1), Allowed.Query))
            {
                error = "unable to parse URI: " + uri;
                return false;
            }
            rest = rest[..hash];
        }
        int question = rest.IndexOf('?', StringComparison.Ordinal);
        string queryText = question >= 0 ? rest[(question + 1)..] : "";
        if (question >= 0)
            rest = rest[..question];
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        string authority = slash >= 0 ? rest[..slash] : rest;
        string path = slash >= 0 ? rest[slash..] : "";
        // RFC 3986's character classes, as libnbd's parser (libxml2) applies them: a space, a raw non-ASCII
        // character or a stray bracket makes the whole URI invalid.
        if (!AllOf(path, Allowed.Path) || !AllOf(queryText, Allowed.Query))
        {
            error = "unable to parse URI: " + uri;
            return false;
        }

        string? user = null;
        int at = authority.LastIndexOf('@');
        if (at >= 0)
        {
            if (!AllOf(authority.AsSpan(0, at), Allowed.UserInfo))
            {
                error = "unable to parse URI: " + uri;
                return false;
            }
            if (!PercentDecoding.TryDecode(authority[..at], out user))
            {
                error = "unable to parse URI: invalid percent-encoding in the user name: " + uri;
                return false;
            }
            authority = authority[(at + 1)..];
        }

        string? host = null;
        bool literalHost = false;
        int? port = null;
        string portText = "";
        if (authority.StartsWith('['))
        {
            int close = authority.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                error = "unable to parse URI: unterminated IPv6 literal: " + uri;
                return false;
            }
            host = authority[1..close];
            literalHost = true;
            if (!AllOf(host, Allowed.IpLiteral))
            {
                error = "unable to parse URI: invalid IP literal: " + uri;
                return false;
            }
            string after = authority[(close + 1)..];
            if (after.Length > 0 && after[0] != ':')
            {
                error = "unable to parse URI: unexpected text after the IPv6 literal: " + uri;
                return false;
            }
            portText = after.Length > 0 ? after[1..] : "";
        }
        else
        {
            int portColon = authority.LastIndexOf(':');
            string hostText = portColon >= 0 ? authority[..portColon] : authority;
            portText = portColon >= 0 ? authority[(portColon + 1)..] : "";
            if (hostText.Length > 0)
            {
                if (!AllOf(hostText, Allowed.Host))
                {
                    error = "unable to parse URI: invalid host name: " + uri;
                    return false;
                }
                if (!PercentDecoding.TryDecode(hostText, out host))
                {
                    error = "unable to parse URI: invalid percent-encoding in the host: " + uri;
                    return false;
                }
            }
        }
        if (portText.Length > 0)
        {
            if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value > 65535)
            {
                error = "unable to parse URI: invalid port '" + portText + "': " + uri;
                return false;
            }
            port = value;
        }

        string exportName = "";
        if (path.Length > 0)
        {
            if (!PercentDecoding.TryDecode(path[1..], out string? decodedPath))
            {
                error = "unable to parse URI: invalid percent-encoding in the export name: " + uri;
                return false;
            }
            exportName = decodedPath;
        }

        var query = new List<KeyValuePair<string, string>>();
        foreach (string parameter in queryText.Split('&', ';'))
        {
            if (parameter.Length == 0)
                continue;
            int equals = parameter.IndexOf('=', StringComparison.Ordinal);
            string name = equals >= 0 ? parameter[..equals] : parameter;
            string value = equals >= 0 ? parameter[(equals + 1)..] : "";
            if (!PercentDecoding.TryDecode(name, out string? decodedName) || !PercentDecoding.TryDecode(value, out string? decodedValue))
            {
                error = "unable to parse URI queries: " + queryText;
                return false;
            }
            query.Add(new(decodedName, decodedValue));
        }

        result = new NbdUri(scheme, transport, tls, user, host, literalHost, port, exportName, query);
        error = null;
        return true;
    }

    private static bool IsScheme(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty || !char.IsAsciiLetter(text[0]))
            return false;
        foreach (char c in text)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c != '+' && c != '-' && c != '.')
                return false;
        }
        return true;
    }

    [Flags]
    private enum Allowed
    {
        /// <summary>RFC 3986 reg-name: unreserved, sub-delims and %XX.</summary>
        Host = 1,
        /// <summary>userinfo: a host name's characters and ':'.</summary>
        UserInfo = Host | 2,
        /// <summary>An IP literal between brackets: IPv6, a zone (%25...) or IPvFuture.</summary>
        IpLiteral = UserInfo,
        /// <summary>A path: pchar (userinfo's characters and '@') and '/'.</summary>
        Path = UserInfo | 4,
        /// <summary>A query or a fragment: a path's characters and '?'.</summary>
        Query = Path | 8,
    }

    private static bool AllOf(ReadOnlySpan<char> text, Allowed allowed)
    {
        foreach (char c in text)
        {
            bool ok = char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~' or '%' or '!' or '$' or '&' or '\'' or '(' or ')' or '*' or '+' or ',' or ';' or '=' ||
                      (c == ':' && (allowed & Allowed.UserInfo) == Allowed.UserInfo) ||
                      (c is '@' or '/' && (allowed & Allowed.Path) == Allowed.Path) ||
                      (c == '?' && (allowed & Allowed.Query) == Allowed.Query);
            if (!ok)
                return false;
        }
        return true;
    }

    /// <summary>Percent-encodes the characters that may not appear literally in a URI path or query value.</summary>
    internal static string Encode(string text, bool inQuery) => Encode(text, inQuery ? Allowed.Query : Allowed.Path, inQuery);

    /// <summary>Percent-encodes every character outside <paramref name="allowed"/>, and the query's separators in a query.</summary>
    private static string Encode(string text, Allowed allowed, bool inQuery)
    {
        var encoded = new StringBuilder(text.Length);
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            char c = (char)b;
            bool plain = b < 0x80 && c != '%' && c != '?' && AllOf([c], allowed) && !(inQuery && c is '&' or '=' or '+' or ';');
            if (plain)
                encoded.Append(c);
            else
                encoded.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
        }
        return encoded.ToString();
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var text = new StringBuilder(Scheme).Append("://");
        if (User != null)
            text.Append(Encode(User, Allowed.UserInfo, inQuery: false)).Append('@');
        if (Host != null)
        {
            if (_literalHost)
                text.Append('[').Append(Host).Append(']');
            else
                text.Append(Encode(Host, Allowed.Host, inQuery: false));
        }
        if (Port != null)
            text.Append(':').Append(Port.Value.ToString(CultureInfo.InvariantCulture));
        text.Append('/').Append(Encode(ExportName, inQuery: false));
        for (int i = 0; i < Query.Count; i++)
        {
            text.Append(i == 0 ? '?' : '&').Append(Encode(Query[i].Key, inQuery: true)).Append('=')
                .Append(Encode(Query[i].Value, inQuery: true));
        }
        return text.ToString();
    }
}
