using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Server;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>
/// NbdSharp's own client against NbdSharp's server: extended headers and 64-bit block status past 4 GiB, multi-conn,
/// many requests in flight answered in completion order, the server's fallbacks (no extended headers, no structured
/// replies, oldstyle), graceful stop with requests in flight, and the other ways of listening (TCP on IPv4 and IPv6
/// loopback, a socket or stream from socketpair).
/// </summary>
/// <remarks>
/// Of the third-party clients installed here, only the optional local build of libnbd 1.22 speaks extended headers
/// (see <see cref="NbdinfoTests.Libnbd122_NegotiatesExtendedHeaders_AndMapsPast4GiB"/>); Debian's libnbd 1.14 and
/// python3-libnbd, qemu 7.2 and nbdkit 1.32 predate them, so these tests cover extended headers with our own client.
/// </remarks>
public partial class NbdSharpClientTests
{
    private const long MiB = 1 << 20;
    private const long GiB = 1L << 30;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    private static byte[] Random(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        data[0] = data[^1] = 0xC3;
        return data;
    }

    private static List<NbdExtent> Extents64(NbdHandle h, ulong offset, ulong length, ulong maxRequest, CmdFlag flags = CmdFlag.None)
    {
        var extents = new List<NbdExtent>();
        ulong at = offset;
        while (at < offset + length)
        {
            h.BlockStatus64(Math.Min(offset + length - at, maxRequest), at, (string context, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
            {
                Assert.Equal(MetaContext.BaseAllocation, context);
                foreach (NbdExtent e in entries)
                {
                    extents.Add(e);
                    at += e.Length;
                }
                return 0;
            }, flags);
        }
        return extents;
    }

    private static List<NbdExtent> Merge(List<NbdExtent> extents)
    {
        var merged = new List<NbdExtent>();
        foreach (NbdExtent e in extents)
        {
            if (merged.Count > 0 && merged[^1].Flags == e.Flags)
                merged[^1] = new NbdExtent(merged[^1].Length + e.Length, e.Flags);
            else
                merged.Add(e);
        }
        return merged;
    }

    /// <summary>Polls <paramref name="h"/> until <paramref name="done"/> holds, failing after <paramref name="deadline"/> (default <see cref="Deadline"/>).</summary>
    private static void PollUntil(NbdHandle h, Func<bool> done, string what, TimeSpan? deadline = null)
    {
        DateTime until = DateTime.UtcNow + (deadline ?? Deadline);
        while (!done())
        {
            Assert.True(DateTime.UtcNow < until, "timed out waiting for " + what);
            h.Poll(1000);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Past4GiB_ReadsWritesAndBlockStatus64_WithAndWithoutExtendedHeaders(bool extended)
    {
        const long size = 6 * GiB;
        var memory = new MemoryExport(size);
        using var server = TestServer.Start(memory);
        using var h = new NbdHandle();
        h.SetRequestExtendedHeaders(extended);
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Assert.Equal(extended, h.GetExtendedHeadersNegotiated());
        Assert.True(h.GetStructuredRepliesNegotiated());
        Assert.True(server.Log.WaitFor(extended ? "with extended replies" : "with structured replies", Deadline), server.Log.ToString());
        Assert.Equal(size, h.GetSize());

        byte[] straddle = Random((int)MiB, 1);
        byte[] high = Random(3 * MemoryExport.PageSize, 2);
        ulong straddleAt = (ulong)(4 * GiB - MiB / 2);
        ulong highAt = (ulong)(5 * GiB);
        h.Pwrite(straddle, straddleAt, CmdFlag.Fua);
        h.Pwrite(high, highAt);
        h.Flush();
        byte[] back = new byte[MiB];
        h.Pread(back, straddleAt);
        Assert.Equal(straddle, back);
        byte[] inside = new byte[high.Length];
        memory.Read((long)highAt, inside);
        Assert.Equal(high, inside);
        h.Pread(inside, highAt);
        Assert.Equal(high, inside);
        byte[] last = new byte[4096];
        h.Pwrite(Random(4096, 3), (ulong)size - 4096);
        h.Pread(last, (ulong)size - 4096);
        Assert.Equal(Random(4096, 3), last);

        // One request over the whole disk (at most 4 GiB - 1 in compact mode): with extended headers the answer may
        // describe more than 4 GiB at once.
        var first = new List<NbdExtent>();
        h.BlockStatus64(extended ? (ulong)size : uint.MaxValue, 0, (string _, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            first.AddRange(entries.ToArray());
            return 0;
        });
        if (extended)
            Assert.Equal(new NbdExtent(straddleAt, 3), first[0]);
        else
            Assert.True(first.Sum(e => (long)e.Length) <= uint.MaxValue, "a compact reply described more than 4 GiB");

        List<NbdExtent> map = Merge(Extents64(h, 0, (ulong)size, extended ? (ulong)size : uint.MaxValue));
        Assert.Equal(
        [
            new NbdExtent(straddleAt, 3), new NbdExtent(MiB, 0), new NbdExtent(highAt - straddleAt - MiB, 3),
            new NbdExtent((ulong)high.Length, 0), new NbdExtent((ulong)size - highAt - (ulong)high.Length - MemoryExport.PageSize, 3),
            new NbdExtent(MemoryExport.PageSize, 0),
        ], map);
        // REQ_ONE past 4 GiB: one extent, inside the request.
        List<NbdExtent> one = [];
        h.BlockStatus64(2 * MiB, highAt - MiB, (string _, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            one.AddRange(entries.ToArray());
            return 0;
        }, CmdFlag.ReqOne);
        Assert.Equal([new NbdExtent(MiB, 3)], one);
        h.Shutdown();
    }

    [Fact]
    public async Task MultiConn_ConcurrentWritersThenFlush_AreSeenByAnotherConnection()
    {
        const int writers = 4;
        const int perWriter = 8 * (int)MiB;
        var memory = new MemoryExport(writers * perWriter);
        using var server = TestServer.Start(memory);
        byte[][] data = [.. Enumerable.Range(0, writers).Select(i => Random(perWriter, 10 + i))];
        var handles = new NbdHandle[writers];
        try
        {
            for (int i = 0; i < writers; i++)
            {
                handles[i] = new NbdHandle();
                await handles[i].ConnectUriAsync(server.Uri, TestContext.Current.CancellationToken);
                Assert.True(handles[i].CanMultiConn());
            }
            Assert.Equal(writers, server.Server.ConnectionCount);
            await Task.WhenAll(Enumerable.Range(0, writers).Select(async i =>
            {
                // Interleaved 256 KiB writes so the connections' requests mix in the export.
                for (int at = 0; at < perWriter; at += 256 * 1024)
                    await handles[i].PwriteAsync(data[i].AsMemory(at, 256 * 1024), (ulong)(i * perWriter + at),
                        cancellationToken: TestContext.Current.CancellationToken);
                await handles[i].FlushAsync(cancellationToken: TestContext.Current.CancellationToken);
            }));
            using var reader = new NbdHandle();
            reader.ConnectUri(server.Uri);
            byte[] back = new byte[perWriter];
            for (int i = 0; i < writers; i++)
            {
                reader.Pread(back, (ulong)(i * perWriter));
                Assert.True(back.AsSpan().SequenceEqual(data[i]), $"writer {i}'s data is not what another connection reads");
            }
            reader.Shutdown();
        }
        finally
        {
            foreach (NbdHandle? h in handles)
                h?.Dispose();
        }
    }

    /// <summary>
    /// 64 reads in flight on one handle: the export holds all 64 at once (the server read every request before any
    /// finished), and they are released in reverse order; the client sees the replies in that order, each with its data.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SixtyFourReadsInFlight_RepliesComeInCompletionOrder(bool threadPerConnection)
    {
        const int count = 64, slot = 16 * 1024;
        var export = new SlotGatedExport(count, slot);
        for (int i = 0; i < count; i++)
            export.Write((long)i * slot, Enumerable.Repeat((byte)(i + 1), slot).ToArray());
        using var server = TestServer.Start(export, new NbdServerOptions { ThreadPerConnection = threadPerConnection });
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        var order = new List<int>();
        byte[][] buffers = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            int index = i;
            buffers[i] = new byte[slot];
            h.AioPread(buffers[i], (ulong)(i * slot), (ref int error) =>
            {
                Assert.Equal(0, error);
                order.Add(index);
                return 1;
            });
        }
        Assert.Equal(count, h.AioInFlight());
        // Send everything the socket did not take at once, until the export has all 64 reads.
        DateTime until = DateTime.UtcNow + Deadline;
        while (!export.WaitForReads(count, TimeSpan.Zero))
        {
            Assert.True(DateTime.UtcNow < until, "the server never had 64 reads in flight");
            h.Poll(10);
        }
        for (int i = count - 1; i >= 0; i--)
        {
            export.Open(i);
            int expected = count - i;
            PollUntil(h, () => order.Count == expected, "read " + i);
        }
        Assert.Equal(Enumerable.Range(0, count).Reverse(), order);
        for (int i = 0; i < count; i++)
            Assert.All(buffers[i], b => Assert.Equal((byte)(i + 1), b));
        Assert.Equal(0, h.AioInFlight());
    }

    [Fact]
    public void ServerWithoutExtendedHeaders_ClientFallsBackToStructuredReplies()
    {
        var memory = new MemoryExport(2 * MiB);
        memory.Write(MiB, Random(4096, 4));
        using var server = TestServer.Start(memory, new NbdServerOptions { ExtendedHeaders = false });
        using var h = new NbdHandle();
        h.SetRequestExtendedHeaders(true);
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.True(h.GetStructuredRepliesNegotiated());
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        Assert.Equal([new NbdExtent(MiB, 3), new NbdExtent(MemoryExport.PageSize, 0), new NbdExtent(MiB - MemoryExport.PageSize, 3)],
            Merge(Extents64(h, 0, 2 * MiB, 2 * MiB)));
        byte[] back = new byte[4096];
        h.Pread(back, MiB);
        Assert.Equal(Random(4096, 4), back);
        h.Shutdown();
        Assert.True(server.Log.WaitFor("NBD_OPT_EXTENDED_HEADERS: extended headers are disabled", Deadline), server.Log.ToString());
    }

    [Fact]
    public void ServerWithoutStructuredReplies_ClientFallsBackToSimpleReplies()
    {
        var memory = new MemoryExport(2 * MiB);
        using var server = TestServer.Start(memory, new NbdServerOptions { StructuredReplies = false });
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.False(h.GetStructuredRepliesNegotiated());
        Assert.False(h.CanMetaContext(MetaContext.BaseAllocation));
        Assert.False(h.CanDf());
        Exercise(h, memory);
        // Errors still arrive, as simple replies.
        h.SetStrictMode(StrictFlag.None);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdServerException>(() => h.Pread(new byte[10], 2 * MiB - 5)).Errno);
        Assert.Equal(Errno.ENOSPC, Assert.Throws<NbdServerException>(() => h.Pwrite(new byte[10], 2 * MiB - 5)).Errno);
        h.Shutdown();
        Assert.True(server.Log.WaitFor("with simple replies", Deadline), server.Log.ToString());
    }

    [Fact]
    public void Oldstyle_WorksWithOurClient()
    {
        var memory = new MemoryExport(3 * MiB);
        using var server = TestServer.Start(memory, new NbdServerOptions { Oldstyle = true });
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal("oldstyle", h.GetProtocol());
        Assert.Equal(3 * MiB, h.GetSize());
        Assert.False(h.GetStructuredRepliesNegotiated());
        Assert.True(h.CanTrim());
        Assert.True(h.CanFua());
        Exercise(h, memory);
        h.Shutdown();
    }

    /// <summary>Writes, reads back, trims and zeroes through <paramref name="h"/>, checking the export in-process.</summary>
    private static void Exercise(NbdHandle h, MemoryExport memory)
    {
        byte[] data = Random(300_000, 5);
        h.Pwrite(data, 12345, CmdFlag.Fua);
        h.Flush();
        byte[] back = new byte[data.Length];
        h.Pread(back, 12345);
        Assert.Equal(data, back);
        memory.Read(12345, back);
        Assert.Equal(data, back);
        h.Zero(1000, 20000);
        h.Trim((ulong)MemoryExport.PageSize, (ulong)MemoryExport.PageSize);
        memory.Read(20000, back.AsSpan(0, 1000));
        Assert.All(back[..1000], b => Assert.Equal(0, b));
        memory.Read(MemoryExport.PageSize, back.AsSpan(0, MemoryExport.PageSize));
        Assert.All(back[..MemoryExport.PageSize], b => Assert.Equal(0, b));
    }

    /// <summary>
    /// StopAsync while a client has 8 reads inside the export: the stop waits for them, their replies reach the client
    /// with the right data, then the connection closes, the socket file goes and nobody else can connect.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task StopAsync_LetsRequestsInFlightFinish_ThenClosesTheConnection(bool threadPerConnection)
    {
        const int count = 8, slot = 64 * 1024;
        var export = new SlotGatedExport(count, slot);
        for (int i = 0; i < count; i++)
            export.Write((long)i * slot, Enumerable.Repeat((byte)(0x10 + i), slot).ToArray());
        using var server = TestServer.Start(export, new NbdServerOptions { ThreadPerConnection = threadPerConnection });
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        var errors = new int?[count];
        byte[][] buffers = new byte[count][];
        for (int i = 0; i < count; i++)
        {
            int index = i;
            buffers[i] = new byte[slot];
            h.AioPread(buffers[i], (ulong)(i * slot), (ref int error) =>
            {
                errors[index] = error;
                return 1;
            });
        }
        DateTime until = DateTime.UtcNow + Deadline;
        while (!export.WaitForReads(count, TimeSpan.Zero))
        {
            Assert.True(DateTime.UtcNow < until, "the reads never reached the export");
            h.Poll(10);
        }

        Task stop = server.Server.StopAsync(TestContext.Current.CancellationToken);
        // The listener goes at once; the connection stays while its requests run.
        Assert.True(SpinWait.SpinUntil(() => !System.IO.File.Exists(server.Socket), Deadline), "the socket file was not removed");
        Assert.False(stop.IsCompleted);
        Assert.Equal(1, server.Server.ConnectionCount);
        using (var late = new NbdHandle())
            Assert.ThrowsAny<NbdException>(() => late.ConnectUri(server.Uri));

        for (int i = 0; i < count; i++)
            export.Open(i);
        PollUntil(h, () => errors.All(e => e != null), "the replies");
        Assert.All(errors, e => Assert.Equal(0, e));
        for (int i = 0; i < count; i++)
            Assert.All(buffers[i], b => Assert.Equal((byte)(0x10 + i), b));

        await stop.WaitAsync(Deadline, TestContext.Current.CancellationToken);
        Assert.True(server.Server.Completion.IsCompleted);
        Assert.Equal(0, server.Server.ConnectionCount);
        // The server closed the connection: the next request fails.
        Assert.ThrowsAny<NbdException>(() => h.Pread(new byte[512], 0));
        // (The server logs this as "the client closed the connection": stopping shuts the socket's receive side.)
        Assert.True(server.Log.WaitFor("closed: ", Deadline), server.Log.ToString());
    }

    /// <summary>
    /// StopAsync whose token is cancelled while a read is stuck in the export: "the remaining connections are cut at
    /// once". An export that honours its cancellation token fails the read (the reply says so or the connection dies);
    /// one that ignores it must not keep the connection open either.
    /// </summary>
    [Theory]
    [InlineData(true, true)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(false, false)]
    public async Task StopAsync_WithACancelledToken_CutsTheConnection(bool exportHonoursCancellation, bool threadPerConnection)
    {
        var export = new SlotGatedExport(1, 4096) { HonourCancellation = exportHonoursCancellation };
        using var server = TestServer.Start(export, new NbdServerOptions { ThreadPerConnection = threadPerConnection });
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        int? error = null;
        h.AioPread(new byte[512], 0, (ref int e) =>
        {
            error = e;
            return 1;
        });
        DateTime until = DateTime.UtcNow + Deadline;
        while (!export.WaitForReads(1, TimeSpan.Zero))
        {
            Assert.True(DateTime.UtcNow < until, "the read never reached the export");
            h.Poll(10);
        }
        using var cut = new CancellationTokenSource();
        Task stop = server.Server.StopAsync(cut.Token);
        Assert.False(stop.IsCompleted);
        await cut.CancelAsync();
        try
        {
            // The client learns that its read failed or that the connection is gone, without the export finishing.
            PollUntil(h, () => error != null || h.AioIsDead(), "the read to fail or the connection to be cut", TimeSpan.FromSeconds(10));
            Assert.NotEqual(0, error ?? -1);
            await stop.WaitAsync(Deadline, TestContext.Current.CancellationToken);
            Assert.Equal(0, server.Server.ConnectionCount);
        }
        finally
        {
            export.Open(0);
        }
    }

    [Fact]
    public async Task ListenTcp_OnIPv4AndIPv6Loopback_WithPortZero()
    {
        var memory = new MemoryExport(MiB);
        memory.Write(0, "tcp!"u8);
        await using var server = new NbdServer();
        server.AddExport("", memory);
        IPEndPoint v4 = server.ListenTcp(new IPEndPoint(IPAddress.Loopback, 0));
        Assert.Equal(IPAddress.Loopback, v4.Address);
        Assert.NotEqual(0, v4.Port);
        string port4 = v4.Port.ToString(CultureInfo.InvariantCulture);
        using (var h = new NbdHandle())
        {
            h.ConnectTcp("127.0.0.1", port4);
            byte[] back = new byte[4];
            h.Pread(back, 0);
            Assert.Equal("tcp!"u8.ToArray(), back);
            h.Shutdown();
        }
        Assert.Equal("1048576\n", Clients.Ok("/usr/bin/nbdinfo", "--size", "nbd://127.0.0.1:" + port4));

        if (!Socket.OSSupportsIPv6)
            Assert.Skip("no IPv6 here");
        IPEndPoint v6;
        try
        {
            v6 = server.ListenTcp(new IPEndPoint(IPAddress.IPv6Loopback, 0));
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressNotAvailable or SocketError.AddressFamilyNotSupported)
        {
            Assert.Skip("::1 is not configured here: " + e.Message);
            return;
        }
        Assert.Equal(IPAddress.IPv6Loopback, v6.Address);
        Assert.NotEqual(v4.Port, v6.Port);
        string uri6 = "nbd://[::1]:" + v6.Port.ToString(CultureInfo.InvariantCulture) + "/";
        using (var h = new NbdHandle())
        {
            h.ConnectUri(uri6);
            byte[] back = new byte[4];
            h.Pread(back, 0);
            Assert.Equal("tcp!"u8.ToArray(), back);
            h.Shutdown();
        }
        Assert.Equal("1048576\n", Clients.Ok("/usr/bin/nbdinfo", "--size", uri6));
        Assert.Equal(1 * MiB, JsonSize(Clients.Ok("qemu-img", "info", "--output=json", uri6)));
    }

    private static long JsonSize(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("virtual-size").GetInt64();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ServeAsync_OnOneEndOfASocketPair(bool asStream)
    {
        var memory = new MemoryExport(2 * MiB);
        await using var server = new NbdServer();
        server.AddExport("", memory);
        var (serverEnd, clientEnd) = SocketPair();
        Task served = asStream
            ? server.ServeStreamAsync(new NetworkStream(serverEnd, ownsSocket: true), TestContext.Current.CancellationToken)
            : server.ServeAsync(serverEnd, TestContext.Current.CancellationToken);
        using (var h = new NbdHandle())
        {
            h.AddMetaContext(MetaContext.BaseAllocation);
            h.ConnectSocket(clientEnd);
            Assert.True(h.GetStructuredRepliesNegotiated());
            Exercise(h, memory);
            Assert.Equal(1, server.ConnectionCount);
            h.Shutdown();
        }
        await served.WaitAsync(Deadline, TestContext.Current.CancellationToken);
        Assert.Equal(0, server.ConnectionCount);
    }

    [Fact]
    public void MaxConnections_RefusesTheNextClient_UntilOneLeaves()
    {
        using var server = TestServer.Start(new MemoryExport(MiB), new NbdServerOptions { MaxConnections = 2 });
        var a = new NbdHandle();
        using var b = new NbdHandle();
        a.ConnectUri(server.Uri);
        b.ConnectUri(server.Uri);
        using (var c = new NbdHandle())
            Assert.ThrowsAny<NbdException>(() => c.ConnectUri(server.Uri));
        Assert.True(server.Log.WaitFor("too many connections (2)", Deadline), server.Log.ToString());
        a.Shutdown();
        a.Dispose();
        Assert.True(SpinWait.SpinUntil(() => server.Server.ConnectionCount == 1, Deadline), "the first client's connection did not end");
        using var d = new NbdHandle();
        d.ConnectUri(server.Uri);
        byte[] one = new byte[1];
        d.Pread(one, 0);
        b.Pread(one, 0);
    }

    /// <summary>A connection accepted on a Unix socket gets a send buffer that takes a 256 KiB read reply whole.</summary>
    [Fact]
    public void UnixConnections_SendBufferTakesLargeRepliesWhole()
    {
        using var server = TestServer.Start(new MemoryExport(MiB));
        using var raw = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        raw.Connect(new UnixDomainSocketEndPoint(server.Socket));
        Assert.Equal(18, raw.Receive(new byte[64])); // accepted: the greeting came
        // The server's end of the connection is a socket in this process bound to the server's path, not listening.
        int found = 0;
        foreach (string link in System.IO.Directory.GetFiles("/proc/self/fd"))
        {
            if (!int.TryParse(System.IO.Path.GetFileName(link), out int fd) || !(new System.IO.FileInfo(link).LinkTarget ?? "").StartsWith("socket:", StringComparison.Ordinal))
                continue;
            using var view = new Socket(new SafeSocketHandle(fd, ownsHandle: false));
            if (view.AddressFamily != AddressFamily.Unix || view.LocalEndPoint?.ToString() != server.Socket
                || (int)view.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)! != 0)
                continue;
            Assert.True(view.SendBufferSize >= 1 << 20, "send buffer " + view.SendBufferSize);
            found++;
        }
        Assert.Equal(1, found);
    }

    [Fact]
    public void HandshakeTimeout_ClosesAClientThatSaysNothing()
    {
        using var server = TestServer.Start(new MemoryExport(MiB), new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(200) });
        using var raw = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        raw.Connect(new UnixDomainSocketEndPoint(server.Socket));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        raw.ReceiveTimeout = (int)Deadline.TotalMilliseconds; // a server that never gives up fails the test with a SocketException
        byte[] buffer = new byte[64];
        int total = 0, n;
        // The greeting (NBDMAGIC, IHAVEOPT, flags), then end of file once the server gives up.
        while ((n = raw.Receive(buffer, total, buffer.Length - total, SocketFlags.None)) > 0)
            total += n;
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(150), "closed before the timeout: " + clock.Elapsed);
        Assert.Equal(18, total);
        Assert.Equal("NBDMAGICIHAVEOPT"u8.ToArray(), buffer[..16]);
        // (With a thread per connection the timeout shuts the socket's receive side, so the server logs "the handshake
        // ended" rather than "the handshake took longer than 00:00:00.2".)
        Assert.True(server.Log.WaitFor("closed: the handshake", Deadline), server.Log.ToString());
        // A client that negotiates in time is served.
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal(MiB, h.GetSize());
    }

    [Fact]
    public void ExportNames_SelectTheExport_AndAnUnknownNameFails()
    {
        using var server = TestServer.Start(null, new ExportSpec("one", new MemoryExport(MiB)), new ExportSpec("two", new NullExport(2 * MiB)),
            new ExportSpec("with space/and?query", new NullExport(3 * MiB)));
        foreach (var (name, size) in new[] { ("one", MiB), ("two", 2 * MiB), ("", MiB), ("with space/and?query", 3 * MiB) })
        {
            using var h = new NbdHandle();
            h.SetExportName(name);
            h.ConnectUnix(server.Socket);
            Assert.Equal(size, h.GetSize());
            using var byUri = new NbdHandle();
            byUri.ConnectUri(server.UriFor(name));
            Assert.Equal(size, byUri.GetSize());
        }
        using var unknown = new NbdHandle();
        unknown.SetExportName("three");
        Assert.ThrowsAny<NbdException>(() => unknown.ConnectUnix(server.Socket));
        Assert.Equal("3145728\n", Clients.Ok("/usr/bin/nbdinfo", "--size", server.UriFor("with space/and?query")));
    }

    private static (Socket Server, Socket Client) SocketPair()
    {
        int[] fds = new int[2];
        Assert.Equal(0, NativeSocketPair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, fds));
        return (new Socket(new SafeSocketHandle(fds[0], ownsHandle: true)), new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)));
    }

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int NativeSocketPair(int domain, int type, int protocol, [Out] int[] fds);
}
