namespace NbdSharp.Transport;

/// <summary>What a handle connected to, as much as a URI can say (for <c>GetUri</c>).</summary>
internal sealed record Endpoint(EndpointKind Kind, string Host = "", string Port = "", uint Cid = 0, uint VsockPort = 0)
{
    /// <summary>A transport no URI can name (an adopted socket, a command).</summary>
    public static readonly Endpoint Unnamed = new(EndpointKind.Unnamed);
}

internal enum EndpointKind
{
    Unnamed,
    Tcp,
    Unix,
    Vsock,
}

/// <summary>A connected transport, the child process serving it (if the handle started one), and what it is.</summary>
internal sealed record OpenedTransport(Transport Transport, Endpoint Endpoint, ChildServer? Child = null);
