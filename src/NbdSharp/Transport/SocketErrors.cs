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

    /// <summary>
    /// The errno of a socket exception. .NET folds errno into <see cref="SocketError"/> (its NativeErrorCode is
    /// derived back from that, not the original), so map the socket error.
    /// </summary>
    public static int ToErrno(SocketException exception) => ToErrno(exception.SocketErrorCode);
}
