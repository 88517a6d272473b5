using System;
using System.IO;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

public class NbdStreamTests
{
    [Theory]
    [InlineData(false, Peer.Nbdkit)]
    [InlineData(true, Peer.Nbdkit)]
    [InlineData(false, Peer.Embedded)]
    public async Task RandomReadsAndWrites_MatchAMemoryModel(bool minimumBlockSize, Peer peer)
    {
        using ServerProcess? nbdkit = minimumBlockSize
            ? Peers.Nbdkit("--filter=blocksize-policy", "memory", "4M", "blocksize-minimum=4096", "blocksize-preferred=4096",
                "blocksize-maximum=65536", "blocksize-error-policy=error")
            : null;
        using WellBehavedServer? plain = minimumBlockSize ? null : WellBehavedServer.Start(peer, "memory", "4M");
        using var h = new NbdHandle();
        h.ConnectUri(nbdkit?.Uri ?? plain!.Uri);
        await using var stream = new NbdStream(h);
        var model = new MemoryStream(new byte[4 << 20]);
        Assert.Equal(model.Length, stream.Length);
        Assert.True(stream.CanSeek && stream.CanRead && stream.CanWrite);
        var random = new Random(minimumBlockSize ? 1 : 2);
        for (int i = 0; i < 200; i++)
        {
            long position = random.NextInt64(0, stream.Length - 1);
            int length = random.Next(1, 200_000);
            byte[] data = new byte[length];
            stream.Position = model.Position = position;
            if (random.Next(2) == 0)
            {
                random.NextBytes(data);
                int fits = (int)Math.Min(length, stream.Length - position);
                if (i % 2 == 0)
                    stream.Write(data, 0, fits);
                else
                    await stream.WriteAsync(data.AsMemory(0, fits));
                model.Write(data, 0, fits);
            }
            else
            {
                byte[] expected = new byte[length];
                int read = i % 2 == 0 ? stream.Read(data, 0, length) : await stream.ReadAsync(data);
                int modelRead = model.Read(expected, 0, length);
                Assert.Equal(modelRead, read);
                Assert.Equal(expected, data);
            }
            Assert.Equal(model.Position, stream.Position);
        }
        stream.Flush();
        stream.Seek(0, SeekOrigin.Begin);
        var copy = new MemoryStream();
        await stream.CopyToAsync(copy);
        Assert.Equal(model.ToArray(), copy.ToArray());
        Assert.Throws<NotSupportedException>(() => stream.SetLength(1));
        Assert.Equal(0, stream.Read(new byte[10], 0, 10));
    }

    [Fact]
    public void ReadOnlyExport_IsNotWritable()
    {
        using ServerProcess server = Peers.Nbdkit("pattern", "1M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        using var stream = new NbdStream(h, ownsHandle: true);
        Assert.False(stream.CanWrite);
        Assert.Throws<NbdException>(() => stream.Write(new byte[512], 0, 512));
    }
}
