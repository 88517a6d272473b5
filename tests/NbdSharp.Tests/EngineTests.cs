using System;
using System.Collections.Concurrent;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>The command engine's life cycle: who reads, cancellation, disposal, re-entrancy, statistics.</summary>
[Collection(nameof(SerialCollection))]
public class EngineTests
{
    /// <summary>Answers every request after <paramref name="delayMs"/>, reads with a byte pattern; records what it saw.</summary>
    private static ScriptedServer Responder(ConcurrentQueue<ScriptedRequest> seen, int delayMs = 0) =>
        Scripted.Serve(async c =>
        {
            while (true)
            {
                ScriptedRequest r = await c.ReadRequestAsync();
                seen.Enqueue(r);
                if (r.IsDisconnect)
                {
                    await c.DrainAsync();
                    return;
                }
                if (delayMs > 0)
                    await Task.Delay(delayMs);
                if (r.IsRead)
                {
                    byte[] data = new byte[r.Length];
                    data.AsSpan().Fill(0x5A);
                    await c.SendDataChunkAsync(r, r.Offset, data, done: true);
                }
                else
                {
                    await c.SendSimpleReplyAsync(r.Cookie);
                }
            }
        });

    /// <summary>
    /// A Task-based write issued from an aio completion callback while the server reads nothing more: the socket takes
    /// part of it and the rest stays queued (a callback never waits). When the server reads again, the handle's reader
    /// thread, waiting for the reply, must send that rest; a reader that only waited for replies would wait forever,
    /// and so would the server, for the rest of the write.
    /// </summary>
    [Fact]
    public async Task RequestLeftQueuedByACallback_IsSentByTheReaderThatWaitsForItsReply()
    {
        const int size = 4 << 20;
        byte[] payload = new byte[size];
        new Random(3).NextBytes(payload);
        byte[]? received = null;
        var issued = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using ScriptedServer server = Scripted.Serve(async c =>
        {
            ScriptedRequest read = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(read, read.Offset, new byte[read.Length], done: true);
            // The server reads nothing until the callback has issued the write, so that it finds the socket full.
            await issued.Task.WaitAsync(Scripted.Deadline);
            ScriptedRequest write = await c.ReadRequestAsync();
            received = write.Payload;
            await c.SendSimpleReplyAsync(write.Cookie);
            await c.DrainAsync();
        }, new ScriptedExport { Size = 16 << 20 });
        using NbdHandle h = Scripted.Connect(server);
        Task? write = null;
        h.AioPread(new byte[4096], 0, (ref int _) =>
        {
            write = h.PwriteAsync(payload, 0).AsTask();
            issued.TrySetResult();
            return 1;
        });
        DateTime until = DateTime.UtcNow + Scripted.Deadline;
        while (write == null)
        {
            Assert.True(DateTime.UtcNow < until, "the read did not complete");
            h.Poll(1000);
        }
        await write.WaitAsync(Scripted.Deadline);
        Assert.Equal(payload, received);
    }

    /// <summary>
    /// A synchronous caller queued to read, whose reply the reading thread reads for it, must leave the queue when it
    /// returns: its pooled command, reused for a Task-based read, was otherwise handed the reader role later, which
    /// nobody took, and the Task-based read waited forever with its reply already received (seen over the portable data
    /// path in ConcurrencyTests.ManyThreads_SyncAioAndAsyncTogether_OnOneHandle).
    /// </summary>
    [Fact]
    public async Task SyncWaiterAnsweredByTheReader_LeavesNoHandOffToItsReusedCommand()
    {
        var answerSecond = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using ScriptedServer server = Scripted.Serve(async c =>
        {
            ScriptedRequest first = await c.ReadRequestAsync();
            ScriptedRequest second = await c.ReadRequestAsync();
            await answerSecond.Task;
            await c.SendDataChunkAsync(second, second.Offset, new byte[second.Length], done: true);
            ScriptedRequest third = await c.ReadRequestAsync();
            // Both at once: the first caller stops reading after its own reply, and the third's is left for whoever
            // the role goes to.
            await c.SendDataChunkAsync(first, first.Offset, new byte[first.Length], done: true);
            await c.SendDataChunkAsync(third, third.Offset, new byte[third.Length], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        byte[] one = new byte[4096], two = new byte[4096], three = new byte[4096];
        // The first caller takes the reader role and waits in it for its reply.
        Task firstCall = Scripted.WithinAsync(() => h.Pread(one, 0));
        Assert.True(SpinWait.SpinUntil(() => h.ReaderRoleForTests.Taken, Scripted.Deadline));
        // The second queues as a volunteer; the first caller reads its reply for it.
        Task secondCall = Scripted.WithinAsync(() => h.Pread(two, 4096));
        Assert.True(SpinWait.SpinUntil(() => h.ReaderRoleForTests.Volunteers == 1, Scripted.Deadline));
        answerSecond.SetResult();
        await secondCall;
        Assert.Equal(0, h.ReaderRoleForTests.Volunteers);
        // The Task-based read reuses the second caller's command; when the first caller leaves the role, somebody
        // must take it to read the third reply.
        await h.PreadAsync(three, 8192).AsTask().WaitAsync(Scripted.Deadline);
        await firstCall;
    }

    [Fact]
    public async Task Poll_AfterAnotherThreadCompletedTheLastCommand_ReturnsInsteadOfWaiting()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        using NbdHandle h = Scripted.Connect(server);
        int polled = Scripted.Within(() =>
        {
            int completed = 0;
            h.AioPread(new byte[512], 0, (ref int _) =>
            {
                Volatile.Write(ref completed, 1);
                return 1;
            });
            // A Task-based command wakes the handle's reader thread, which also completes the aio read.
            h.PreadAsync(new byte[512], 512).AsTask().Wait(Scripted.Deadline);
            SpinWait.SpinUntil(() => Volatile.Read(ref completed) == 1, Scripted.Deadline);
            // The classic loop checked before the completion and polls after it: Poll must not wait for a
            // reply that has already been read.
            return h.Poll(-1);
        });
        Assert.Equal(1, polled);
    }

    [Fact]
    public async Task Dispose_SendsDisconnect()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        NbdHandle h = Scripted.Connect(server);
        h.Flush();
        h.Dispose();
        await server.Completion.WaitAsync(Scripted.Deadline);
        Assert.Collection(seen, r => Assert.Equal((ushort)3, r.Type), r => Assert.True(r.IsDisconnect));
        Assert.Throws<ObjectDisposedException>(() => h.Flush());
    }

    [Fact]
    public async Task Dispose_WithCommandsInFlight_CompletesThemWithEnotconn()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen, delayMs: 5000);
        NbdHandle h = Scripted.Connect(server);
        Task read = h.PreadAsync(new byte[512], 0).AsTask();
        int error = 0, calls = 0;
        h.AioFlush((ref int e) =>
        {
            calls++;
            error = e;
            return 1;
        });
        h.Dispose();
        var failure = await Assert.ThrowsAsync<NbdConnectionException>(() => read.WaitAsync(Scripted.Deadline));
        Assert.Equal(Errno.ENOTCONN, failure.Errno);
        Assert.Equal(1, calls);
        Assert.Equal(Errno.ENOTCONN, error);
    }

    [Fact]
    public async Task CancelledRead_StopsWaiting_AndTheLateReplyNeverTouchesTheBuffer()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen, delayMs: 300);
        using NbdHandle h = Scripted.Connect(server);
        h.SetPreadInitialize(false);
        byte[] buffer = new byte[4096];
        buffer.AsSpan().Fill(0x11);
        using var cts = new CancellationTokenSource();
        Task read = h.PreadAsync(buffer, 0, cancellationToken: cts.Token).AsTask();
        // Cancelled while the server holds the reply back (it waits 300 ms after reading the request).
        Assert.True(SpinWait.SpinUntil(() => !seen.IsEmpty, Scripted.Deadline));
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(Scripted.Deadline));
        // The reply still arrives; a later command proves it was drained and the connection is in sync.
        byte[] other = new byte[512];
        await h.PreadAsync(other, 8192).AsTask().WaitAsync(Scripted.Deadline);
        Assert.All(other, b => Assert.Equal(0x5A, b));
        Assert.All(buffer, b => Assert.Equal(0x11, b));
        Assert.Equal(0, h.AioInFlight());
    }

    [Fact]
    public async Task AlreadyCancelledToken_SendsNothing()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        using NbdHandle h = Scripted.Connect(server);
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await h.FlushAsync(cancellationToken: cts.Token));
        Assert.Empty(seen);
    }

    [Fact]
    public async Task SyncCallInsideACallback_IsRefusedWithEdeadlk()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        using NbdHandle h = Scripted.Connect(server);
        int inner = 0;
        long nested = 0;
        h.AioFlush((ref int _) =>
        {
            try
            {
                h.Flush();
            }
            catch (NbdException e)
            {
                inner = e.Errno;
            }
            // Issuing more aio commands from a callback is allowed.
            nested = h.AioFlush();
            return 1;
        });
        Scripted.Within(() =>
        {
            while (h.AioInFlight() > 0)
                h.Poll(-1);
            return 0;
        });
        Assert.Equal(Errno.EDEADLK, inner);
        Assert.True(nested > 0);
        Assert.True(h.AioCommandCompleted(nested));
    }

    [Fact]
    public async Task Shutdown_WaitsForCommandsInFlight_ThenCloses()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen, delayMs: 100);
        using NbdHandle h = Scripted.Connect(server);
        Task[] reads = new Task[4];
        for (int i = 0; i < reads.Length; i++)
            reads[i] = h.PreadAsync(new byte[512], (ulong)i * 512).AsTask();
        await Scripted.WithinAsync(() => h.Shutdown());
        await Task.WhenAll(reads).WaitAsync(Scripted.Deadline);
        Assert.True(h.AioIsClosed());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Flush()).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Poll(0)).Errno);
    }

    [Fact]
    public async Task Statistics_CountProtocolBytesAndChunks()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        using NbdHandle h = Scripted.Connect(server);
        ulong sentBytes = h.StatsBytesSent(), sentChunks = h.StatsChunksSent();
        ulong receivedBytes = h.StatsBytesReceived(), receivedChunks = h.StatsChunksReceived();
        Assert.True(sentChunks >= 3 && receivedChunks >= 4, "the handshake is counted");
        h.Flush();
        h.Pwrite(new byte[1000], 0);
        h.Pread(new byte[100], 0);
        Assert.Equal(sentBytes + 28 + 28 + 1000 + 28, h.StatsBytesSent());
        Assert.Equal(sentChunks + 3, h.StatsChunksSent());
        Assert.Equal(receivedBytes + 16 + 16 + 20 + 8 + 100, h.StatsBytesReceived());
        Assert.Equal(receivedChunks + 3, h.StatsChunksReceived());
    }

    [Fact]
    public void StateQueries_FollowTheLifeCycle()
    {
        using var h = new NbdHandle();
        Assert.True(h.AioIsCreated());
        Assert.False(h.AioIsReady() || h.AioIsDead() || h.AioIsClosed() || h.AioIsConnecting() || h.AioIsNegotiating() || h.AioIsProcessing());
        Assert.StartsWith("START", h.ConnectionState(), StringComparison.Ordinal);
        Assert.Equal(Errno.ENOTCONN, Assert.Throws<NbdException>(() => h.GetSize()).Errno);
        Assert.Equal(Errno.ENOTCONN, Assert.Throws<NbdException>(() => h.Pread(new byte[1], 0)).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.AioCommandCompleted(1)).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Poll(0)).Errno);
        Assert.Equal(Errno.ENOTCONN, Assert.Throws<NbdException>(() => h.AioInFlight()).Errno);
        var failure = Assert.Throws<NbdConnectionException>(() => h.ConnectUnix("/nonexistent/nbd.sock"));
        Assert.Equal(Errno.ENOENT, failure.Errno);
        Assert.True(h.AioIsDead());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.ConnectUnix("/nonexistent/nbd.sock")).Errno);
    }

    [Fact]
    public void Settings_HaveLibnbdDefaultsAndStateRules()
    {
        using var h = new NbdHandle();
        Assert.Equal("", h.GetExportName());
        Assert.True(h.GetRequestStructuredReplies());
        Assert.True(h.GetRequestExtendedHeaders());
        Assert.True(h.GetRequestBlockSize());
        Assert.True(h.GetRequestMetaContext());
        Assert.False(h.GetFullInfo());
        Assert.True(h.GetPreadInitialize());
        Assert.Equal(StrictFlag.Mask, h.GetStrictMode());
        Assert.Equal(HandshakeFlag.Mask, h.GetHandshakeFlags());
        Assert.Equal(TlsMode.Disable, h.GetTls());
        Assert.StartsWith("nbd", h.GetHandleName(), StringComparison.Ordinal);
        Assert.Equal(0, h.GetNrMetaContexts());

        h.SetHandleName("disk0");
        Assert.Equal("disk0", h.GetHandleName());
        h.AddMetaContext("base:allocation");
        h.AddMetaContext("qemu:dirty-bitmap:b0");
        Assert.Equal(2, h.GetNrMetaContexts());
        Assert.Equal("qemu:dirty-bitmap:b0", h.GetMetaContext(1));
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.GetMetaContext(2)).Errno);
        h.ClearMetaContexts();
        Assert.Equal(0, h.GetNrMetaContexts());
        Assert.Equal(Errno.ENAMETOOLONG, Assert.Throws<NbdException>(() => h.SetExportName(new string('x', 4097))).Errno);
        Assert.Equal(Errno.ENAMETOOLONG, Assert.Throws<NbdException>(() => h.AddMetaContext(new string('x', 4097))).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetHandshakeFlags((HandshakeFlag)4)).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetStrictMode((StrictFlag)0x80)).Errno);
        Assert.Equal((nuint)0, h.SetPrivateData(42));
        Assert.Equal((nuint)42, h.GetPrivateData());
        var messages = new ConcurrentQueue<string>();
        h.SetDebugCallback((context, message) =>
        {
            messages.Enqueue(context + ": " + message);
            return 0;
        });
        h.SetDebug(true);
        Assert.True(h.GetDebug());
        h.ClearDebugCallback();
    }

    [Fact]
    public async Task DebugCallback_SeesTheHandshake()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        var messages = new ConcurrentQueue<string>();
        using NbdHandle h = Scripted.Connect(server, handle =>
        {
            handle.SetDebug(true);
            handle.SetDebugCallback((context, message) =>
            {
                messages.Enqueue(context + ": " + message);
                return 0;
            });
        });
        Assert.Contains(messages, m => m.Contains("negotiated structured replies", StringComparison.Ordinal));
        Assert.Contains(messages, m => m.StartsWith("nbd_connect_uri: exportsize: 1048576", StringComparison.Ordinal));
    }

    [Fact]
    public async Task GetHandshakeFlags_AfterConnecting_AreTheAgreedOnes()
    {
        var seen = new ConcurrentQueue<ScriptedRequest>();
        await using var server = Responder(seen);
        using NbdHandle h = Scripted.Connect(server, handle => handle.SetHandshakeFlags(HandshakeFlag.FixedNewstyle));
        Assert.Equal(HandshakeFlag.FixedNewstyle, h.GetHandshakeFlags());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.SetHandshakeFlags(HandshakeFlag.Mask)).Errno);
    }
}
