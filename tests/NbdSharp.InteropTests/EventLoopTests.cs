using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipes;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// libnbd's event-loop calls with an outside loop driving the handle: the socket from AioGetFd watched with
/// poll(2), AioNotifyRead/AioNotifyWrite, AioGetDirection, Poll2 with an extra descriptor; and the remaining aio
/// data commands.
/// </summary>
public class EventLoopTests
{
    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void OutsideLoop_WatchesTheSocket_AndNotifies(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "pattern", "1M");
        using var h = new NbdHandle();
        Assert.Equal(AioDirection.None, h.AioGetDirection());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.AioGetFd()).Errno);
        h.ConnectUnix(server.Socket);

        int fd = h.AioGetFd();
        Assert.StartsWith("socket:", new FileInfo($"/proc/self/fd/{fd}").LinkTarget, StringComparison.Ordinal);
        Assert.Equal(AioDirection.Read, h.AioGetDirection() & AioDirection.Read);

        var buffers = new List<byte[]>();
        var cookies = new List<long>();
        for (int i = 0; i < 8; i++)
        {
            byte[] buffer = new byte[4096];
            buffers.Add(buffer);
            cookies.Add(h.AioPread(buffer, (ulong)i * 65536));
        }
        int rounds = 0;
        while (h.AioInFlight() > 0)
        {
            Assert.True(++rounds < 10_000, "the outside loop made no progress");
            AioDirection direction = h.AioGetDirection();
            if ((direction & AioDirection.Read) != 0 && Native.WaitReadable(fd, 1000))
                h.AioNotifyRead();
            if ((direction & AioDirection.Write) != 0)
                h.AioNotifyWrite();
        }
        for (int i = 0; i < 8; i++)
        {
            Assert.True(h.AioCommandCompleted(cookies[i]));
            Assert.Equal((ulong)i * 65536, BinaryPrimitives.ReadUInt64BigEndian(buffers[i]));
        }
        Assert.True(h.GetHandleSize() > 0);
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public async Task Poll2_WakesForTheExtraDescriptor_AndTimesOut(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "1M");
        using var h = new NbdHandle();
        h.ConnectUnix(server.Socket);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        using var reader = new AnonymousPipeClientStream(PipeDirection.In, pipe.ClientSafePipeHandle);
        int fd = (int)reader.SafePipeHandle.DangerousGetHandle();

        Assert.Equal(0, h.Poll2(fd, 30));
        // Written a moment later so that Poll2 is usually already waiting; were it not, the descriptor would be
        // readable when it starts, and the answer is the same.
        Task wake = Task.Run(async () =>
        {
            await Task.Delay(50);
            pipe.WriteByte(1);
            pipe.Flush();
        });
        Assert.Equal(1, h.Poll2(fd, 10_000));
        await wake;

        // A command completing also ends the wait, with the extra descriptor still readable or not.
        Assert.Equal(1, reader.ReadByte());
        long cookie = h.AioFlush();
        while (!h.AioCommandCompleted(cookie))
            h.Poll2(fd, 10_000);
        Assert.Equal(0, h.Poll2(-1, 0));
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void AioBlockStatus_And64_And_AioPreadStructured(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "1M");
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUnix(server.Socket);
        byte[] data = new byte[65536];
        new Random(5).NextBytes(data);
        h.Pwrite(data, 0);

        var narrow = new List<(uint, uint)>();
        long c1 = h.AioBlockStatus(1 << 20, 0, (string context, ulong offset, ReadOnlySpan<uint> entries, ref int _) =>
        {
            Assert.Equal(MetaContext.BaseAllocation, context);
            Assert.Equal(0UL, offset);
            for (int i = 0; i + 1 < entries.Length; i += 2)
                narrow.Add((entries[i], entries[i + 1]));
            return 0;
        });
        var wide = new List<NbdExtent>();
        long c2 = h.AioBlockStatus64(1 << 20, 0, (string _, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
        {
            wide.AddRange(entries.ToArray());
            return 0;
        });
        byte[] back = new byte[128 * 1024];
        var chunks = new List<(ulong, uint)>();
        long c3 = h.AioPreadStructured(back, 0, (ReadOnlySpan<byte> _, ulong offset, uint status, ref int _) =>
        {
            chunks.Add((offset, status));
            return 0;
        });
        foreach (long cookie in new[] { c1, c2, c3 })
        {
            while (!h.AioCommandCompleted(cookie))
                h.Poll(-1);
        }
        Assert.Equal((65536u, 0u), narrow[0]);
        Assert.Equal(new NbdExtent(65536, 0), wide[0]);
        Assert.Equal(narrow.Count, wide.Count);
        Assert.NotEmpty(chunks);
        Assert.Equal(data, back[..65536]);
        Assert.All(back[65536..], b => Assert.Equal(0, b));
    }
}
