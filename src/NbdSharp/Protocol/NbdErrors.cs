namespace NbdSharp.Protocol;

/// <summary>The one place that maps NBD error values (<c>NBD_E*</c>) to errno.</summary>
internal static class NbdErrors
{
    public const uint Success = 0;
    public const uint Eperm = 1;
    public const uint Eio = 5;
    public const uint Enomem = 12;
    public const uint Einval = 22;
    public const uint Enospc = 28;
    public const uint Eoverflow = 75;
    public const uint Enotsup = 95;
    public const uint Eshutdown = 108;

    /// <summary>proto.md: a client should treat an unknown error value as EINVAL.</summary>
    public static int ToErrno(uint nbdError) => nbdError switch
    {
        Success => 0,
        Eperm => Errno.EPERM,
        Eio => Errno.EIO,
        Enomem => Errno.ENOMEM,
        Einval => Errno.EINVAL,
        Enospc => Errno.ENOSPC,
        Eoverflow => Errno.EOVERFLOW,
        Enotsup => Errno.ENOTSUP,
        Eshutdown => Errno.ESHUTDOWN,
        _ => Errno.EINVAL,
    };
}
