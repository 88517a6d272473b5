using System;
using System.Collections.Concurrent;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>What the client refuses before anything is sent, with libnbd's errno, and what it sends once strict mode is off.</summary>
[Collection(nameof(SerialCollection))]
public class StrictModeTests
{
    private const ushort ReadOnlyFlags = 0x0001 | 0x0002 | 0x0004;

    /// <summary>A server that answers every request with success (and zeroes for reads), recording them.</summary>
    private static ScriptedServer EchoServer(ConcurrentQueue<ScriptedRequest> seen, ScriptedExport export) =>
        Scripted.Serve(async c =>
        {
            while (true)
            {
                ScriptedRequest request = await c.ReadRequestAsync();
                seen.Enqueue(request);
                if (request.IsDisconnect)
                    break;
                if (request.IsRead)
                {
                    if (c.Structured && request.Length == 0)
                        await c.SendNoneChunkAsync(request);
                    else if (c.Structured)
                        await c.SendDataChunkAsync(request, request.Offset, new byte[request.Length], done: true);
                    else
                        await c.SendSimpleReplyAsync(request.Cookie, 0, new byte[request.Length]);
                }
                else if (request.Type == 7)
                {
                    await c.SendBlockStatusAsync(request, 1, new[] { (request.Length, 0UL) }, done: true);
                }
                else
                {
                    await c.SendSimpleReplyAsync(request.Cookie);
                }
            }
            c.Close();
        }, export);

    private static int Errno(Action action) => Assert.Throws<NbdException>(action).Errno;

    [Fact]
    public async Task Refusals_MatchLibnbd()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        var export = new ScriptedExport { Size = 1 << 20, BlockSize = (512, 4096, 65536) };
        await using var server = EchoServer(seen, export);
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = new byte[1024];

        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(buffer, 1 << 20)));              // out of bounds: read
        Assert.Equal(NbdSharp.Errno.ENOSPC, Errno(() => h.Pwrite(buffer, 1 << 20)));             // out of bounds: write
        Assert.Equal(NbdSharp.Errno.ENOSPC, Errno(() => h.Trim(1024, (1 << 20) - 512)));          // out of bounds: trim
        Assert.Equal(NbdSharp.Errno.ENOSPC, Errno(() => h.Zero(1024, ulong.MaxValue - 100)));    // out of bounds, no overflow
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Cache(1024, 1 << 20)));                // out of bounds: cache
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(Array.Empty<byte>(), 0)));       // zero size
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(new byte[100], 0)));             // unaligned length
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(buffer, 100)));                   // unaligned offset
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(buffer, 0, CmdFlag.Fua)));        // flag pread does not take
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Zero(1024, 0, CmdFlag.Df)));            // flag zero does not take
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.PreadStructured(buffer, 0, (ReadOnlySpan<byte> _, ulong _, uint _, ref int _) => 0, CmdFlag.Df))); // no DF advertised
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Pread(buffer, 0, (CmdFlag)0x10000)));   // beyond 16 bits

        await Scripted.WithinAsync(() => h.Shutdown());
        await server.Completion.WaitAsync(Scripted.Deadline);
        Assert.True(Assert.Single(seen).IsDisconnect);
    }

    [Fact]
    public async Task PayloadMaximum_IsTheServerMaximumClampedTo1MiB()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport { Size = 64 << 20, BlockSize = (512, 4096, 65536) });
        using NbdHandle h = Scripted.Connect(server);
        Assert.Equal(512, h.GetBlockSize(SizeKind.Minimum));
        Assert.Equal(4096, h.GetBlockSize(SizeKind.Preferred));
        Assert.Equal(65536, h.GetBlockSize(SizeKind.Maximum));
        Assert.Equal(1 << 20, h.GetBlockSize(SizeKind.Payload));
        h.Pwrite(new byte[1 << 20], 0);
        Assert.Equal(NbdSharp.Errno.ERANGE, Errno(() => h.Pwrite(new byte[(1 << 20) + 512], 0)));
    }

    [Fact]
    public async Task ReadOnlyExport_RefusesWritesWithEperm()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport { Flags = ReadOnlyFlags });
        using NbdHandle h = Scripted.Connect(server);
        Assert.True(h.IsReadOnly());
        Assert.Equal(NbdSharp.Errno.EPERM, Errno(() => h.Pwrite(new byte[512], 0)));
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Trim(512, 0)));     // trim not advertised comes first
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Zero(512, 0)));
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.Cache(512, 0)));
        h.Flush();
    }

    [Fact]
    public async Task StrictModeOff_SendsWhatTheCallerAsks()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport { Size = 1 << 20, Flags = ReadOnlyFlags });
        using NbdHandle h = Scripted.Connect(server);
        h.SetStrictMode(StrictFlag.None);
        await Scripted.WithinAsync(() =>
        {
            h.Pwrite(new byte[512], 2 << 20);
            h.Trim(512, 0, CmdFlag.Fua);
            h.Pread(Array.Empty<byte>(), 0);
            h.Pread(new byte[512], 0, CmdFlag.Df | CmdFlag.ReqOne);
        });
        ScriptedRequest[] requests = seen.ToArray();
        Assert.Equal(4, requests.Length);
        Assert.Equal((ushort)1, requests[0].Type);
        Assert.Equal(2UL << 20, requests[0].Offset);
        Assert.Equal((ushort)4, requests[1].Type);
        Assert.Equal((ushort)1, requests[1].Flags);
        Assert.Equal(0UL, requests[2].Length);
        Assert.Equal((ushort)(4 | 8), requests[3].Flags);
    }

    [Fact]
    public async Task BlockStatus_WithoutNegotiatedContexts_IsEnotsup()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport());
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        var e = Assert.Throws<NbdException>(() => h.BlockStatus(512, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0));
        Assert.Equal(NbdSharp.Errno.ENOTSUP, e.Errno);
        Assert.Contains("did not negotiate any metadata contexts", e.Message, StringComparison.Ordinal);
        Assert.False(h.CanMetaContext(MetaContext.BaseAllocation));
    }

    [Fact]
    public async Task BlockStatus_WithoutStructuredReplies_IsEnotsup()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport { StructuredReplies = false });
        using NbdHandle h = Scripted.Connect(server);
        Assert.False(h.GetStructuredRepliesNegotiated());
        var e = Assert.Throws<NbdException>(() => h.BlockStatus(512, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0));
        Assert.Equal(NbdSharp.Errno.ENOTSUP, e.Errno);
    }

    [Fact]
    public async Task CommandsAfterAioDisconnect_AreEinval()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = EchoServer(seen, new ScriptedExport());
        using NbdHandle h = Scripted.Connect(server);
        h.AioDisconnect();
        var e = Assert.Throws<NbdException>(() => h.Flush());
        Assert.Equal(NbdSharp.Errno.EINVAL, e.Errno);
        Assert.Contains("cannot request more commands after NBD_CMD_DISC", e.Message, StringComparison.Ordinal);
        Assert.Equal(NbdSharp.Errno.EINVAL, Errno(() => h.AioDisconnect()));
        await Scripted.WithinAsync(() =>
        {
            while (!h.AioIsClosed())
                h.Poll(-1);
        });
        Assert.True(h.AioIsClosed());
    }
}
