using System;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>Opens the socket transports. Failures are <see cref="NbdException"/>s naming the call and errno.</summary>
internal static class Connectors
{
    /// <summary>Connects to a Unix domain socket.</summary>
    public static async ValueTask<Transport> ConnectUnixAsync(string path, bool async, string call, CancellationToken cancellationToken)
    {
        UnixDomainSocketEndPoint endPoint;
        try
        {
            endPoint = new UnixDomainSocketEndPoint(path);
        }
        catch (ArgumentException)
        {
            throw new NbdException(Errno.ENAMETOOLONG, NbdException.Format(call, "socket name too long: " + path, Errno.ENAMETOOLONG));
        }
        try
        {
            return await ConnectAsync(endPoint, ProtocolType.Unspecified, async, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            // For a Unix socket, .NET reports a missing path (ENOENT) as AddressNotAvailable.
            int errno = e.SocketErrorCode == SocketError.AddressNotAvailable ? Errno.ENOENT : SocketErrors.ToErrno(e);
            throw new NbdException(errno, NbdException.Format(call, "connect: " + path, errno), e);
        }
    }

    /// <summary>
    /// Resolves <paramref name="host"/> and connects to <paramref name="port"/> (a number or the service name
    /// "nbd"), trying each address in turn as libnbd does.
    /// </summary>
    public static async ValueTask<Transport> ConnectTcpAsync(string host, string port, bool async, string call, CancellationToken cancellationToken)
    {
        int portNumber = ParsePort(port, call);
        IPAddress[] addresses;
        if (IPAddress.TryParse(host, out IPAddress? literal))
        {
            addresses = [literal];
        }
        else
        {
            try
            {
                addresses = async
                    ? await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false)
                    : Dns.GetHostAddresses(host);
            }
            catch (SocketException e)
            {
                throw new NbdException(Errno.ENOENT, NbdException.Format(call, "getaddrinfo: " + host + ":" + port + ": " + e.Message, Errno.ENOENT), e);
            }
        }
        if (addresses.Length == 0)
            throw new NbdException(Errno.ENOENT, NbdException.Format(call, "getaddrinfo: " + host + ": no addresses", Errno.ENOENT));

        SocketException? last = null;
        foreach (IPAddress address in addresses)
        {
            try
            {
                return await ConnectAsync(new IPEndPoint(address, portNumber), ProtocolType.Tcp, async, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                last = e;
            }
        }
        int errno = SocketErrors.ToErrno(last!);
        throw new NbdException(errno, NbdException.Format(call, "connect: " + host + ":" + port, errno), last);
    }

    /// <summary>Creates a stream socket and connects it; the socket is closed if connecting fails.</summary>
    private static async ValueTask<Transport> ConnectAsync(EndPoint endPoint, ProtocolType protocol, bool async, CancellationToken cancellationToken)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, protocol);
        try
        {
            if (async)
                await socket.ConnectAsync(endPoint, cancellationToken).ConfigureAwait(false);
            else
                socket.Connect(endPoint);
            return new SocketTransport(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static int ParsePort(string port, string call)
    {
        if (string.Equals(port, "nbd", StringComparison.OrdinalIgnoreCase))
            return Protocol.NbdProtocol.DefaultPort;
        if (int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int value) && value <= 65535)
            return value;
        throw new NbdException(Errno.EINVAL, NbdException.Format(call, "invalid port: " + port, Errno.EINVAL));
    }
}
