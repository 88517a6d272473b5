using System;
using System.IO;
using NbdSharp.Transport;
using Org.BouncyCastle.Tls;

namespace NbdSharp.Tls;

/// <summary>
/// BouncyCastle's TLS connection as a <see cref="Stream"/> whose reads return 0, not -1, once the peer closed
/// (which <see cref="Stream.Read(Span{byte})"/> would otherwise take for a stream error).
/// </summary>
internal sealed class PskStream(TlsClientProtocol protocol) : DuplexStream
{
    public override int Read(byte[] buffer, int offset, int count)
    {
        if (count == 0)
            return 0;
        try
        {
            return Math.Max(0, protocol.ReadApplicationData(buffer, offset, count));
        }
        catch (TlsNoCloseNotifyException e)
        {
            // The server went away without ending TLS (it crashed or was killed): a reset connection, as GnuTLS's
            // "The TLS connection was non-properly terminated" is to libnbd.
            throw new TransportException(Errno.ECONNRESET, "recv: the server closed the connection without a TLS close_notify", e);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => protocol.WriteApplicationData(buffer, offset, count);

    public override void Flush() => protocol.Flush();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            protocol.Close();
        base.Dispose(disposing);
    }
}
