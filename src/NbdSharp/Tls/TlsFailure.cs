using System;
using System.Globalization;

namespace NbdSharp.Tls;

/// <summary>A TLS setup or handshake failure, with the errno the handle reports.</summary>
internal sealed class TlsFailure : Exception
{
    public TlsFailure(int errno, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Errno = errno;
    }

    public TlsFailure()
        : this(NbdSharp.Errno.EIO, "TLS failure")
    {
    }

    public TlsFailure(string message)
        : this(NbdSharp.Errno.EIO, message)
    {
    }

    public TlsFailure(string message, Exception innerException)
        : this(NbdSharp.Errno.EIO, message, innerException)
    {
    }

    public int Errno { get; }

    public override string ToString() => Message + " (" + Errno.ToString(CultureInfo.InvariantCulture) + ")";
}
