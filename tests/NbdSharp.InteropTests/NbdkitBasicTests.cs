using System;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

public class NbdkitBasicTests
{
    [Fact]
    public void Connect_Memory_ReportsSizeAndFlags()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal(64L * 1024 * 1024, h.GetSize());
        Assert.False(h.IsReadOnly());
        Assert.True(h.CanFlush());
        Assert.True(h.CanTrim());
        Assert.True(h.CanZero());
        Assert.True(h.GetStructuredRepliesNegotiated());
        Assert.Equal("newstyle-fixed", h.GetProtocol());
    }

    [Fact]
    public void Pwrite_ThenPread_ReturnsSameBytes()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        byte[] data = new byte[65536];
        new Random(1).NextBytes(data);
        h.Pwrite(data, 4096);
        byte[] back = new byte[65536];
        h.Pread(back, 4096);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task PreadAsync_Pattern_ReturnsOffsets()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "1M");
        await using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri);
        byte[] buf = new byte[4096];
        await h.PreadAsync(buf, 8192);
        Assert.Equal(8192UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(buf));
    }
}
