using System.Net.Sockets;

namespace NbdSharp.Transport;

/// <summary>Maps .NET socket errors to the Linux errno values libnbd would report.</summary>
internal static class SocketErrors
{
    public static int ToErrno(SocketError error) => error switch
    {
        SocketError.ConnectionRefused => Errno.ECONNREFUSED,
        SocketError.ConnectionReset => Errno.ECONNRESET,
        SocketError.ConnectionAborted => Errno.ECONNABORTED,
        SocketError.NotConnected => Errno.ENOTCONN,
        SocketError.Shutdown => Errno.EPIPE,
        SocketError.TimedOut => Errno.ETIMEDOUT,
        SocketError.HostUnreachable => Errno.EHOSTUNREACH,
        SocketError.NetworkUnreachable => Errno.EHOSTUNREACH,
        SocketError.HostNotFound => Errno.ENOENT,
        SocketError.TryAgain => Errno.EAGAIN,
        SocketError.WouldBlock => Errno.EAGAIN,
        SocketError.AccessDenied => Errno.EACCES,
        SocketError.AddressFamilyNotSupported => Errno.EAFNOSUPPORT,
        SocketError.ProtocolNotSupported => Errno.EPROTONOSUPPORT,
        SocketError.OperationAborted => Errno.ECANCELED,
        SocketError.Interrupted => Errno.EINTR,
        SocketError.InvalidArgument => Errno.EINVAL,
        SocketError.NoBufferSpaceAvailable => Errno.ENOMEM,
        _ => Errno.EIO,
    };

    /// <summary>The errno of a socket exception: the native code on Linux, otherwise a mapping of the socket error.</summary>
    public static int ToErrno(SocketException exception) =>
        System.OperatingSystem.IsLinux() && exception.NativeErrorCode > 0 && exception.NativeErrorCode < 4096
            ? exception.NativeErrorCode
            : ToErrno(exception.SocketErrorCode);
}
