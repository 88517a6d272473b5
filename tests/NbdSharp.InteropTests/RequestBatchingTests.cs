using System;
using System.Buffers.Binary;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// <see cref="NbdHandle.BatchRequests"/>: the aio requests issued in the scope, by completion callbacks too, go out
/// together when it ends (one send, so one wake-up of the server, for those without a payload), where outside one they
/// go out at once, as libnbd's do.
/// </summary>
public class RequestBatchingTests
{
    private const int Reads = 8;

    [Fact]
    public async Task ReadsIssuedByCallbacksInABatch_GoOutInOneSend()
    {
        TaskCompletionSource firstRound = Signal(), secondRound = Signal();
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            TaskCompletionSource[] rounds = [firstRound, secondRound];
            for (int round = 0; round < rounds.Length; round++)
            {
                // The requests stay unread in the socket until the test has looked at them.
                await rounds[round].Task;
                await AnswerReads(c, Reads, (ulong)(round * Reads * 4096), 4096);
            }
            await c.DrainAsync();
        });
        using var pair = new HandlePair(scripted);
        NbdHandle target = pair.Target;
        int fd = target.AioGetFd();

        // Issued one by one from this thread, each request is a send of its own: as many socket buffers queued.
        var buffers = new byte[2 * Reads][];
        for (int i = 0; i < Reads; i++)
            target.AioPread(buffers[i] = new byte[512], (ulong)i * 4096);
        int apart = Native.UnreadByPeer(fd);
        firstRound.SetResult();
        PollUntilDone(target);

        // Issued by a completion callback of the other handle inside a batch: held back until it ends, then one send.
        byte[] trigger = pair.OnSourceRead(() =>
        {
            for (int i = Reads; i < 2 * Reads; i++)
                target.AioPread(buffers[i] = new byte[512], (ulong)i * 4096);
        });
        using (RequestBatch batch = NbdHandle.BatchRequests())
        {
            PollUntilDone(pair.Source);
            Assert.Equal(Reads, (int)target.AioInFlight());
            Assert.Equal(0, Native.UnreadByPeer(fd));
            Assert.True(target.AioGetDirection().HasFlag(AioDirection.Write));
        }
        int together = Native.UnreadByPeer(fd);
        secondRound.SetResult();
        PollUntilDone(target);

        // The kernel counts each queued buffer's overhead (768 bytes here for 28 bytes of request): eight sends queue
        // several times what one send of the same bytes does.
        Assert.True(apart > 0 && together > 0, $"apart {apart}, together {together}");
        Assert.True(together * 2 < apart, $"one send queued {together} bytes, eight sends {apart}");
        for (int i = 0; i < 2 * Reads; i++)
            Assert.Equal((ulong)i * 4096, BinaryPrimitives.ReadUInt64BigEndian(buffers[i]));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(trigger));
    }

    [Fact]
    public async Task ManyReadsHeldBackByABatch_FillTheSocket_AndTheRestFollowsInOrder()
    {
        // Far more than the socket holds: the batch's send stops when it is full, and the rest goes out as the
        // server reads (sixteen headers per send, so a send may also stop between two of them).
        const int count = 40_000;
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            await AnswerReads(c, count, 0, 8);
            await c.DrainAsync();
        });
        using var pair = new HandlePair(scripted);
        NbdHandle target = pair.Target;
        byte[] results = new byte[count * 8];
        pair.OnSourceRead(() =>
        {
            for (int i = 0; i < count; i++)
                target.AioPread(results.AsMemory(i * 8, 8), (ulong)i * 8);
        });
        using (RequestBatch batch = NbdHandle.BatchRequests())
            PollUntilDone(pair.Source);
        Assert.True(target.AioGetDirection().HasFlag(AioDirection.Write), "the socket took every request at once");
        PollUntilDone(target);
        int wrong = 0;
        for (int i = 0; i < count; i++)
        {
            if (BinaryPrimitives.ReadUInt64BigEndian(results.AsSpan(i * 8)) != (ulong)i * 8)
                wrong++;
        }
        Assert.Equal(0, wrong);
        Assert.False(scripted.Completion.IsFaulted, scripted.Completion.Exception?.ToString());
    }

    [Fact]
    public async Task OutsideABatch_ACallbacksRequestOnAnotherHandle_IsSentAtOnce()
    {
        // As libnbd: a callback may issue a request on another handle and then wait for it while the other handle is
        // driven elsewhere, so the request must be on its way when the call returns.
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            await c.DrainAsync();
        });
        using var pair = new HandlePair(scripted);
        bool? sentAtOnce = null;
        pair.OnSourceRead(() =>
        {
            pair.Target.AioPread(new byte[512], 0);
            sentAtOnce = !pair.Target.AioGetDirection().HasFlag(AioDirection.Write);
        });
        PollUntilDone(pair.Source);
        Assert.True(sentAtOnce);
        Assert.False(pair.Target.AioGetDirection().HasFlag(AioDirection.Write));
    }

    [Fact]
    public async Task AioNotifyRead_OnAResetConnection_FailsTheCommandsInFlight()
    {
        TaskCompletionSource close = Signal(), closed = Signal();
        await using var scripted = ScriptedServer.Start(async c =>
        {
            await c.NegotiateAsync(new ScriptedExport());
            // The client's request is left unread: once the socket is closed, the client's next receive fails with
            // ECONNRESET (not an end of stream).
            await close.Task;
            c.Close();
            closed.SetResult();
        });
        using var h = new NbdHandle();
        h.ConnectUri(scripted.Uri);
        int fd = h.AioGetFd();
        int error = 0;
        h.AioPread(new byte[512], 0, (ref int e) =>
        {
            error = e;
            return 1;
        });
        close.SetResult();
        await closed.Task;
        for (int round = 0; round < 100 && !h.AioIsDead(); round++)
        {
            if (Native.WaitReadable(fd, 1000))
                h.AioNotifyRead();
        }
        Assert.True(h.AioIsDead());
        Assert.Equal(0, (int)h.AioInFlight());
        Assert.NotEqual(0, error);
    }

    private static TaskCompletionSource Signal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Answers <paramref name="count"/> reads, which must come in order at <paramref name="step"/>-byte
    /// strides from <paramref name="first"/>, each with its offset in its first eight bytes.</summary>
    private static async Task AnswerReads(ScriptedConnection c, int count, ulong first, ulong step)
    {
        for (int i = 0; i < count; i++)
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            Assert.True(request.IsRead && request.Offset == first + ((ulong)i * step), $"request {i}: {request}");
            byte[] data = new byte[request.Length];
            BinaryPrimitives.WriteUInt64BigEndian(data, request.Offset);
            await c.SendDataChunkAsync(request, request.Offset, data, done: true);
        }
    }

    private static void PollUntilDone(NbdHandle h)
    {
        while (h.AioInFlight() > 0)
            Assert.Equal(1, h.Poll(10_000));
    }

    /// <summary>A source handle on nbdkit, whose read's completion callback issues the requests, and a target
    /// handle on the scripted server, which looks at how they arrive.</summary>
    private sealed class HandlePair : IDisposable
    {
        private readonly ServerProcess _nbdkit = Peers.Nbdkit("pattern", "1M");

        public HandlePair(ScriptedServer scripted)
        {
            Source.ConnectUnix(_nbdkit.Socket);
            Target.ConnectUri(scripted.Uri);
        }

        public NbdHandle Source { get; } = new();

        public NbdHandle Target { get; } = new();

        /// <summary>Issues a read on the source whose completion callback runs <paramref name="issue"/>; returns its buffer.</summary>
        public byte[] OnSourceRead(Action issue)
        {
            byte[] buffer = new byte[512];
            Source.AioPread(buffer, 0, (ref int _) =>
            {
                issue();
                return 1;
            });
            return buffer;
        }

        public void Dispose()
        {
            Target.Dispose();
            Source.Dispose();
            _nbdkit.Dispose();
        }
    }
}
