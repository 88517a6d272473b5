using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;

namespace NbdSharp.Transport;

/// <summary>Opens the socket transports. Failures are <see cref="NbdException"/>s naming the call and errno.</summary>
internal static class Connectors
{
    /// <summary>Connects to a Unix domain socket.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public static async ValueTask<OpenedTransport> ConnectUnixAsync(string path, bool async, string call, CancellationToken cancellationToken)
    {
        if (!async && SocketTransport.UseLibC && path.Length > 0 && path[0] != '\0')
            return ConnectUnixFd(path, call, cancellationToken);
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
            Transport transport = await ConnectAsync(endPoint, ProtocolType.Unspecified, async, cancellationToken).ConfigureAwait(false);
            return new OpenedTransport(transport, new Endpoint(EndpointKind.Unix, Host: path));
        }
        catch (SocketException e)
        {
            // For a Unix socket, .NET reports a missing path (ENOENT) as AddressNotAvailable.
            int errno = e.SocketErrorCode == SocketError.AddressNotAvailable ? Errno.ENOENT : SocketErrors.ToErrno(e);
            throw new NbdConnectionException(errno, NbdException.Format(call, "connect: " + path, errno), e);
        }
    }

    /// <summary>
    /// A synchronous Unix connect on the libc data path: socket(2) and connect(2) themselves, so that no
    /// <see cref="Socket"/> is made (making the first one starts .NET's socket engine: an epoll thread and an event
    /// source, about 20 ms of a JIT-compiled tool's start). The socket is non-blocking: a connect that the listener's
    /// full backlog refuses for now (EAGAIN) is tried again every 10 ms, until it succeeds, fails or
    /// <paramref name="cancellationToken"/> (a connect timeout) fires.
    /// </summary>
    [SupportedOSPlatform("linux")]
    private static unsafe OpenedTransport ConnectUnixFd(string path, string call, CancellationToken cancellationToken)
    {
        byte* address = stackalloc byte[UnixAddressSize];
        uint addressLength = UnixAddress(path, address, call);
        cancellationToken.ThrowIfCancellationRequested();
        int fd = LibC.Socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NbdException(errno, NbdException.Format(call, "socket", errno));
        }
        var handle = new FileDescriptorHandle(fd);
        try
        {
            while (LibC.Connect(fd, address, addressLength) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EAGAIN)
                {
                    if (cancellationToken.WaitHandle.WaitOne(10))
                        cancellationToken.ThrowIfCancellationRequested();
                }
                else if (errno != Errno.EINTR)
                {
                    throw new NbdConnectionException(errno, NbdException.Format(call, "connect: " + path, errno));
                }
            }
            return new OpenedTransport(new SocketTransport(handle, unix: true), new Endpoint(EndpointKind.Unix, Host: path));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The size of a sockaddr_un: the family, then the name.</summary>
    private const int UnixAddressSize = 2 + LibC.UnixPathSize;

    /// <summary>
    /// Fills <paramref name="address"/> (<see cref="UnixAddressSize"/> bytes) with a sockaddr_un naming
    /// <paramref name="path"/> and returns its length; a name longer than sun_path holds is ENAMETOOLONG.
    /// </summary>
    private static unsafe uint UnixAddress(string path, byte* address, string call)
    {
        new Span<byte>(address, UnixAddressSize).Clear();
        *(ushort*)address = LibC.AF_UNIX;
        try
        {
            // At most sizeof(sun_path) - 1 bytes: the name ends with a NUL, as libnbd requires.
            int length = System.Text.Encoding.UTF8.GetBytes(path, new Span<byte>(address + 2, LibC.UnixPathSize - 1));
            return (uint)(2 + length + 1);
        }
        catch (ArgumentException)
        {
            throw new NbdException(Errno.ENAMETOOLONG, NbdException.Format(call, "socket name too long: " + path, Errno.ENAMETOOLONG));
        }
    }

    /// <summary>
    /// Resolves <paramref name="host"/> and connects to <paramref name="port"/> (a number or the service name
    /// "nbd"), trying each address in turn as libnbd does.
    /// </summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public static async ValueTask<OpenedTransport> ConnectTcpAsync(string host, string port, bool async, string call, CancellationToken cancellationToken)
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
                throw new NbdConnectionException(Errno.ENOENT, NbdException.Format(call, "getaddrinfo: " + host + ":" + port + ": " + e.Message, Errno.ENOENT), e);
            }
        }
        if (addresses.Length == 0)
            throw new NbdConnectionException(Errno.ENOENT, NbdException.Format(call, "getaddrinfo: " + host + ": no addresses", Errno.ENOENT));

        SocketException? last = null;
        foreach (IPAddress address in addresses)
        {
            try
            {
                Transport transport = await ConnectAsync(new IPEndPoint(address, portNumber), ProtocolType.Tcp, async, cancellationToken).ConfigureAwait(false);
                return new OpenedTransport(transport, new Endpoint(EndpointKind.Tcp, host, port));
            }
            catch (SocketException e)
            {
                last = e;
            }
        }
        int errno = SocketErrors.ToErrno(last!);
        throw new NbdConnectionException(errno, NbdException.Format(call, "connect: " + host + ":" + port, errno), last);
    }

    /// <summary>Connects to a raw address (libnbd's nbd_aio_connect with a sockaddr): a Unix or IP end point.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    public static async ValueTask<OpenedTransport> ConnectEndPointAsync(EndPoint endPoint, bool async, string call, CancellationToken cancellationToken)
    {
        switch (endPoint)
        {
            case UnixDomainSocketEndPoint unix:
                return await ConnectUnixAsync(unix.ToString(), async, call, cancellationToken).ConfigureAwait(false);
            case IPEndPoint ip:
                try
                {
                    Transport transport = await ConnectAsync(ip, ProtocolType.Tcp, async, cancellationToken).ConfigureAwait(false);
                    return new OpenedTransport(transport, new Endpoint(EndpointKind.Tcp, ip.Address.ToString(), ip.Port.ToString(CultureInfo.InvariantCulture)));
                }
                catch (SocketException e)
                {
                    int errno = SocketErrors.ToErrno(e);
                    throw new NbdConnectionException(errno, NbdException.Format(call, "connect: " + ip, errno), e);
                }
            default:
                throw new NbdException(Errno.EAFNOSUPPORT, NbdException.Format(call, "address family " + endPoint.AddressFamily + " not supported", Errno.EAFNOSUPPORT));
        }
    }

    /// <summary>Adopts a connected socket; the transport owns it from now on.</summary>
    public static OpenedTransport Adopt(Socket socket, string call)
    {
        if (!socket.Connected && socket.SocketType != SocketType.Unknown)
            throw new NbdException(Errno.ENOTCONN, NbdException.Format(call, "the socket is not connected", Errno.ENOTCONN));
        return new OpenedTransport(new SocketTransport(socket), Endpoint.Unnamed);
    }

    /// <summary>Connects to AF_VSOCK <paramref name="cid"/>:<paramref name="port"/> (Linux).</summary>
    public static unsafe OpenedTransport ConnectVsock(uint cid, uint port, string call)
    {
        if (!OperatingSystem.IsLinux())
            throw LinuxOnly(call, "AF_VSOCK");
        int fd = LibC.Socket(LibC.AF_VSOCK, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NbdException(errno, NbdException.Format(call, "socket", errno));
        }
        var address = new LibC.SockAddrVm { Family = LibC.AF_VSOCK, Port = port, Cid = cid };
        if (LibC.Connect(fd, &address, (uint)sizeof(LibC.SockAddrVm)) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            _ = LibC.Close(fd);
            throw new NbdConnectionException(errno, NbdException.Format(call, "connect: vsock " + cid + ":" + port, errno));
        }
        return new OpenedTransport(new SocketTransport(new FileDescriptorHandle(fd), unix: false), new Endpoint(EndpointKind.Vsock, Cid: cid, VsockPort: port));
    }

    /// <summary>ENOTSUP for a transport that only Linux has here, naming the platform the program runs on.</summary>
    private static NbdException LinuxOnly(string call, string what) =>
        new(Errno.ENOTSUP, NbdException.Format(call, what + " is only supported on Linux, not on " + RuntimeInformation.OSDescription, Errno.ENOTSUP));

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to become readable (or fail).</summary>
    public static unsafe bool FdReadable(int fd, int timeoutMs)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            var pfd = new LibC.PollFd { Fd = fd, Events = LibC.POLLIN };
            return LibC.Poll(&pfd, 1, timeoutMs, out _) > 0;
        }
        throw new NbdException(Errno.ENOTSUP, NbdException.Format("nbd_poll2",
            "watching a file descriptor is only supported on Linux and macOS, not on " + RuntimeInformation.OSDescription, Errno.ENOTSUP));
    }

    /// <summary>Whether this platform can create AF_VSOCK sockets.</summary>
    public static bool VsockAvailable()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        int fd = LibC.Socket(LibC.AF_VSOCK, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
        if (fd < 0)
            return false;
        _ = LibC.Close(fd);
        return true;
    }

    /// <summary>
    /// Runs <paramref name="argv"/> as a child speaking NBD on its stdin and stdout, connected to us through a
    /// socketpair (libnbd's nbd_connect_command, e.g. <c>nbdkit -s memory 1G</c>); through two pipes where libc is not
    /// called (<see cref="PortableSubprocess"/>).
    /// </summary>
    public static unsafe OpenedTransport ConnectCommand(IReadOnlyList<string> argv, string call)
    {
        CheckArgv(argv, call);
        if (!SocketTransport.UseLibC)
            return PortableSubprocess.Start(argv, call);
        int* fds = stackalloc int[2];
        if (LibC.SocketPair(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0, fds) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NbdException(errno, NbdException.Format(call, "socketpair", errno));
        }
        Subprocess child;
        try
        {
            child = Subprocess.Spawn(argv, [(fds[1], 0), (fds[1], 1)], [], terminateOnClose: false, call);
        }
        catch
        {
            _ = LibC.Close(fds[0]);
            _ = LibC.Close(fds[1]);
            throw;
        }
        _ = LibC.Close(fds[1]);
        return new OpenedTransport(new SocketTransport(new FileDescriptorHandle(fds[0]), unix: true), Endpoint.Unnamed, child);
    }

    /// <summary>
    /// systemd socket activation (libnbd's nbd_connect_systemd_socket_activation): binds a Unix socket in a private
    /// folder under /tmp, runs <paramref name="argv"/> with the listening socket as fd 3 and LISTEN_PID, LISTEN_FDS
    /// and LISTEN_FDNAMES set, and connects to it. LISTEN_PID must be the child's own PID, which only the child
    /// knows, so a shell sets it and replaces itself with the program. Linux and macOS: the child is started with
    /// posix_spawn, and everything else here is .NET's own, the same on both.
    /// </summary>
    public static OpenedTransport ConnectSocketActivation(IReadOnlyList<string> argv, string name, string call)
    {
        CheckArgv(argv, call);
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
            return SpawnActivated(argv, name, call);
        throw new NbdException(Errno.ENOTSUP, NbdException.Format(call,
            "socket activation is only supported on Linux and macOS, not on " + RuntimeInformation.OSDescription, Errno.ENOTSUP));
    }

    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    private static OpenedTransport SpawnActivated(IReadOnlyList<string> argv, string name, string call)
    {
        string dir = Path.Combine("/tmp", "nbdsharp-" + Path.GetRandomFileName());
        Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string path = Path.Combine(dir, "sock");
        if (SocketTransport.UseLibC)
            return SpawnActivatedFd(argv, name, dir, path, call);
        Subprocess? child = null;
        try
        {
            using (Socket listener = ListenUnix(dir, path))
                child = SpawnWithListener(argv, name, (int)listener.SafeHandle.DangerousGetHandle(), call);
            // The socket keeps its name while the server runs (libnbd alike): GetUri names it, for more connections.
            child.SocketDirectory = dir;
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Connect(new UnixDomainSocketEndPoint(path));
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            return new OpenedTransport(new SocketTransport(socket), new Endpoint(EndpointKind.Unix, Host: path), child);
        }
        catch (SocketException e)
        {
            child?.Reap(TimeSpan.Zero, terminate: true);
            int errno = SocketErrors.ToErrno(e);
            throw new NbdConnectionException(errno, NbdException.Format(call, (child == null ? "bind: " : "connect: ") + path, errno), e);
        }
        catch (IOException e)
        {
            throw new NbdException(Errno.EIO, NbdException.Format(call, "naming the socket " + path + ": " + e.Message, Errno.EIO), e);
        }
        finally
        {
            if (child == null)
                RemoveFolder(dir);
        }
    }

    /// <summary>
    /// Socket activation on the libc data path: the listening socket and our connection to it are opened with libc,
    /// so that no <see cref="Socket"/> is made (see <see cref="ConnectUnixFd"/>). The folder is removed if the
    /// server never starts.
    /// </summary>
    [SupportedOSPlatform("linux")]
    private static unsafe OpenedTransport SpawnActivatedFd(IReadOnlyList<string> argv, string name, string dir, string path, string call)
    {
        Subprocess? child = null;
        try
        {
            byte* address = stackalloc byte[UnixAddressSize];
            uint addressLength = UnixAddress(path, address, call);
            int listener = LibC.Socket(LibC.AF_UNIX, LibC.SOCK_STREAM | LibC.SOCK_CLOEXEC, 0);
            if (listener < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new NbdException(errno, NbdException.Format(call, "socket", errno));
            }
            try
            {
                if (LibC.Bind(listener, address, addressLength) != 0 || LibC.Listen(listener, 128) != 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    throw new NbdConnectionException(errno, NbdException.Format(call, "bind: " + path, errno));
                }
                child = SpawnWithListener(argv, name, listener, call);
            }
            finally
            {
                _ = LibC.Close(listener);
            }
            // The socket keeps its name while the server runs (libnbd alike): GetUri names it, for more connections.
            child.SocketDirectory = dir;
            try
            {
                return ConnectUnixFd(path, call, CancellationToken.None) with { Child = child };
            }
            catch
            {
                child.Reap(TimeSpan.Zero, terminate: true);
                throw;
            }
        }
        finally
        {
            if (child == null)
                RemoveFolder(dir);
        }
    }

    /// <summary>
    /// Starts <paramref name="argv"/> with <paramref name="listener"/> as its fd 3 and LISTEN_PID, LISTEN_FDS and
    /// LISTEN_FDNAMES set: LISTEN_PID must be the child's own PID, so a shell sets it and replaces itself with the program.
    /// </summary>
    [SupportedOSPlatform("linux")]
    [SupportedOSPlatform("macos")]
    private static Subprocess SpawnWithListener(IReadOnlyList<string> argv, string name, int listener, string call)
    {
        var shellArgv = new List<string> { "/bin/sh", "-c", "LISTEN_PID=$$ exec \"$@\"", "nbdsharp-socket-activation" };
        shellArgv.AddRange(argv);
        return Subprocess.Spawn(shellArgv, [(listener, 3)],
            [new("LISTEN_PID", ""), new("LISTEN_FDS", "1"), new("LISTEN_FDNAMES", name.Length == 0 ? "unknown" : name)],
            terminateOnClose: true, call);
    }

    /// <summary>Removes the private socket folder of a server that never started.</summary>
    private static void RemoveFolder(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// A listening Unix socket (close-on-exec, as every socket .NET opens) with the name <paramref name="path"/>.
    /// .NET removes a socket's file when the socket it bound is closed, and the name must outlive the parent's copy of
    /// the socket: it is bound under a first name and renamed, so that what .NET removes is a name no longer there.
    /// </summary>
    private static Socket ListenUnix(string dir, string path)
    {
        string bound = Path.Combine(dir, "sock.bind");
        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(bound));
            listener.Listen(128);
            File.Move(bound, path);
            return listener;
        }
        catch
        {
            listener.Dispose();
            throw;
        }
    }

    private static void CheckArgv(IReadOnlyList<string> argv, string call)
    {
        ArgumentNullException.ThrowIfNull(argv);
        if (argv.Count == 0 || string.IsNullOrEmpty(argv[0]))
            throw new NbdException(Errno.EINVAL, NbdException.Format(call, "argv: the command must not be empty", Errno.EINVAL));
    }

    /// <summary>Creates a stream socket and connects it; the socket is closed if connecting fails.</summary>
    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<Transport> ConnectAsync(EndPoint endPoint, ProtocolType protocol, bool async, CancellationToken cancellationToken)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, protocol);
        try
        {
            if (async)
                await socket.ConnectAsync(endPoint, cancellationToken).ConfigureAwait(false);
            else if (cancellationToken.CanBeCanceled)
                ConnectUntilCancelled(socket, endPoint, cancellationToken);
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

    /// <summary>
    /// A synchronous connect that a token (a connect timeout, <c>Cancel</c>) can end, without the thread pool: the
    /// socket connects without blocking and the caller waits in poll(2), in slices of 50 ms, for it to finish or for the
    /// token to fire.
    /// </summary>
    private static void ConnectUntilCancelled(Socket socket, EndPoint endPoint, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        socket.Blocking = false;
        try
        {
            while (true)
            {
                try
                {
                    // Again once writable: the second connect(2) reports how the first ended (EISCONN: connected).
                    socket.Connect(endPoint);
                    return;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.IsConnected)
                {
                    return;
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress or SocketError.AlreadyInProgress)
                {
                    while (!socket.Poll(TimeSpan.FromMilliseconds(50), SelectMode.SelectWrite))
                        cancellationToken.ThrowIfCancellationRequested();
                }
            }
        }
        finally
        {
            socket.Blocking = true;
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
