using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A transport over a connected <see cref="Socket"/> (TCP, Unix, vsock or a socketpair). On Linux the
/// transmission path calls libc directly: blocking receives, and sends that can be tried without blocking,
/// which is how the engine keeps reading replies while a large write waits for room in the socket. There a
/// transport can also own a bare file descriptor that libc opened (a synchronous Unix connect, a socketpair,
/// vsock): no <see cref="Socket"/> exists for it until an asynchronous call needs one, so a program that only
/// connects synchronously never starts .NET's socket engine (its epoll thread, its event source) at all.
/// </summary>
internal sealed class SocketTransport : Transport
{
    /// <summary>The AppContext switch that chooses the portable data path on Linux too.</summary>
    internal const string PortableSwitch = "NbdSharp.PortableSockets";

    /// <summary>The environment variable that does the same (value 1), for test runs and tools.</summary>
    internal const string PortableVariable = "NBDSHARP_PORTABLE_SOCKETS";

    /// <summary>
    /// Whether the transmission path calls libc (Linux), or only <see cref="System.Net.Sockets.Socket"/>, as on macOS
    /// and Windows. The portable path can be chosen on Linux as well (<see cref="PortableSwitch"/> or
    /// <see cref="PortableVariable"/>), so that it is tested where the test servers run.
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatformGuard("linux")]
    internal static readonly bool UseLibC = OperatingSystem.IsLinux() && !PortableRequested();
    private Socket? _socket;
    private readonly SafeHandle _handle;
    private readonly int _fd;

    /// <summary>
    /// Who uses the descriptor: bit <see cref="Closed"/> once the transport is disposed, and <see cref="Use"/> for
    /// each call in progress on it plus one for the transport itself. The last to leave closes it, so a descriptor
    /// number is never closed (and perhaps reused) under a call. This is SafeHandle's reference count, kept here:
    /// DangerousAddRef, DangerousGetHandle and DangerousRelease around every system call were three calls into
    /// CoreLib that ReadyToRun code makes through stubs.
    /// </summary>
    private int _uses = Use;
    private const int Closed = 1;
    private const int Use = 2;
    private int _aborted;
    private int _sendBufferSize;

    /// <summary>
    /// Whether the managed calls wait in poll themselves, on a socket left non-blocking (the portable path, but for
    /// Windows). Once a .NET socket on Unix has been non-blocking (a connect with a timeout, any asynchronous call),
    /// its synchronous calls are emulated by .NET's socket engine, which hands readiness to the thread pool: a
    /// synchronous call would then wait for a pool thread, for ever when the pool is saturated. Non-blocking calls
    /// and <see cref="Socket.Poll(TimeSpan, SelectMode)"/> are plain system calls.
    /// </summary>
    private static readonly bool WaitsInPoll = !UseLibC && !OperatingSystem.IsWindows();

    public SocketTransport(Socket socket)
    {
        _socket = socket;
        _handle = socket.SafeHandle;
        _fd = (int)_handle.DangerousGetHandle();
        if (WaitsInPoll)
            socket.Blocking = false;
        if (socket.ProtocolType == ProtocolType.Tcp)
            socket.NoDelay = true;
        else if (socket.AddressFamily == AddressFamily.Unix)
            WidenSendBuffer(socket);
    }

    /// <summary>
    /// Owns <paramref name="fd"/>, a connected stream socket opened with libc (Linux, <see cref="UseLibC"/> only). A
    /// Unix socket's send buffer is widened as <see cref="SocketTransport(Socket)"/> does.
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public SocketTransport(FileDescriptorHandle fd, bool unix)
    {
        if (!UseLibC)
            throw new InvalidOperationException("a bare file descriptor needs the libc data path");
        _handle = fd;
        _fd = (int)fd.DangerousGetHandle();
        if (unix)
            WidenSendBuffer(_fd);
    }

    /// <summary>
    /// What a Unix socket's send buffer is raised to. Linux's default (net.core.wmem_default, 208 KiB) is smaller than
    /// one large write request, which then leaves in pieces, each waiting for the server to drain the one before: with
    /// 1 MiB (the kernel caps it at net.core.wmem_max) nbdcopy's 256 KiB writes go out whole and copies into NBD spend
    /// 8-10 % less client CPU (docs/benchmarks.md). TCP is left alone: a fixed SO_SNDBUF would turn its autotuning off.
    /// </summary>
    internal const int UnixSendBuffer = 1 << 20;

    internal static void WidenSendBuffer(Socket socket)
    {
        try
        {
            // Linux reports twice what was set (the kernel's bookkeeping share), so a raised buffer is not raised again.
            if (socket.SendBufferSize < UnixSendBuffer)
                socket.SendBufferSize = UnixSendBuffer;
        }
        catch (SocketException)
        {
            // Not every platform lets an AF_UNIX buffer be sized; the default works, only with more wake-ups.
        }
    }

    /// <summary>
    /// The socket the managed calls use: for a bare file descriptor, a <see cref="Socket"/> over it made the first
    /// time one is needed (an asynchronous handshake or option), which does not own it: <see cref="_handle"/> closes it.
    /// </summary>
    private Socket ManagedSocket
    {
        get
        {
            Socket? socket = Volatile.Read(ref _socket);
            if (socket != null)
                return socket;
            // Made under a use of the descriptor, so never over a number already closed (and perhaps reused): the
            // callers report that as ENOTCONN. A Dispose meanwhile leaves the close to the EndUse below, which
            // disposes the Socket published here too.
            ObjectDisposedException.ThrowIf(!TryBeginUse(), this);
            try
            {
                var made = new Socket(new SafeSocketHandle(_fd, ownsHandle: false));
                socket = Interlocked.CompareExchange(ref _socket, made, null);
                if (socket == null)
                    return made;
                made.Dispose();
                return socket;
            }
            finally
            {
                EndUse();
            }
        }
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static unsafe void WidenSendBuffer(int fd)
    {
        int size;
        uint length = sizeof(int);
        if (LibC.GetSockOpt(fd, LibC.SOL_SOCKET, LibC.SO_SNDBUF, &size, &length) != 0 || size >= UnixSendBuffer)
            return;
        size = UnixSendBuffer;
        // As in the overload above: a kernel that refuses leaves the default, which works with more wake-ups.
        _ = LibC.SetSockOpt(fd, LibC.SOL_SOCKET, LibC.SO_SNDBUF, &size, sizeof(int));
    }

    private static bool PortableRequested() =>
        (AppContext.TryGetSwitch(PortableSwitch, out bool on) && on) || Environment.GetEnvironmentVariable(PortableVariable) == "1";

    public override int FileDescriptor => _fd;

    /// <summary>Takes a use of the descriptor (see <see cref="_uses"/>); false once the transport is disposed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryBeginUse()
    {
        int uses = Volatile.Read(ref _uses);
        while ((uses & Closed) == 0)
        {
            int seen = Interlocked.CompareExchange(ref _uses, uses + Use, uses);
            if (seen == uses)
                return true;
            uses = seen;
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EndUse()
    {
        if (Interlocked.Add(ref _uses, -Use) == Closed)
            CloseDescriptor();
    }

    private void CloseDescriptor()
    {
        _socket?.Dispose();
        _handle.Dispose();
    }

    public override int Receive(Span<byte> buffer) => UseLibC ? ReceiveLibC(buffer, wait: true) : ReceiveManaged(buffer);

    public override bool CanTryReceive => UseLibC;

    public override int TryReceive(Span<byte> buffer) =>
        UseLibC ? ReceiveLibC(buffer, wait: false) : throw new NotSupportedException();

    /// <summary>
    /// recv(2) that never blocks inside the kernel: with nothing there it returns -1, or with <paramref name="wait"/>
    /// waits in poll(2) and tries again. On Linux a thread woken from poll is placed better than one woken inside an
    /// AF_UNIX recv, which halves QD1 latency on small VMs (measured: p50 43 us against 70 us; docs/benchmarks.md).
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private unsafe int ReceiveLibC(Span<byte> buffer, bool wait)
    {
        if (!TryBeginUse())
            throw new TransportException(Errno.ENOTCONN, "recv: connection closed");
        try
        {
            fixed (byte* p = buffer)
            {
                while (true)
                {
                    nint n = LibC.Recv(_fd, p, (nuint)buffer.Length, LibC.MSG_DONTWAIT, out int errno);
                    if (n >= 0)
                        return (int)n;
                    if (errno == Errno.EINTR)
                        continue;
                    if (errno != Errno.EAGAIN)
                        throw Failure("recv", errno);
                    if (!wait)
                        return -1;
                    WaitFor(_fd, LibC.POLLIN, -1);
                }
            }
        }
        finally
        {
            EndUse();
        }
    }

    private int ReceiveManaged(Span<byte> buffer)
    {
        try
        {
            while (true)
            {
                int n = ManagedSocket.Receive(buffer, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock && WaitsInPoll)
                {
                    ManagedSocket.Poll(Timeout.InfiniteTimeSpan, SelectMode.SelectRead);
                    continue;
                }
                if (error != SocketError.Success)
                    throw Failure("recv", SocketErrors.ToErrno(error));
                return n;
            }
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "recv: connection closed", e);
        }
    }

    public override async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            return await ManagedSocket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw new TransportException(SocketErrors.ToErrno(e), "recv: " + e.Message, e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "recv: connection closed", e);
        }
    }

    public override void Send(ReadOnlySpan<byte> data)
    {
        if (!UseLibC)
        {
            SendManaged(data);
            return;
        }
        while (!data.IsEmpty)
        {
            int n = TrySend(data, default);
            data = data[n..];
            if (!data.IsEmpty && n == 0)
                WaitWritable(-1);
        }
    }

    private void SendManaged(ReadOnlySpan<byte> data)
    {
        try
        {
            while (!data.IsEmpty)
            {
                int n = ManagedSocket.Send(data, SocketFlags.None, out SocketError error);
                if (error == SocketError.WouldBlock && WaitsInPoll)
                {
                    ManagedSocket.Poll(Timeout.InfiniteTimeSpan, SelectMode.SelectWrite);
                    continue;
                }
                if (error != SocketError.Success)
                    throw Failure("send", SocketErrors.ToErrno(error));
                data = data[n..];
            }
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "send: connection closed", e);
        }
    }

    public override async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            while (!data.IsEmpty)
            {
                int n = await ManagedSocket.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                data = data[n..];
            }
        }
        catch (SocketException e)
        {
            throw new TransportException(SocketErrors.ToErrno(e), "send: " + e.Message, e);
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "send: connection closed", e);
        }
    }

    /// <summary>
    /// Sends what the socket takes without blocking from two buffers gathered into one <c>sendmsg</c> (a request
    /// header and its payload go out together without a copy). Returns the bytes sent (0 if it would block).
    /// </summary>
    public override unsafe int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        if (!UseLibC)
            return TrySendManaged(first, second);
        if (!TryBeginUse())
            throw new TransportException(Errno.ENOTCONN, "send: connection closed");
        try
        {
            fixed (byte* p1 = first)
            fixed (byte* p2 = second)
            {
                LibC.IoVec* iov = stackalloc LibC.IoVec[2];
                iov[0] = new LibC.IoVec { Base = p1, Length = (nuint)first.Length };
                iov[1] = new LibC.IoVec { Base = p2, Length = (nuint)second.Length };
                LibC.MsgHdr msg = default;
                msg.Iov = iov;
                msg.IovLength = 2;
                while (true)
                {
                    nint n = LibC.SendMsg(_fd, &msg, LibC.MSG_DONTWAIT | LibC.MSG_NOSIGNAL, out int errno);
                    if (n >= 0)
                        return (int)n;
                    if (errno == Errno.EINTR)
                        continue;
                    if (errno == Errno.EAGAIN)
                        return 0;
                    throw Failure("send", errno);
                }
            }
        }
        finally
        {
            EndUse();
        }
    }

    public override bool WaitReadable(int timeoutMs) => Wait(LibC.POLLIN, SelectMode.SelectRead, timeoutMs);

    public override unsafe (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs)
    {
        if (!UseLibC)
            return WaitReadableOrWritableManaged(timeoutMs);
        if (!TryBeginUse())
            return (true, true);
        try
        {
            LibC.PollFd pfd = new() { Fd = _fd, Events = LibC.POLLIN | LibC.POLLOUT };
            while (true)
            {
                int r = LibC.Poll(&pfd, 1, timeoutMs, out int errno);
                if (r >= 0)
                {
                    // An error or hang-up shows up in both directions: the next receive or send reports it.
                    bool failed = (pfd.REvents & (LibC.POLLERR | LibC.POLLHUP | LibC.POLLNVAL)) != 0;
                    return ((pfd.REvents & LibC.POLLIN) != 0 || failed, (pfd.REvents & LibC.POLLOUT) != 0 || failed);
                }
                if (errno != Errno.EINTR)
                    throw Failure("poll", errno);
            }
        }
        finally
        {
            EndUse();
        }
    }

    /// <summary>
    /// Both directions at once without libc: waiting for room alone would never end while the server, its replies
    /// unread, stops reading our requests.
    /// </summary>
    private (bool Readable, bool Writable) WaitReadableOrWritableManaged(int timeoutMs)
    {
        Socket socket = ManagedSocket;
        var readers = new List<Socket>(1) { socket };
        var writers = new List<Socket>(1) { socket };
        var errors = new List<Socket>(1) { socket };
        try
        {
            Socket.Select(readers, writers, errors, timeoutMs < 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(timeoutMs));
        }
        catch (ObjectDisposedException)
        {
            return (true, true);
        }
        catch (SocketException e)
        {
            throw new TransportException(SocketErrors.ToErrno(e), "poll: " + e.Message, e);
        }
        // An error shows up in both directions: the next receive or send reports it.
        bool failed = errors.Count > 0;
        return (readers.Count > 0 || failed, writers.Count > 0 || failed);
    }

    public override bool WaitWritable(int timeoutMs) => Wait(LibC.POLLOUT, SelectMode.SelectWrite, timeoutMs);

    public override unsafe int RoomToSend()
    {
        if (!UseLibC)
            return -1;
        if (!TryBeginUse())
            return -1;
        try
        {
            int fd = _fd;
            if (_sendBufferSize == 0)
            {
                // Read once: TCP may grow it later, which only leaves more room than counted.
                int size;
                uint length = sizeof(int);
                if (LibC.GetSockOpt(fd, LibC.SOL_SOCKET, LibC.SO_SNDBUF, &size, &length) != 0)
                    return -1;
                _sendBufferSize = size;
            }
            int queued;
            if (LibC.Ioctl(fd, LibC.SIOCOUTQ, &queued) != 0)
                return -1;
            return Math.Max(0, (_sendBufferSize / 2) - queued);
        }
        finally
        {
            EndUse();
        }
    }

    /// <summary>
    /// Where libc is not called directly. A non-blocking socket (see <see cref="WaitsInPoll"/>) takes what it has room
    /// for, as libc's non-blocking sendmsg does, without a poll first. A blocking one (Windows) sends at most
    /// <see cref="Transport.SmallSend"/> bytes once it reports room (which the kernel does only when much of its
    /// buffer is free, so that the send does not wait).
    /// </summary>
    private int TrySendManaged(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        if (WaitsInPoll)
        {
            int sent = SendWithoutWaiting(first);
            if (sent == first.Length)
                sent += SendWithoutWaiting(second);
            return sent;
        }
        if (!WaitWritable(0))
            return 0;
        ReadOnlySpan<byte> part = first.IsEmpty ? second : first;
        part = part[..Math.Min(part.Length, SmallSend)];
        SendManaged(part);
        return part.Length;
    }

    /// <summary>One send on the non-blocking socket: the bytes it took, 0 when it had no room.</summary>
    private int SendWithoutWaiting(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
            return 0;
        try
        {
            while (true)
            {
                int n = ManagedSocket.Send(data, SocketFlags.None, out SocketError error);
                if (error == SocketError.Success)
                    return n;
                if (error == SocketError.WouldBlock)
                    return 0;
                if (error != SocketError.Interrupted)
                    throw Failure("send", SocketErrors.ToErrno(error));
            }
        }
        catch (ObjectDisposedException e)
        {
            throw new TransportException(Errno.ENOTCONN, "send: connection closed", e);
        }
    }

    private bool Wait(short events, SelectMode mode, int timeoutMs)
    {
        if (!UseLibC)
        {
            try
            {
                return ManagedSocket.Poll(timeoutMs < 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(timeoutMs), mode);
            }
            catch (ObjectDisposedException)
            {
                return true;
            }
        }
        if (!TryBeginUse())
            return true;
        try
        {
            return WaitFor(_fd, events, timeoutMs);
        }
        finally
        {
            EndUse();
        }
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static unsafe bool WaitFor(int fd, short events, int timeoutMs)
    {
        LibC.PollFd pfd = new() { Fd = fd, Events = events };
        long deadline = timeoutMs < 0 ? 0 : Environment.TickCount64 + timeoutMs;
        while (true)
        {
            int remaining = timeoutMs < 0 ? -1 : (int)Math.Max(0, deadline - Environment.TickCount64);
            int r = LibC.Poll(&pfd, 1, remaining, out int errno);
            if (r > 0)
                return true;
            if (r == 0)
                return false;
            if (errno != Errno.EINTR)
                throw Failure("poll", errno);
        }
    }

    private static TransportException Failure(string call, int errno) =>
        new(errno, call + ": " + Errno.Describe(errno));

    public override void ShutdownSend()
    {
        if (_socket == null && UseLibC)
        {
            ShutdownFd(LibC.SHUT_WR);
            return;
        }
        try
        {
            ManagedSocket.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
            // Already closed by the peer: nothing left to tell it.
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public override void Abort()
    {
        if (Interlocked.Exchange(ref _aborted, 1) != 0)
            return;
        if (_socket == null && UseLibC)
        {
            ShutdownFd(LibC.SHUT_RDWR);
            return;
        }
        try
        {
            ManagedSocket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (!disposing)
            return;
        Abort();
        // The first Dispose marks the transport closed and gives back its own use: the last call still in progress
        // (or this one) closes the descriptor.
        if ((Interlocked.Or(ref _uses, Closed) & Closed) == 0)
            EndUse();
    }

    /// <summary>shutdown(2) on a bare file descriptor; errors (already closed by the peer, or by us) mean nothing is left to do.</summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private void ShutdownFd(int how)
    {
        if (!TryBeginUse())
            return;
        try
        {
            _ = LibC.Shutdown(_fd, how);
        }
        finally
        {
            EndUse();
        }
    }
}
