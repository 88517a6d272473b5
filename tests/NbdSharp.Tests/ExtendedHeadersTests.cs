using System;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// Extended headers (32-byte requests and replies, 64-bit lengths). No server on Debian 12 speaks them, so
/// the scripted server does, driven through whole transfers.
/// </summary>
[Collection(nameof(SerialCollection))]
public class ExtendedHeadersTests
{
    private static ScriptedExport Export() => new() { ExtendedHeaders = true, Size = 16UL << 30 };

    /// <summary>A memory-backed server for the first 1 MiB, speaking extended headers.</summary>
    private static ScriptedServer MemoryServer(ConcurrentQueue<ScriptedRequest> seen) =>
        Scripted.Serve(async c =>
        {
            byte[] disk = new byte[1 << 20];
            while (true)
            {
                ScriptedRequest r = await c.ReadRequestAsync();
                seen.Enqueue(r);
                switch (r.Type)
                {
                    case 0:
                        await c.SendDataChunkAsync(r, r.Offset, disk.AsSpan((int)r.Offset, (int)r.Length).ToArray(), done: true);
                        break;
                    case 1:
                        r.Payload.CopyTo(disk, (int)r.Offset);
                        await c.SendNoneChunkAsync(r);
                        break;
                    case 2:
                        c.Close();
                        return;
                    case 7:
                        await c.SendBlockStatusAsync(r, 1, new[] { (6UL << 30, 0UL), (2UL << 30, 3UL) }, done: true);
                        break;
                    default:
                        await c.SendNoneChunkAsync(r);
                        break;
                }
            }
        }, Export());

    [Fact]
    public async Task Negotiated_TransfersUseExtendedFraming()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = MemoryServer(seen);
        using NbdHandle h = Scripted.Connect(server);
        Assert.True(h.GetExtendedHeadersNegotiated());
        Assert.True(h.GetStructuredRepliesNegotiated());
        byte[] data = new byte[8192];
        new Random(3).NextBytes(data);
        byte[] back = new byte[8192];
        await Scripted.WithinAsync(() =>
        {
            h.Pwrite(data, 4096);
            h.Pread(back, 4096);
            h.Trim(5UL << 30, 0);
            h.Zero(5UL << 30, 1UL << 30);
        });
        Assert.Equal(data, back);
        ScriptedRequest[] requests = seen.ToArray();
        Assert.Equal(0x20, requests[0].Flags);                // PAYLOAD_LEN set automatically on writes
        Assert.Equal(5UL << 30, requests[2].Length);          // 64-bit effect lengths
        Assert.Equal(5UL << 30, requests[3].Length);
    }

    [Fact]
    public async Task BlockStatus64_SeesWideExtents_And32BitCallbackIsTruncated()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = MemoryServer(seen);
        using NbdHandle h = Scripted.Connect(server);
        var wide = new List<NbdExtent>();
        await Scripted.WithinAsync(() => h.BlockStatus64(8UL << 30, 0, (string _, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            wide.AddRange(entries.ToArray());
            return 0;
        }));
        Assert.Equal(new[] { new NbdExtent(6UL << 30, 0), new NbdExtent(2UL << 30, 3) }, wide);

        uint[]? narrow = null;
        await Scripted.WithinAsync(() => h.BlockStatus(8UL << 30, 0, (string _, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
        {
            narrow = entries.ToArray();
            return 0;
        }));
        // libnbd: a 6 GiB extent shown to a 32-bit callback becomes 4 GiB - 64 MiB and ends the list.
        Assert.Equal(new uint[] { (uint)((4UL << 30) - (64UL << 20)), 0 }, narrow);
    }

    [Fact]
    public async Task ServerWithoutExtendedHeaders_FallsBackToStructuredReplies()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest r = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(r, r.Offset, new byte[r.Length], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.True(h.GetStructuredRepliesNegotiated());
        await Scripted.WithinAsync(() => h.Pread(new byte[512], 0));
    }

    [Fact]
    public async Task NotRequested_IsNotNegotiated()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = MemoryServer(seen);
        using NbdHandle h = Scripted.Connect(server, handle => handle.SetRequestExtendedHeaders(false));
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.True(h.GetStructuredRepliesNegotiated());
    }

    [Fact]
    public async Task ReplyOffsetNotMatchingTheRequest_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest r = await c.ReadRequestAsync();
            await c.SendChunkAsync(r.Cookie, 1, 0, [], requestOffset: r.Offset + 512);
            await c.DrainAsync();
        }, Export());
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Flush());
        Assert.Equal(Errno.EPROTO, e.Errno);
    }

    [Fact]
    public async Task SimpleReplyUnderExtendedHeaders_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest r = await c.ReadRequestAsync();
            await c.SendSimpleReplyAsync(r.Cookie);
            await c.DrainAsync();
        }, Export());
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Flush());
        Assert.Contains("invalid or unexpected reply magic 0x67446698", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Three contexts; the server honours a block status payload by answering only for the ids it names.</summary>
    private static ScriptedServer FilterServer(ConcurrentQueue<ScriptedRequest> seen, bool advertisePayload = true)
    {
        var export = new ScriptedExport
        {
            ExtendedHeaders = true,
            Size = 16UL << 30,
            Flags = (ushort)(new ScriptedExport().Flags | (advertisePayload ? 0x1000 : 0)),
        };
        export.MetaContexts["qemu:dirty-bitmap:b0"] = 7;
        export.MetaContexts["qemu:allocation-depth"] = 9;
        return Scripted.Serve(async c =>
        {
            while (true)
            {
                ScriptedRequest r = await c.ReadRequestAsync();
                seen.Enqueue(r);
                if (r.IsDisconnect)
                {
                    c.Close();
                    return;
                }
                if (r.Type != 7)
                {
                    await c.SendNoneChunkAsync(r);
                    continue;
                }
                var ids = new List<uint>();
                ulong length = r.Length;
                if (r.Payload.Length > 0)
                {
                    length = BinaryPrimitives.ReadUInt64BigEndian(r.Payload);
                    for (int at = 8; at < r.Payload.Length; at += 4)
                        ids.Add(BinaryPrimitives.ReadUInt32BigEndian(r.Payload.AsSpan(at)));
                }
                else
                {
                    ids.AddRange(c.SelectedContexts.Values);
                }
                for (int i = 0; i < ids.Count; i++)
                    await c.SendBlockStatusAsync(r, ids[i], new[] { (length, (ulong)ids[i]) }, done: i == ids.Count - 1);
            }
        }, export);
    }

    private static NbdHandle FilterClient(ScriptedServer server) => Scripted.Connect(server, h =>
    {
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.AddMetaContext("qemu:dirty-bitmap:b0");
        h.AddMetaContext(MetaContext.QemuAllocationDepth);
    });

    [Fact]
    public async Task BlockStatusFilter_SendsTheContextIds_AndOnlyThoseAreReported()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = FilterServer(seen);
        using NbdHandle h = FilterClient(server);
        Assert.True(h.CanBlockStatusPayload());
        string[] wanted = [MetaContext.QemuAllocationDepth, "qemu:dirty-bitmap:b0"];
        var reported = new List<(string, ulong, uint)>();
        Extent64Callback record = (string context, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            Assert.Equal(4096UL, offset);
            foreach (NbdExtent e in entries)
                reported.Add((context, e.Length, (uint)e.Flags));
            return 0;
        };

        await Scripted.WithinAsync(() => h.BlockStatusFilter(6UL << 30, 4096, wanted, record));
        Assert.Equal([(MetaContext.QemuAllocationDepth, 6UL << 30, 9u), ("qemu:dirty-bitmap:b0", 6UL << 30, 7u)], reported);
        ScriptedRequest request = seen.ToArray()[^1];
        Assert.Equal(0x20, request.Flags);                    // PAYLOAD_LEN, set automatically
        Assert.Equal(16UL, request.Length);                   // the header's length is the payload's
        Assert.Equal(6UL << 30, BinaryPrimitives.ReadUInt64BigEndian(request.Payload));

        // The aio and Task forms, with REQ_ONE kept.
        reported.Clear();
        int completed = -1;
        long cookie = h.AioBlockStatusFilter(4096, 4096, [MetaContext.BaseAllocation], record, (ref int error) =>
        {
            completed = error;
            return 0;
        }, CmdFlag.ReqOne);
        await Scripted.WithinAsync(() =>
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
        });
        Assert.Equal(0, completed);
        Assert.Equal([(MetaContext.BaseAllocation, 4096UL, 1u)], reported);
        Assert.Equal(0x28, seen.ToArray()[^1].Flags);

        reported.Clear();
        await h.BlockStatusFilterAsync(8192, 4096, ["qemu:dirty-bitmap:b0"], record).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([("qemu:dirty-bitmap:b0", 8192UL, 7u)], reported);

        // The plain forms still ask for every context, without a payload.
        reported.Clear();
        await Scripted.WithinAsync(() => h.BlockStatus64(4096, 4096, record));
        Assert.Equal(3, reported.Count);
        Assert.Empty(seen.ToArray()[^1].Payload);
    }

    [Fact]
    public async Task BlockStatusFilter_RefusesWhatCannotBeSent()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = FilterServer(seen);
        using NbdHandle h = FilterClient(server);
        Extent64Callback ignore = (string _, ulong _, ReadOnlySpan<NbdExtent> _, ref int _) => 0;
        NbdException unknown = Assert.Throws<NbdException>(() => h.BlockStatusFilter(4096, 0, ["qemu:dirty-bitmap:nope"], ignore));
        Assert.Equal(Errno.EINVAL, unknown.Errno);
        Assert.Contains("qemu:dirty-bitmap:nope not negotiated", unknown.Message, StringComparison.Ordinal);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.BlockStatusFilter(4096, 0, [], ignore, CmdFlag.Fua)).Errno);

        // Without auto flags and strict commands, a missing PAYLOAD_LEN is the caller's mistake.
        h.SetStrictMode(StrictFlag.Commands);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() =>
            h.BlockStatusFilter(4096, 0, [MetaContext.BaseAllocation], ignore)).Errno);
        await Scripted.WithinAsync(() => h.BlockStatusFilter(4096, 0, [MetaContext.BaseAllocation], ignore, CmdFlag.PayloadLen));
        Assert.DoesNotContain(seen, r => r.Type == 7 && r.Payload.Length == 0);
    }

    [Fact]
    public async Task BlockStatusFilter_NeedsTheServersPayloadFlag_AndExtendedHeaders()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using (var server = FilterServer(seen, advertisePayload: false))
        {
            using NbdHandle h = FilterClient(server);
            Assert.False(h.CanBlockStatusPayload());
            NbdException e = Assert.Throws<NbdException>(() =>
                h.BlockStatusFilter(4096, 0, [MetaContext.BaseAllocation], (string _, ulong _, ReadOnlySpan<NbdExtent> _, ref int _) => 0));
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("block status payload", e.Message, StringComparison.Ordinal);
        }
        await using (var server = FilterServer(seen))
        {
            using NbdHandle h = Scripted.Connect(server, handle =>
            {
                handle.SetRequestExtendedHeaders(false);
                handle.AddMetaContext(MetaContext.BaseAllocation);
            });
            Assert.False(h.CanBlockStatusPayload());
            Assert.Equal(Errno.ENOTSUP, Assert.Throws<NbdException>(() =>
                h.BlockStatusFilter(4096, 0, [MetaContext.BaseAllocation], (string _, ulong _, ReadOnlySpan<NbdExtent> _, ref int _) => 0)).Errno);
        }
        Assert.DoesNotContain(seen, r => r.Type == 7);
    }
}
