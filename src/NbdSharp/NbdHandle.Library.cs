using System;

namespace NbdSharp;

/// <summary>Calls that do not need a handle: library identity, capabilities and the thread's last error.</summary>
public sealed partial class NbdHandle
{
    [ThreadStatic]
    private static string? t_lastError;

    [ThreadStatic]
    private static int t_lastErrno;

    /// <summary>The name of this library (<c>nbd_get_package_name</c>): "NbdSharp".</summary>
    /// <returns>The package name.</returns>
    public static string GetPackageName() => "NbdSharp";

    /// <summary>The version of this library (<c>nbd_get_version</c>), e.g. "0.1.0".</summary>
    /// <returns>The version.</returns>
    public static string GetVersion()
    {
        Version? version = typeof(NbdHandle).Assembly.GetName().Version;
        return version == null ? "0.0.0" : version.ToString(3);
    }

    /// <summary>Extra packaging information about this build (<c>nbd_get_version_extra</c>): "" for NbdSharp.</summary>
    /// <returns>"".</returns>
    public static string GetVersionExtra() => "";

    /// <summary>Whether this platform can use AF_VSOCK (<c>nbd_supports_vsock</c>): true on Linux when the kernel has vsock.</summary>
    /// <returns>The capability.</returns>
    public static bool SupportsVsock() => Transport.Connectors.VsockAvailable();

    /// <summary>
    /// Whether <paramref name="uri"/> looks like an NBD URI rather than, say, a file name (<c>nbd_is_uri</c>): it starts
    /// with one of the NBD schemes. A heuristic: it does not mean <see cref="ConnectUri(string)"/> would accept it.
    /// </summary>
    /// <param name="uri">The string to test.</param>
    /// <returns>Whether it starts with nbd://, nbds://, nbd+unix://, ...</returns>
    public static bool IsUri(string uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        foreach (string prefix in UriPrefixes)
        {
            if (uri.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
                return true;
        }
        return false;
    }

    private static readonly string[] UriPrefixes =
        ["nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://", "nbd+ssh://", "nbds+ssh://"];

    /// <summary>Whether URIs are supported (<c>nbd_supports_uri</c>): always true.</summary>
    /// <returns>True.</returns>
    public static bool SupportsUri() => true;

    /// <summary>
    /// Whether TLS is supported (<c>nbd_supports_tls</c>): always, X.509 through the platform's TLS
    /// (<see cref="System.Net.Security.SslStream"/>) and TLS-PSK through BouncyCastle.
    /// </summary>
    /// <returns>True.</returns>
    public static bool SupportsTls() => true;

    /// <summary>
    /// The message of the most recent error on this thread (<c>nbd_get_error</c>), or null: the last failure that left
    /// a synchronous or aio call of a handle on this thread. A Task-based call reports its failure through its task
    /// only.
    /// </summary>
    /// <returns>The message, or null.</returns>
    public static string? GetError() => t_lastError;

    /// <summary>The errno of the most recent error on this thread (<c>nbd_get_errno</c>); 0 if none.</summary>
    /// <returns>The errno.</returns>
    public static int GetErrno() => t_lastErrno;

    /// <summary>
    /// Records <paramref name="failure"/> as the calling thread's last error, where it leaves a call of the handle.
    /// Returns false, so that it serves as an exception filter that never catches:
    /// <c>catch (NbdException e) when (Recorded(e)) { throw; }</c>.
    /// </summary>
    private static bool Recorded(NbdException failure)
    {
        t_lastErrno = failure.Errno;
        t_lastError = failure.Message;
        return false;
    }
}
