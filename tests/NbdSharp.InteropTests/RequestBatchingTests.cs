using System;
using System.Buffers.Binary;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// Requests that completion callbacks issue while the event loop processes a batch of replies go out together when
/// the batch ends: one send, so one wake-up of the server, for them all (what nbdcopy's next reads are).
/// </summary>
public class RequestBatchingTests
{
    private const int Reads = 8;

    [Fact]
    public async Task ReadsIssuedByCallbacks_OnAnotherHandle_GoOutInOneSend()
    {
        var firstRound = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var secondRound = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            foreach (TaskCompletionSource round in new[] { firstRound, secondRound })
            {
                // The requests stay unread in the socket until the test has looked at them.
                await round.Task;
                for (int i = 0; i < Reads; i++)
                {
                    ScriptedRequest request = await c.ReadRequestAsync();
                    byte[] data = new byte[request.Length];
                    BinaryPrimitives.WriteUInt64BigEndian(data, request.Offset);
                    await c.SendDataChunkAsync(request, request.Offset, data, done: true);
                }
            }
            await c.DrainAsync();
        });
        using ServerProcess nbdkit = Peers.Nbdkit("pattern", "1M");
        using var source = new NbdHandle();
        source.ConnectUnix(nbdkit.Socket);
        using var target = new NbdHandle();
        target.ConnectUri(scripted.Uri);
        int fd = target.AioGetFd();

        // Issued one by one from this thread, each request is a send of its own: as many socket buffers queued.
        var buffers = new byte[2 * Reads][];
        for (int i = 0; i < Reads; i++)
            target.AioPread(buffers[i] = new byte[512], (ulong)i * 4096);
        int apart = Native.UnreadByPeer(fd);
        firstRound.SetResult();
        while (target.AioInFlight() > 0)
            target.Poll(10_000);

        // Issued by a completion callback of the other handle, inside Poll: sent when its batch ends, in one send.
        byte[] trigger = new byte[512];
        long cookie = source.AioPread(trigger, 0, (ref int _) =>
        {
            for (int i = Reads; i < 2 * Reads; i++)
                target.AioPread(buffers[i] = new byte[512], (ulong)i * 4096);
            return 1;
        });
        while (source.AioInFlight() > 0)
            source.Poll(10_000);
        Assert.Equal(Reads, (int)target.AioInFlight());
        int together = Native.UnreadByPeer(fd);
        secondRound.SetResult();
        while (target.AioInFlight() > 0)
            target.Poll(10_000);

        // The kernel counts each queued buffer's overhead (768 bytes here for 28 bytes of request): eight sends queue
        // several times what one send of the same bytes does.
        Assert.True(apart > 0 && together > 0, $"apart {apart}, together {together}");
        Assert.True(together * 2 < apart, $"one send queued {together} bytes, eight sends {apart}");
        for (int i = 0; i < 2 * Reads; i++)
            Assert.Equal((ulong)i * 4096, BinaryPrimitives.ReadUInt64BigEndian(buffers[i]));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(trigger));
    }

    [Fact]
    public async Task ManyReadsIssuedByACallback_FillTheSocket_AndTheRestFollowsInOrder()
    {
        // Far more than the socket holds: the batch's send stops when it is full, and the rest goes out as the
        // server reads (sixteen headers per send, so a send may also stop between two of them).
        const int count = 40_000;
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            for (int i = 0; i < count; i++)
            {
                ScriptedRequest request = await c.ReadRequestAsync();
                Assert.True(request.IsRead && request.Offset == (ulong)i * 8 && request.Length == 8, $"request {i}: {request}");
                byte[] data = new byte[8];
                BinaryPrimitives.WriteUInt64BigEndian(data, request.Offset);
                await c.SendDataChunkAsync(request, request.Offset, data, done: true);
            }
            await c.DrainAsync();
        });
        using ServerProcess nbdkit = Peers.Nbdkit("pattern", "1M");
        using var source = new NbdHandle();
        source.ConnectUnix(nbdkit.Socket);
        using var target = new NbdHandle();
        target.ConnectUri(scripted.Uri);

        byte[] results = new byte[count * 8];
        int wrong = 0;
        source.AioPread(new byte[512], 0, (ref int _) =>
        {
            for (int i = 0; i < count; i++)
                target.AioPread(results.AsMemory(i * 8, 8), (ulong)i * 8);
            return 1;
        });
        while (source.AioInFlight() > 0)
            source.Poll(10_000);
        Assert.True(target.AioGetDirection().HasFlag(AioDirection.Write), "the socket took every request at once");
        while (target.AioInFlight() > 0)
            Assert.Equal(1, target.Poll(10_000));
        for (int i = 0; i < count; i++)
        {
            if (BinaryPrimitives.ReadUInt64BigEndian(results.AsSpan(i * 8)) != (ulong)i * 8)
                wrong++;
        }
        Assert.Equal(0, wrong);
        Assert.False(scripted.Completion.IsFaulted, scripted.Completion.Exception?.ToString());
    }
}
