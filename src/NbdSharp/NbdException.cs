using System;
using System.IO;

namespace NbdSharp;

/// <summary>
/// Every failure of an NbdSharp call: an <see cref="IOException"/> carrying the Linux errno libnbd would
/// report (<see cref="Errno"/>) and a message that names the call, as libnbd's <c>nbd_get_error</c> does,
/// e.g. <c>nbd_aio_flush: invalid state: START: the handle must be connected with the server:
/// Transport endpoint is not connected</c>.
/// </summary>
public class NbdException : IOException
{
    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/>.</summary>
    public NbdException()
        : this(NbdSharp.Errno.EIO, "NBD error")
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/> and a message.</summary>
    /// <param name="message">The whole message.</param>
    public NbdException(string message)
        : this(NbdSharp.Errno.EIO, message)
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/>, a message and a cause.</summary>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause.</param>
    public NbdException(string message, Exception? innerException)
        : this(NbdSharp.Errno.EIO, message, innerException)
    {
    }

    /// <summary>Creates an exception with an errno and a message.</summary>
    /// <param name="errno">The Linux errno value.</param>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause, if any.</param>
    public NbdException(int errno, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Errno = errno;
        HResult = errno;
        NbdHandle.RecordLastError(errno, message);
    }

    /// <summary>The Linux errno value of the failure (for example 22 for EINVAL, 107 for ENOTCONN).</summary>
    public int Errno { get; }

    /// <summary>Formats a message the way libnbd does: <c>call: detail: strerror(errno)</c>.</summary>
    internal static string Format(string call, string detail, int errno) =>
        errno == 0 ? call + ": " + detail : call + ": " + detail + ": " + NbdSharp.Errno.Describe(errno);
}

/// <summary>
/// The server answered a command or option with an error (an <c>NBD_E*</c> value or an
/// <c>NBD_REP_ERR_*</c> reply). The connection is still usable.
/// </summary>
public sealed class NbdServerException : NbdException
{
    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/>.</summary>
    public NbdServerException()
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/> and a message.</summary>
    /// <param name="message">The whole message.</param>
    public NbdServerException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EIO"/>, a message and a cause.</summary>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause.</param>
    public NbdServerException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates an exception with an errno and a message.</summary>
    /// <param name="errno">The Linux errno value the server's error maps to.</param>
    /// <param name="message">The whole message.</param>
    public NbdServerException(int errno, string message)
        : base(errno, message)
    {
    }
}

/// <summary>
/// The connection failed: the server broke the protocol, closed the connection, the transport failed, or the
/// connection was given up (a request timeout: ETIMEDOUT; <see cref="NbdHandle.Cancel"/>: ECANCELED).
/// The handle is dead; only <see cref="NbdHandle.Dispose"/> is useful afterwards.
/// </summary>
public sealed class NbdProtocolException : NbdException
{
    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EPROTO"/>.</summary>
    public NbdProtocolException()
        : base(NbdSharp.Errno.EPROTO, "NBD protocol error")
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EPROTO"/> and a message.</summary>
    /// <param name="message">The whole message.</param>
    public NbdProtocolException(string message)
        : base(NbdSharp.Errno.EPROTO, message)
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.EPROTO"/>, a message and a cause.</summary>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause.</param>
    public NbdProtocolException(string message, Exception? innerException)
        : base(NbdSharp.Errno.EPROTO, message, innerException)
    {
    }

    /// <summary>Creates an exception with an errno and a message.</summary>
    /// <param name="errno">The Linux errno value.</param>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause, if any.</param>
    public NbdProtocolException(int errno, string message, Exception? innerException = null)
        : base(errno, message, innerException)
    {
    }
}
