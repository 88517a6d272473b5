namespace NbdSharp.Protocol;

/// <summary>
/// A metadata context the server selected: its id in block status replies and its name. A class, so that lists of
/// them are .NET's shared precompiled code rather than an instantiation compiled at run time.
/// </summary>
/// <param name="Id">The server's id for it.</param>
/// <param name="Name">Its name, e.g. "base:allocation".</param>
internal sealed record NegotiatedContext(uint Id, string Name);
