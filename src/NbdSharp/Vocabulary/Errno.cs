using System.Globalization;

namespace NbdSharp;

/// <summary>
/// The Linux errno values that <see cref="NbdException.Errno"/> carries, named as in C, with the text
/// <c>strerror(3)</c> gives for them.
/// </summary>
public static class Errno
{
    /// <summary>Operation not permitted.</summary>
    public const int EPERM = 1;
    /// <summary>No such file or directory.</summary>
    public const int ENOENT = 2;
    /// <summary>No such process.</summary>
    public const int ESRCH = 3;
    /// <summary>Interrupted system call.</summary>
    public const int EINTR = 4;
    /// <summary>Input/output error.</summary>
    public const int EIO = 5;
    /// <summary>Bad file descriptor.</summary>
    public const int EBADF = 9;
    /// <summary>Resource temporarily unavailable.</summary>
    public const int EAGAIN = 11;
    /// <summary>Cannot allocate memory.</summary>
    public const int ENOMEM = 12;
    /// <summary>Permission denied.</summary>
    public const int EACCES = 13;
    /// <summary>Bad address.</summary>
    public const int EFAULT = 14;
    /// <summary>Device or resource busy.</summary>
    public const int EBUSY = 16;
    /// <summary>Invalid argument.</summary>
    public const int EINVAL = 22;
    /// <summary>No space left on device.</summary>
    public const int ENOSPC = 28;
    /// <summary>Broken pipe.</summary>
    public const int EPIPE = 32;
    /// <summary>Numerical result out of range.</summary>
    public const int ERANGE = 34;
    /// <summary>Resource deadlock avoided.</summary>
    public const int EDEADLK = 35;
    /// <summary>File name too long.</summary>
    public const int ENAMETOOLONG = 36;
    /// <summary>Protocol error.</summary>
    public const int EPROTO = 71;
    /// <summary>Value too large for defined data type.</summary>
    public const int EOVERFLOW = 75;
    /// <summary>Address family not supported by protocol.</summary>
    public const int EAFNOSUPPORT = 97;
    /// <summary>Protocol not supported.</summary>
    public const int EPROTONOSUPPORT = 93;
    /// <summary>Operation not supported.</summary>
    public const int ENOTSUP = 95;
    /// <summary>Connection aborted.</summary>
    public const int ECONNABORTED = 103;
    /// <summary>Connection reset by peer.</summary>
    public const int ECONNRESET = 104;
    /// <summary>Transport endpoint is not connected.</summary>
    public const int ENOTCONN = 107;
    /// <summary>Cannot send after transport endpoint shutdown.</summary>
    public const int ESHUTDOWN = 108;
    /// <summary>Connection timed out.</summary>
    public const int ETIMEDOUT = 110;
    /// <summary>Connection refused.</summary>
    public const int ECONNREFUSED = 111;
    /// <summary>No route to host.</summary>
    public const int EHOSTUNREACH = 113;
    /// <summary>Operation canceled.</summary>
    public const int ECANCELED = 125;

    /// <summary>The text <c>strerror(3)</c> gives for <paramref name="errno"/>.</summary>
    /// <param name="errno">A Linux errno value.</param>
    /// <returns>A short English description, or "Unknown error N".</returns>
    public static string Describe(int errno) => errno switch
    {
        EPERM => "Operation not permitted",
        ENOENT => "No such file or directory",
        ESRCH => "No such process",
        EINTR => "Interrupted system call",
        EIO => "Input/output error",
        EBADF => "Bad file descriptor",
        EAGAIN => "Resource temporarily unavailable",
        ENOMEM => "Cannot allocate memory",
        EACCES => "Permission denied",
        EFAULT => "Bad address",
        EBUSY => "Device or resource busy",
        EINVAL => "Invalid argument",
        ENOSPC => "No space left on device",
        EPIPE => "Broken pipe",
        ERANGE => "Numerical result out of range",
        EDEADLK => "Resource deadlock avoided",
        ENAMETOOLONG => "File name too long",
        EPROTO => "Protocol error",
        EOVERFLOW => "Value too large for defined data type",
        EPROTONOSUPPORT => "Protocol not supported",
        ENOTSUP => "Operation not supported",
        EAFNOSUPPORT => "Address family not supported by protocol",
        ECONNABORTED => "Software caused connection abort",
        ECONNRESET => "Connection reset by peer",
        ENOTCONN => "Transport endpoint is not connected",
        ESHUTDOWN => "Cannot send after transport endpoint shutdown",
        ETIMEDOUT => "Connection timed out",
        ECONNREFUSED => "Connection refused",
        EHOSTUNREACH => "No route to host",
        ECANCELED => "Operation canceled",
        _ => "Unknown error " + errno.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>The C name of <paramref name="errno"/> (<c>EINVAL</c>), or its number when it has none here.</summary>
    /// <param name="errno">A Linux errno value.</param>
    /// <returns>The name, e.g. "ENOTCONN".</returns>
    public static string Name(int errno) => errno switch
    {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        EPIPE => "EPIPE",
        ERANGE => "ERANGE",
        EDEADLK => "EDEADLK",
        ENAMETOOLONG => "ENAMETOOLONG",
        EPROTO => "EPROTO",
        EOVERFLOW => "EOVERFLOW",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        ENOTSUP => "ENOTSUP",
        ECONNABORTED => "ECONNABORTED",
        ECONNRESET => "ECONNRESET",
        ENOTCONN => "ENOTCONN",
        ESHUTDOWN => "ESHUTDOWN",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EHOSTUNREACH => "EHOSTUNREACH",
        ECANCELED => "ECANCELED",
        _ => errno.ToString(CultureInfo.InvariantCulture),
    };
}
