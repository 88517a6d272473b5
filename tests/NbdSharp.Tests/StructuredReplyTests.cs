using System;
using System.Linq;
using System.Collections.Generic;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>Structured reads reassembled from chunks in any order; errors with and without offsets; DF; callbacks.</summary>
[Collection(nameof(SerialCollection))]
public class StructuredReplyTests
{
    private static byte[] Pattern(int length, byte seed)
    {
        byte[] data = new byte[length];
        for (int i = 0; i < data.Length; i++)
            data[i] = (byte)(seed + i);
        return data;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ChunksOutOfOrder_WithHoles_AreReassembled(bool preadInitialize)
    {
        byte[] a = Pattern(1024, 1), c = Pattern(1024, 7);
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(r, r.Offset + 3072, c, done: false);
            await conn.SendHoleChunkAsync(r, r.Offset + 1024, 2048, done: false);
            await conn.SendDataChunkAsync(r, r.Offset, a, done: false);
            await conn.SendNoneChunkAsync(r);
            await conn.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        h.SetPreadInitialize(preadInitialize);
        byte[] buffer = new byte[4096];
        buffer.AsSpan().Fill(0xEE);
        var seen = new List<(ulong Offset, int Length, uint Status)>();
        await Scripted.WithinAsync(() => h.PreadStructured(buffer, 65536, (ReadOnlySpan<byte> sub, ulong offset, uint status, ref int error) =>
        {
            seen.Add((offset, sub.Length, status));
            return 0;
        }));
        Assert.Equal(a, buffer[..1024]);
        Assert.All(buffer[1024..3072], b => Assert.Equal(0, b));
        Assert.Equal(c, buffer[3072..]);
        Assert.Equal(new[] { (65536UL + 3072, 1024, ReadStatus.Data), (65536UL + 1024, 2048, ReadStatus.Hole), (65536UL, 1024, ReadStatus.Data) }, seen);
    }

    [Fact]
    public async Task ErrorChunk_FailsTheRead_WithTheServersErrnoAndMessage()
    {
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(r, r.Offset, new byte[256], done: false);
            await conn.SendErrorChunkAsync(r, 5, "disk on fire", done: true);
            ScriptedRequest next = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(next, next.Offset, Pattern((int)next.Length, 3), done: true);
            await conn.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = new byte[512];
        NbdException e = Scripted.Fails(() => h.Pread(buffer, 0));
        Assert.IsType<NbdServerException>(e);
        Assert.Equal(Errno.EIO, e.Errno);
        Assert.Equal("nbd_pread: read: command failed: server said: disk on fire: Input/output error", e.Message);
        // The connection survives a server error.
        await Scripted.WithinAsync(() => h.Pread(buffer, 512));
        Assert.Equal(Pattern(512, 3), buffer);
    }

    [Fact]
    public async Task ErrorOffsetChunk_ReachesTheChunkCallback()
    {
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(r, r.Offset, new byte[100], done: false);
            await conn.SendErrorChunkAsync(r, 28, "", done: true, errorOffset: r.Offset + 100);
            await conn.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        var errors = new List<(ulong Offset, int Error)>();
        NbdException e = Scripted.Fails(() => h.PreadStructured(new byte[512], 4096, (ReadOnlySpan<byte> sub, ulong offset, uint status, ref int error) =>
        {
            if (status == ReadStatus.Error)
                errors.Add((offset, error));
            return 0;
        }));
        Assert.Equal(Errno.ENOSPC, e.Errno);
        Assert.Equal(new[] { (4196UL, Errno.ENOSPC) }, errors);
    }

    [Fact]
    public async Task ChunkCallbackFailing_FailsTheReadWithItsErrno()
    {
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(r, r.Offset, new byte[r.Length], done: true);
            ScriptedRequest again = await conn.ReadRequestAsync();
            await conn.SendDataChunkAsync(again, again.Offset, new byte[again.Length], done: true);
            await conn.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.PreadStructured(new byte[512], 0, (ReadOnlySpan<byte> _, ulong _, uint _, ref int error) =>
        {
            error = Errno.EBUSY;
            return -1;
        }));
        Assert.Equal(Errno.EBUSY, e.Errno);
        NbdException thrown = Scripted.Fails(() => h.PreadStructured(new byte[512], 0, (ReadOnlySpan<byte> _, ulong _, uint _, ref int _) =>
            throw new InvalidOperationException("user bug")));
        Assert.Equal(Errno.EPROTO, thrown.Errno);
        Assert.True(h.AioIsReady());
    }

    [Fact]
    public Task DfWithTwoChunks_KillsConnection() =>
        Scripted.BadReplyKillsAsync(async (c, r) =>
            {
                await c.SendDataChunkAsync(r, r.Offset, new byte[256], done: false);
                await c.SendDataChunkAsync(r, r.Offset + 256, new byte[256], done: true);
            },
            h =>
            {
                Assert.True(h.CanDf());
                h.PreadStructured(new byte[512], 0, (ReadOnlySpan<byte> _, ulong _, uint _, ref int _) => 0, CmdFlag.Df);
            },
            "more than one chunk for a read with the DF flag", export: new ScriptedExport { Flags = 0x0001 | 0x0080 });

    [Fact]
    public Task OverlappingChunks_KillConnection() =>
        Scripted.BadReplyKillsAsync(async (c, r) =>
            {
                await c.SendDataChunkAsync(r, r.Offset, new byte[300], done: false);
                await c.SendDataChunkAsync(r, r.Offset + 200, new byte[312], done: true);
            },
            h => h.Pread(new byte[512], 0), "overlapping data it already sent");

    [Fact]
    public async Task FailedRead_LeavesTheBufferZeroed_NotStale()
    {
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendErrorChunkAsync(r, 5, "", done: true);
            await conn.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = Pattern(512, 9);
        Scripted.Fails(() => h.Pread(buffer, 0));
        Assert.All(buffer, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task SimpleReplies_PreadStructuredSeesOneDataChunk()
    {
        byte[] data = Pattern(512, 11);
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendSimpleReplyAsync(r.Cookie, 0, data);
            await conn.DrainAsync();
        }, new ScriptedExport { StructuredReplies = false });
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = new byte[512];
        int calls = 0;
        await Scripted.WithinAsync(() => h.PreadStructured(buffer, 1024, (ReadOnlySpan<byte> sub, ulong offset, uint status, ref int _) =>
        {
            calls++;
            Assert.Equal(1024UL, offset);
            Assert.Equal(ReadStatus.Data, status);
            Assert.Equal(512, sub.Length);
            return 0;
        }));
        Assert.Equal(1, calls);
        Assert.Equal(data, buffer);
    }

    /// <summary>As libnbd: the framing is intact, so only the read fails (EPROTO) and the data is not delivered.</summary>
    [Fact]
    public async Task SimpleReplyToAReadAfterStructuredReplies_FailsTheRead_AndTheConnectionLives()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest first = await c.ReadRequestAsync();
            await c.SendSimpleReplyAsync(first.Cookie, 0, Enumerable.Repeat((byte)0xAB, (int)first.Length).ToArray());
            ScriptedRequest second = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(second, second.Offset, Enumerable.Repeat((byte)7, (int)second.Length).ToArray(), done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = new byte[512];
        NbdException e = Scripted.Fails(() => h.Pread(buffer, 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("simple reply to a read", e.Message, StringComparison.Ordinal);
        Assert.All(buffer, b => Assert.Equal(0, b));
        Scripted.Within(() =>
        {
            h.Pread(buffer, 512);
            return 0;
        });
        Assert.All(buffer, b => Assert.Equal(7, b));
        Assert.False(h.AioIsDead());
    }

    [Fact]
    public Task StructuredReplyWithoutNegotiation_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendNoneChunkAsync(r),
            h => h.Flush(), "structured reply, which was not negotiated", export: new ScriptedExport { StructuredReplies = false });

    [Fact]
    public async Task BlockStatus_SeveralContexts_EachCallbackOnce()
    {
        var export = new ScriptedExport();
        export.MetaContexts["qemu:allocation-depth"] = 7;
        await using var server = Scripted.Serve(async conn =>
        {
            ScriptedRequest r = await conn.ReadRequestAsync();
            await conn.SendBlockStatusAsync(r, 7, new[] { (4096UL, 1UL), (8192UL, 0UL) }, done: false);
            await conn.SendBlockStatusAsync(r, 1, new[] { (12288UL, 0UL) }, done: true);
            await conn.DrainAsync();
        }, export);
        using NbdHandle h = Scripted.Connect(server, handle => handle.AddMetaContext(MetaContext.QemuAllocationDepth));
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        Assert.True(h.CanMetaContext(MetaContext.QemuAllocationDepth));
        var seen = new List<(string Context, uint[] Entries)>();
        await Scripted.WithinAsync(() => h.BlockStatus(12288, 0, (string context, ulong offset, ReadOnlySpan<uint> entries, ref int _) =>
        {
            seen.Add((context, entries.ToArray()));
            return 0;
        }));
        Assert.Equal(2, seen.Count);
        Assert.Equal("qemu:allocation-depth", seen[0].Context);
        Assert.Equal(new uint[] { 4096, 1, 8192, 0 }, seen[0].Entries);
        Assert.Equal("base:allocation", seen[1].Context);
        Assert.Equal(new uint[] { 12288, 0 }, seen[1].Entries);
    }
}
