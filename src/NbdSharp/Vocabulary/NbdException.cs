using System;
using System.IO;

namespace NbdSharp;

/// <summary>
/// Every failure of an NbdSharp call: an <see cref="IOException"/> carrying the Linux errno libnbd would
/// report (<see cref="Errno"/>) and a message that names the call, as libnbd's <c>nbd_get_error</c> does,
/// e.g. <c>nbd_aio_flush: invalid state: START: the handle must be connected with the server:
/// Transport endpoint is not connected</c>.
/// </summary>
/// <remarks>
/// A failure is one of four kinds, and its type says which:
/// <list type="bullet">
/// <item>a caller error (a wrong state, a bad argument, a flag or command the server does not support): this
/// class itself; nothing was sent and the handle is as it was;</item>
/// <item>a server refusal (an option refused) or a command failure (the server's error for one command):
/// <see cref="NbdServerException"/>; the handle lives;</item>
/// <item>a broken connection (the server went away, a transport error, a request timeout, <c>Cancel</c>, a failed
/// handshake): <see cref="NbdConnectionException"/>, or <see cref="NbdProtocolException"/> when the server broke
/// the protocol; the handle is dead and every command in flight failed once with the same errno.</item>
/// </list>
/// A failure a user callback asked for (its return value and errno) is an <see cref="NbdException"/> of that errno.
/// Creating an exception has no side effect: the handle records the last error (<c>NbdHandle.GetError</c>) on the
/// calling thread when a failure leaves one of its calls.
/// </remarks>
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
    }

    /// <summary>The Linux errno value of the failure (for example 22 for EINVAL, 107 for ENOTCONN).</summary>
    public int Errno { get; }

    /// <summary>Formats a message the way libnbd does: <c>call: detail: strerror(errno)</c>.</summary>
    internal static string Format(string call, string detail, int errno)
    {
        if (errno == 0)
            return call + ": " + detail;
        // A transport's detail may already end with the system's words for errno ("recv: Connection reset by peer").
        string words = NbdSharp.Errno.Describe(errno);
        return detail.EndsWith(words, StringComparison.Ordinal) ? call + ": " + detail : call + ": " + detail + ": " + words;
    }
}

/// <summary>
/// The server refused an option (an <c>NBD_REP_ERR_*</c> reply) or failed a command (an <c>NBD_E*</c> error): a server
/// refusal or a command failure, with the errno libnbd gives it. The handle lives: negotiation goes on after a refusal
/// in opt mode, other commands are unaffected by a failed one.
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
/// The connection broke: it could not be made, the handshake failed, the server went away, the transport failed, or
/// the connection was given up (a request timeout: ETIMEDOUT; <c>NbdHandle.Cancel</c>: ECANCELED; the handle closed:
/// ENOTCONN). The handle is dead; only disposing of it is useful afterwards, and every command in flight failed with
/// the same errno. <see cref="NbdProtocolException"/> is the case where the server broke the protocol.
/// </summary>
public class NbdConnectionException : NbdException
{
    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.ENOTCONN"/>.</summary>
    public NbdConnectionException()
        : base(NbdSharp.Errno.ENOTCONN, "NBD connection failed")
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.ENOTCONN"/> and a message.</summary>
    /// <param name="message">The whole message.</param>
    public NbdConnectionException(string message)
        : base(NbdSharp.Errno.ENOTCONN, message)
    {
    }

    /// <summary>Creates an exception with errno <see cref="NbdSharp.Errno.ENOTCONN"/>, a message and a cause.</summary>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause.</param>
    public NbdConnectionException(string message, Exception? innerException)
        : base(NbdSharp.Errno.ENOTCONN, message, innerException)
    {
    }

    /// <summary>Creates an exception with an errno and a message.</summary>
    /// <param name="errno">The Linux errno value.</param>
    /// <param name="message">The whole message.</param>
    /// <param name="innerException">The cause, if any.</param>
    public NbdConnectionException(int errno, string message, Exception? innerException = null)
        : base(errno, message, innerException)
    {
    }
}

/// <summary>
/// The server broke the protocol (EPROTO, or EINVAL for what libnbd reports so): a reply or handshake message that
/// cannot be right. The connection was dropped, as nothing the server sends can be trusted any more.
/// </summary>
public sealed class NbdProtocolException : NbdConnectionException
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
