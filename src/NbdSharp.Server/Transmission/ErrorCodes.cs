using System;
using System.IO;
using NbdSharp.Protocol;

namespace NbdSharp.Server.Transmission;

/// <summary>How a failure inside an export becomes one of the NBD error values a client understands.</summary>
internal static class ErrorCodes
{
    private const int EROFS = 30;
    private const int EFBIG = 27;
    private const int EDQUOT = 122;

    public static uint FromErrno(int errno) => errno switch
    {
        Errno.EPERM or Errno.EACCES or EROFS => NbdErrors.Eperm,
        Errno.EIO => NbdErrors.Eio,
        Errno.ENOMEM => NbdErrors.Enomem,
        Errno.EINVAL => NbdErrors.Einval,
        Errno.ENOSPC or EFBIG or EDQUOT => NbdErrors.Enospc,
        Errno.EOVERFLOW => NbdErrors.Eoverflow,
        Errno.ENOTSUP => NbdErrors.Enotsup,
        Errno.ESHUTDOWN => NbdErrors.Eshutdown,
        _ => NbdErrors.Eio,
    };

    public static uint FromException(Exception e) => e switch
    {
        NbdException n => FromErrno(n.Errno),
        OperationCanceledException => NbdErrors.Eshutdown,
        UnauthorizedAccessException => NbdErrors.Eperm,
        OutOfMemoryException or InsufficientMemoryException => NbdErrors.Enomem,
        NotSupportedException => NbdErrors.Enotsup,
        ArgumentException => NbdErrors.Einval,
        IOException io when io.HResult is > 0 and < 4096 => FromErrno(io.HResult),
        _ => NbdErrors.Eio,
    };
}
