using System;
using System.Buffers.Binary;
using System.Diagnostics;
using System.IO;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Every transport: a command on a socketpair, systemd socket activation (nbdkit, qemu-nbd), an adopted socket, vsock, aio connects.</summary>
public class TransportTests
{
    private static bool Exists(long pid)
    {
        try
        {
            using Process p = Process.GetProcessById((int)pid);
            return !p.HasExited && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);
        }
        catch (ArgumentException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static void AssertGone(long pid)
    {
        // Reaped: no process, not even a zombie.
        Assert.False(File.Exists($"/proc/{pid}/stat") && Exists(pid), $"process {pid} is still there");
        Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} was not reaped");
    }

    [Fact]
    public async Task Command_ServerOnStdinStdout_AllForms()
    {
        Requires.Program("nbdkit");
        long pid;
        using (var h = new NbdHandle())
        {
            h.ConnectCommand(["nbdkit", "-s", "--exit-with-parent", "memory", "1M"]);
            pid = h.GetSubprocessPid();
            Assert.True(Exists(pid));
            Exercise.WriteReadBack(h, 8192, 4096);
            Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.GetUri()).Errno);
        }
        AssertGone(pid);

        await using (var h = new NbdHandle())
        {
            await h.ConnectCommandAsync(["nbdkit", "-s", "--exit-with-parent", "pattern", "1M"]);
            Assert.Equal(1 << 20, h.GetSize());
            pid = h.GetSubprocessPid();
        }
        AssertGone(pid);
    }

    /// <summary>
    /// Unix sockets get a send buffer that takes a 256 KiB write whole (Linux reports twice the size set); a
    /// socketpair to a command too. Writes through the wider buffer still arrive intact.
    /// </summary>
    [Fact]
    public void UnixSockets_SendBufferTakesLargeWritesWhole()
    {
        Requires.Program("nbdkit");
        using ServerProcess server = Peers.Nbdkit("memory", "4M");
        using (var h = new NbdHandle())
        {
            h.ConnectUri(server.Uri);
            Assert.True(SendBufferOf(h) >= 1 << 20, "send buffer " + SendBufferOf(h));
            Exercise.WriteReadBack(h, 1 << 20, 3 << 20);
        }
        using (var h = new NbdHandle())
        {
            h.ConnectCommand(["nbdkit", "-s", "--exit-with-parent", "memory", "4M"]);
            // (Over the portable path a command's server is reached over two pipes: no socket to size.)
            if (!Native.PortablePath)
                Assert.True(SendBufferOf(h) >= 1 << 20, "send buffer " + SendBufferOf(h));
            Exercise.WriteReadBack(h, 0, 4 << 20);
        }
    }

    private static int SendBufferOf(NbdHandle h)
    {
        using var view = new Socket(new SafeSocketHandle(h.AioGetFd(), ownsHandle: false));
        return view.SendBufferSize;
    }

    [Fact]
    public void Command_ThatIsNotAServer_FailsCleanly()
    {
        using var h = new NbdHandle();
        var e = Assert.Throws<NbdProtocolException>(() => h.ConnectCommand(["/bin/echo", "not an NBD server"]));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.True(h.AioIsDead());
        using var missing = new NbdHandle();
        Assert.Equal(Errno.ENOENT, Assert.Throws<NbdException>(() => missing.ConnectCommand(["/nonexistent/nbd-server"])).Errno);
        using var empty = new NbdHandle();
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => empty.ConnectCommand([])).Errno);
    }

    [Fact]
    public void SocketActivation_Nbdkit_WithName()
    {
        Requires.Program("nbdkit");
        using var dir = new TempDirectory();
        string seen = dir.File("fdnames");
        long pid;
        string socketDirectory;
        using (var h = new NbdHandle())
        {
            h.SetSocketActivationName("disk0");
            Assert.Equal("disk0", h.GetSocketActivationName());
            // A shell in front of nbdkit records what the server process is given, then becomes nbdkit.
            h.ConnectSystemdSocketActivation(["sh", "-c",
                $"echo \"$LISTEN_PID $$ $LISTEN_FDS $LISTEN_FDNAMES\" > {seen}; exec nbdkit pattern 1M"]);
            pid = h.GetSubprocessPid();
            h.Pread(new byte[512], 0);
            Assert.Equal(1 << 20, h.GetSize());
            socketDirectory = Path.GetDirectoryName(NbdUri.Parse(h.GetUri()).Socket)!;
            Assert.StartsWith("/tmp/nbdsharp-", socketDirectory, StringComparison.Ordinal);
        }
        AssertGone(pid);
        Assert.Equal($"{pid} {pid} 1 disk0", File.ReadAllText(seen).Trim());
        Assert.False(Directory.Exists(socketDirectory), "the socket's folder outlived the handle");
    }

    [Fact]
    public void SocketActivation_QemuNbd()
    {
        Requires.Program("qemu-nbd");
        using var dir = new TempDirectory();
        string image = dir.File("disk.img");
        Peers.Run("qemu-img", "create", "-q", "-f", "raw", image, "4M");
        using var h = new NbdHandle();
        h.ConnectSystemdSocketActivation(["qemu-nbd", "-f", "raw", image]);
        Assert.Equal(4 << 20, h.GetSize());
        Exercise.WriteReadBack(h, 0, 65536, seed: 2);
    }

    [Fact]
    public void SocketActivationName_IsChecked()
    {
        using var h = new NbdHandle();
        Assert.Equal(Errno.ENAMETOOLONG, Assert.Throws<NbdException>(() => h.SetSocketActivationName(new string('a', 33))).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetSocketActivationName("no spaces")).Errno);
        h.SetSocketActivationName("");
        Assert.Equal("", h.GetSocketActivationName());
        Assert.Equal(Errno.ESRCH, Assert.Throws<NbdException>(() => h.GetSubprocessPid()).Errno);
        Assert.Equal(Errno.ESRCH, Assert.Throws<NbdException>(() => h.KillSubprocess(0)).Errno);
    }

    [Fact]
    public async Task KillSubprocess_FailsCommandsInFlight()
    {
        Requires.Program("nbdkit");
        await using var h = new NbdHandle();
        h.ConnectCommand(["nbdkit", "-s", "--exit-with-parent", "--filter=delay", "memory", "1M", "rdelay=10"]);
        Task read = h.PreadAsync(new byte[512], 0).AsTask();
        // nbdkit has read the request (killed with it unread, it would reset the connection: ECONNRESET). Over the
        // portable path the server's stdin and stdout are pipes, which end without a reset.
        if (!Native.PortablePath)
            Assert.True(SpinWait.SpinUntil(() => Native.UnreadByPeer(h.AioGetFd()) == 0, TimeSpan.FromSeconds(10)));
        h.KillSubprocess(Native.SIGKILL);
        var e = await Assert.ThrowsAsync<NbdConnectionException>(() => read.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(Errno.ENOTCONN, e.Errno);
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public void AdoptedSocket_Works()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "1M");
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(server.Socket));
        using var h = new NbdHandle();
        h.ConnectSocket(socket);
        byte[] buffer = new byte[8];
        h.Pread(buffer, 4096);
        Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.GetUri()).Errno);
    }

    [Fact]
    public async Task AdoptedSocket_Async_OverTcp()
    {
        using ServerProcess server = Peers.NbdkitOnFreePort(out int port, "pattern", "1M");
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, port);
        await using var h = new NbdHandle();
        await h.ConnectSocketAsync(socket);
        byte[] buffer = new byte[8];
        await h.PreadAsync(buffer, 8192);
        Assert.Equal(8192UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
    }

    [Fact]
    public void AioConnect_AllTransports_ProgressThroughPoll()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using ServerProcess tcp = Peers.NbdkitOnFreePort(out int port, "memory", "1M");
        Action<NbdHandle>[] starts =
        [
            h => h.AioConnectUri(server.Uri),
            h => h.AioConnectTcp("127.0.0.1", port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            h => h.AioConnectUnix(server.Socket),
            h => h.AioConnect(new UnixDomainSocketEndPoint(server.Socket)),
            h =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                socket.Connect(new UnixDomainSocketEndPoint(server.Socket));
                h.AioConnectSocket(socket);
            },
            h => h.AioConnectCommand(["nbdkit", "-s", "--exit-with-parent", "memory", "1M"]),
            h => h.AioConnectSystemdSocketActivation(["nbdkit", "memory", "1M"]),
        ];
        foreach (Action<NbdHandle> start in starts)
        {
            using var h = new NbdHandle();
            start(h);
            while (h.AioIsConnecting())
                h.Poll(-1);
            Assert.True(h.AioIsReady(), h.ConnectionState());
            Assert.Equal(1 << 20, h.GetSize());
        }
    }

    [Fact]
    public void AioConnect_ImmediateFailure_FailsTheCall()
    {
        using var h = new NbdHandle();
        Assert.Equal(Errno.ENOENT, Assert.Throws<NbdConnectionException>(() => h.AioConnectUnix("/nonexistent/nbd.sock")).Errno);
        Assert.True(h.AioIsDead());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.AioConnectUnix("/x")).Errno);
    }

    [Fact]
    public void AioConnect_LaterFailure_IsReportedByPoll()
    {
        using var h = new NbdHandle();
        h.AioConnectCommand(["sh", "-c", "exit 0"]);
        NbdException? failure = null;
        while (h.AioIsConnecting())
        {
            try
            {
                h.Poll(-1);
            }
            catch (NbdException e)
            {
                failure = e;
            }
        }
        Assert.NotNull(failure);
        Assert.True(h.AioIsDead());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.AioConnectUnix("/x")).Errno);
    }

    [Fact]
    public void Vsock_LocalLoopback()
    {
        Assert.True(NbdHandle.SupportsVsock() || !OperatingSystem.IsLinux());
        Requires.Program("nbdkit");
        uint port = (uint)Random.Shared.Next(20000, 60000);
        var info = new ProcessStartInfo("nbdkit") { UseShellExecute = false, RedirectStandardError = true };
        foreach (string arg in new[] { "-f", "--exit-with-parent", "--vsock", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "pattern", "1M" })
            info.ArgumentList.Add(arg);
        using Process nbdkit = Process.Start(info)!;
        try
        {
            // nbdkit takes a moment to listen: connect until it answers, or until it is clear nothing will.
            NbdHandle? h = null;
            Exception? last = null;
            bool connected = SpinWait.SpinUntil(() =>
            {
                var attempt = new NbdHandle();
                Task connect = Task.Run(() => attempt.ConnectVsock(1, port));
                if (((IAsyncResult)connect).AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(5)) && !connect.IsFaulted)
                {
                    h = attempt;
                    return true;
                }
                last = connect.Exception?.InnerException ?? new TimeoutException("connect timed out");
                attempt.Dispose();
                // Refused: not listening yet, try again; anything else is final.
                return nbdkit.HasExited || last is not NbdException { Errno: Errno.ECONNREFUSED };
            }, TimeSpan.FromSeconds(10));
            if (!connected || h == null)
                Assert.Skip("this kernel offers no vsock loopback to CID 1 (no vsock_loopback transport): " + last?.Message);
            using NbdHandle handle = h;
            Assert.Equal(1 << 20, h.GetSize());
            Assert.Equal($"nbd+vsock://1:{port}/", h.GetUri());
            using var viaUri = new NbdHandle();
            viaUri.ConnectUri($"nbd+vsock://1:{port}/");
            Assert.Equal(1 << 20, viaUri.GetSize());
            using var viaAio = new NbdHandle();
            viaAio.AioConnectVsock(1, port);
            while (viaAio.AioIsConnecting())
                viaAio.Poll(-1);
            Assert.True(viaAio.AioIsReady());
        }
        finally
        {
            nbdkit.Kill();
            nbdkit.WaitForExit();
        }
    }
}
