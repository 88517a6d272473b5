using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// Every data command against nbdkit's plugins, data checked byte for byte, answers compared with libnbd's. The tests
/// that need only a well-behaved server run against the embedded one too (<see cref="Peer"/>).
/// </summary>
public class NbdkitTests
{
    private static byte[] RandomBytes(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public void Memory_ExportDescription_MatchesLibnbd()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Oracle.SameExport(h, Libnbd.Describe(server.Uri));
        Assert.Equal("newstyle-fixed", h.GetProtocol());
        Assert.True(h.GetStructuredRepliesNegotiated());
        Assert.False(h.GetExtendedHeadersNegotiated());
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void Memory_EverySyncCommand_DataByteForByte(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "16M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        byte[] data = RandomBytes(1 << 20, 1);
        h.Pwrite(data, 1 << 20);
        h.Pwrite(data.AsSpan(0, 4096), 0, CmdFlag.Fua);
        h.Flush();
        byte[] back = new byte[1 << 20];
        h.Pread(back, 1 << 20);
        Assert.Equal(data, back);

        h.Zero(65536, (1 << 20) + 4096);
        h.Trim(65536, (1 << 20) + 131072);
        h.Cache(1 << 20, 1 << 20);
        h.Pread(back, 1 << 20);
        Assert.Equal(data.AsSpan(0, 4096).ToArray(), back[..4096]);
        Assert.All(back[4096..(4096 + 65536)], b => Assert.Equal(0, b));
        Assert.All(back[131072..(131072 + 65536)], b => Assert.Equal(0, b));
        Assert.Equal(data[(4096 + 65536)..131072], back[(4096 + 65536)..131072]);

        // Another client (libnbd) sees what we wrote.
        JsonElement libnbd = Libnbd.Describe(server.Uri, 1 << 20, 1 << 20);
        Assert.Equal(Oracle.Sha256(h, 1 << 20, 1 << 20), libnbd.GetProperty("sha256").GetString());
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void Memory_AioCommands_WithCallbacksAndCookies(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "16M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        const int count = 64;
        byte[][] blocks = Enumerable.Range(0, count).Select(i => RandomBytes(65536, i)).ToArray();
        int completed = 0;
        var cookies = new HashSet<long>();
        for (int i = 0; i < count; i++)
        {
            cookies.Add(h.AioPwrite(blocks[i], (ulong)i * 65536, (ref int error) =>
            {
                Assert.Equal(0, error);
                completed++;
                return 1;
            }));
        }
        while (h.AioInFlight() > 0)
            h.Poll(-1);
        Assert.Equal(count, completed);
        Assert.Equal(count, cookies.Count);

        byte[][] reads = Enumerable.Range(0, count).Select(_ => new byte[65536]).ToArray();
        long[] readCookies = new long[count];
        for (int i = 0; i < count; i++)
            readCookies[i] = h.AioPread(reads[i], (ulong)i * 65536);
        for (int i = 0; i < count; i++)
        {
            while (!h.AioCommandCompleted(readCookies[i]))
                h.Poll(-1);
            Assert.Equal(blocks[i], reads[i]);
        }
        long flush = h.AioFlush();
        long zero = h.AioZero(65536, 0);
        long trim = h.AioTrim(65536, 65536);
        long cache = h.AioCache(65536, 131072);
        foreach (long cookie in new[] { flush, zero, trim, cache })
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
        }
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public async Task Memory_AsyncCommands_ManyInFlight(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "16M");
        await using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri);
        byte[][] blocks = Enumerable.Range(0, 128).Select(i => RandomBytes(32768, 100 + i)).ToArray();
        await Task.WhenAll(blocks.Select((b, i) => h.PwriteAsync(b, (ulong)i * 32768).AsTask()));
        await h.FlushAsync();
        byte[][] reads = Enumerable.Range(0, 128).Select(_ => new byte[32768]).ToArray();
        await Task.WhenAll(reads.Select((b, i) => h.PreadAsync(b, (ulong)i * 32768).AsTask()));
        for (int i = 0; i < blocks.Length; i++)
            Assert.Equal(blocks[i], reads[i]);
        await h.ZeroAsync(32768, 0);
        await h.TrimAsync(32768, 32768);
        await h.CacheAsync(32768, 65536);
        byte[] check = new byte[65536];
        await h.PreadAsync(check, 0);
        Assert.All(check, b => Assert.Equal(0, b));
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void Pattern_EveryEightBytesHoldTheirOffset(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "pattern", "1G");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.True(h.IsReadOnly());
        var random = new Random(5);
        byte[] buffer = new byte[65536];
        for (int i = 0; i < 50; i++)
        {
            ulong offset = (ulong)random.NextInt64(0, (1L << 30) - buffer.Length) & ~7UL;
            h.Pread(buffer, offset);
            for (int k = 0; k < buffer.Length; k += 8)
                Assert.Equal(offset + (ulong)k, BinaryPrimitives.ReadUInt64BigEndian(buffer.AsSpan(k)));
        }
        var e = Assert.Throws<NbdException>(() => h.Pwrite(buffer, 0));
        Assert.Equal(Errno.EPERM, e.Errno);
    }

    [Fact]
    public void SparseRandom_DataAndExtents_MatchLibnbd()
    {
        using ServerProcess server = Peers.Nbdkit("sparse-random", "64M", "seed=42", "percent=30");
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        JsonElement libnbd = Libnbd.Describe(server.Uri, 0, 64 << 20, MetaContext.BaseAllocation);
        Oracle.SameExport(h, libnbd);
        Assert.Equal(libnbd.GetProperty("sha256").GetString(), Oracle.Sha256(h, 0, 64 << 20));
        Assert.Equal(Oracle.Extents(libnbd), Oracle.Extents(h, 0, 64 << 20));
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void Memory_BlockStatus_ShowsWhatWasWritten(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "8M");
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        h.Pwrite(RandomBytes(1 << 20, 9), 2 << 20);
        var extents = Oracle.Extents(h, 0, 8 << 20);
        Assert.Equal(new[] { (2u << 20, 3u), (1u << 20, 0u), (5u << 20, 3u) }, extents);
        ulong? extentOffset = null;
        var wide = new List<NbdExtent>();
        h.BlockStatus64(8 << 20, 0, (string context, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            Assert.Equal(MetaContext.BaseAllocation, context);
            extentOffset = offset;
            wide.AddRange(entries.ToArray());
            return 0;
        });
        Assert.Equal(0UL, extentOffset);
        Assert.Equal(new NbdExtent(2UL << 20, 3), wide[0]);
        int count = 0;
        h.BlockStatus(8 << 20, 0, (string _, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
        {
            count = entries.Length / 2;
            return 0;
        }, CmdFlag.ReqOne);
        Assert.Equal(1, count);
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void Null_ReadsZeroesAndDiscardsWrites(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "null", "1G");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        byte[] data = RandomBytes(65536, 2);
        h.Pwrite(data, 1 << 29);
        h.Pread(data, 1 << 29);
        Assert.All(data, b => Assert.Equal(0, b));
    }

    [Fact]
    public void Oldstyle_Connects()
    {
        using ServerProcess server = Peers.Nbdkit("--oldstyle", "pattern", "1M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal("oldstyle", h.GetProtocol());
        Assert.False(h.GetStructuredRepliesNegotiated());
        Assert.Equal(1 << 20, h.GetSize());
        byte[] buffer = new byte[4096];
        h.Pread(buffer, 8192);
        Assert.Equal(8192UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
        Oracle.SameExport(h, Libnbd.Describe(server.Uri));
    }

    [Fact]
    public void NonFixedNewstyle_UsesExportName()
    {
        using ServerProcess server = Peers.Nbdkit("--mask-handshake=0", "pattern", "1M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal("newstyle", h.GetProtocol());
        Assert.Equal(HandshakeFlag.None, h.GetHandshakeFlags());
        byte[] buffer = new byte[512];
        h.Pread(buffer, 1024);
        Assert.Equal(1024UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void HandshakeFlagsNone_FromTheClientSide_StillWorks(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "pattern", "1M");
        using var h = new NbdHandle();
        h.SetHandshakeFlags(HandshakeFlag.None);
        h.ConnectUri(server.Uri);
        Assert.Equal("newstyle", h.GetProtocol());
        Assert.False(h.GetStructuredRepliesNegotiated());
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void StructuredRepliesNotRequested_UsesSimpleReplies(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "pattern", "1M");
        using var h = new NbdHandle();
        h.SetRequestStructuredReplies(false);
        h.ConnectUri(server.Uri);
        // As libnbd: no structured replies means no extended headers either (they imply them), even from a server
        // that offers them (the embedded one).
        Assert.True(h.GetRequestExtendedHeaders());
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.False(h.GetStructuredRepliesNegotiated());
        byte[] buffer = new byte[512];
        h.Pread(buffer, 4096);
        Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64BigEndian(buffer));
    }

    [Fact]
    public void FullInfo_GivesCanonicalNameAndDescription()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=exportname", "memory", "1M",
            "exportname=alpha", "exportdesc=fixed:the first disk", "exportname-strict=true");
        using var h = new NbdHandle();
        h.SetFullInfo(true);
        h.SetExportName("alpha");
        h.ConnectUri(server.Uri.Replace("nbd+unix:///", "nbd+unix:///alpha", StringComparison.Ordinal));
        Assert.Equal("alpha", h.GetExportName());
        Assert.Equal("the first disk", h.GetExportDescription());
        Assert.Equal("alpha", h.GetCanonicalExportName());
    }

    [Fact]
    public void UnknownExport_RefusalCarriesTheServersMessage()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=exportname", "memory", "1M",
            "exportname=alpha", "exportname-strict=true");
        using var h = new NbdHandle();
        var e = Assert.Throws<NbdServerException>(() => h.ConnectUri(server.UriFor("beta")));
        Assert.StartsWith("nbd_connect_uri: ", e.Message, StringComparison.Ordinal);
        Assert.Contains("'beta'", e.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public void BlocksizePolicy_ConstraintsAreHonoured()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=blocksize-policy", "memory", "16M",
            "blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=1M", "blocksize-error-policy=error");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Oracle.SameExport(h, Libnbd.Describe(server.Uri));
        Assert.Equal(4096, h.GetBlockSize(SizeKind.Minimum));
        Assert.Equal(1 << 20, h.GetBlockSize(SizeKind.Payload));
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Pread(new byte[512], 0)).Errno);
        // With strict mode off the server's own refusal comes back as a per-command error.
        h.SetStrictMode(StrictFlag.None);
        var e = Assert.Throws<NbdServerException>(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EINVAL, e.Errno);
        h.Pread(new byte[4096], 0);
    }
}
