using System;
using System.Collections.Generic;
using System.Linq;
using System.Buffers.Binary;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// A misbehaving server: every case ends in an <see cref="NbdException"/> within seconds, with no hang, no
/// crash, and no allocation sized by the bogus number.
/// </summary>
[Collection(nameof(SerialCollection))]
public class HostileServerTests
{
    private const uint ReplyTypeAck = 1;
    private const uint ReplyTypeInfo = 3;
    private const uint OptionGo = 7;

    [Fact]
    public async Task WrongGreetingMagic_FailsConnect()
    {
        await using var server = ScriptedServer.Start(c => c.WriteAsync(new byte[] { 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x20, 0x34, 0x30, 0x30, 0x20, 0x42, 0x61, 0x64 }));
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("did not send expected NBD magic", e.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public async Task OptionReplyOfAbsurdLength_FailsConnectWithoutAllocating()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            (uint option, _) = await c.ReadOptionAsync();
            await c.ReplyOptionAsync(option, ReplyTypeInfo, new byte[16], claimedLength: 0xFFFFFFF0);
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("invalid option reply length", e.Message, StringComparison.Ordinal);
        Assert.True(allocated < 1024 * 1024, $"allocated {allocated} bytes");
    }

    private static ScriptedServer AnswerGoWith(Func<ScriptedConnection, Task> go) =>
        ScriptedServer.Start(Scripted.RefuseOptionsUntilGo(go));

    [Fact]
    public async Task TruncatedInfoExport_FailsConnect()
    {
        await using var server = AnswerGoWith(c => c.ReplyOptionAsync(OptionGo, ReplyTypeInfo, new byte[] { 0, 0, 0, 0, 0, 0 }));
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("incorrect NBD_INFO_EXPORT option reply length", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServerClosingInTheMiddleOfAnOptionReply_FailsConnect()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            await c.ReadOptionAsync();
            await c.WriteAsync(new byte[] { 0x00, 0x03, 0xe8, 0x89, 0x04 });
            c.Close();
        });
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.ENOTCONN, e.Errno);
    }

    /// <summary>A refused NBD_OPT_GO ends an aio connect: Poll reports the server's error and the handle is dead.</summary>
    [Fact]
    public async Task GoRefused_DuringAnAioConnect_IsPollsFailure()
    {
        await using var server = AnswerGoWith(c => c.ReplyOptionAsync(OptionGo, 0x80000006, System.Text.Encoding.UTF8.GetBytes("no such export")));
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() =>
        {
            h.AioConnectUri(server.Uri);
            while (h.AioIsConnecting())
                h.Poll(1000);
        });
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.Contains("no such export", e.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public async Task ExportSizeOver2To63_GetSizeIsEoverflow()
    {
        var export = new ScriptedExport { Size = (1UL << 63) + 4096 };
        await using var server = Scripted.Serve(c => c.DrainAsync(), export);
        using NbdHandle h = Scripted.Connect(server);
        var e = Assert.Throws<NbdException>(() => h.GetSize());
        Assert.Equal(Errno.EOVERFLOW, e.Errno);
    }

    [Fact]
    public async Task WrongReplyMagic_KillsConnection()
    {
        NbdException e = await Scripted.BadReplyKillsAsync((c, _) => c.WriteAsync(new byte[16]),
            h => h.Pread(new byte[512], 0), "invalid or unexpected reply magic 0x00000000");
        Assert.IsType<NbdProtocolException>(e);
    }

    [Fact]
    public Task UnknownCookie_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendNoneChunkAsync(r with { Cookie = r.Cookie + 1000 }),
            h => h.Flush(), "matches no command in flight");

    [Fact]
    public async Task DisconnectInTheMiddleOfAPayload_FailsWithEnotconn()
    {
        var export = new ScriptedExport { StructuredReplies = false };
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            byte[] reply = new byte[16 + 100];
            BinaryPrimitives.WriteUInt32BigEndian(reply, 0x67446698);
            BinaryPrimitives.WriteUInt64BigEndian(reply.AsSpan(8), request.Cookie);
            await c.WriteAsync(reply);
            c.Close();
        }, export);
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[4096], 0));
        Assert.Equal(Errno.ENOTCONN, e.Errno);
        Assert.Contains("in the middle of a reply", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ChunkLengthNear4GiB_KillsConnectionWithoutAllocating()
    {
        long allocated = 0;
        await Scripted.BadReplyKillsAsync((c, r) => c.SendChunkAsync(r.Cookie, 1, 1, new byte[8], claimedLength: 0xFFFFFFF0),
            h =>
            {
                long before = GC.GetTotalAllocatedBytes(precise: true);
                try
                {
                    h.Pread(new byte[512], 0);
                }
                finally
                {
                    allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
                }
            }, "invalid server reply length 4294967280");
        Assert.True(allocated < 1024 * 1024, $"allocated {allocated} bytes");
    }

    [Theory]
    [InlineData(4096UL)]
    [InlineData(ulong.MaxValue)]
    [InlineData(ulong.MaxValue - 100)]
    public async Task DataChunkOutsideTheRequest_KillsConnection(ulong offset)
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(request, offset, new byte[512], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        byte[] buffer = new byte[512];
        NbdException e = Scripted.Fails(() => h.Pread(buffer, 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("out of bounds", e.Message, StringComparison.Ordinal);
        Assert.All(buffer, b => Assert.Equal(0, b));
    }

    [Fact]
    public Task MoreDataThanRequested_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendDataChunkAsync(r, r.Offset, new byte[r.Length + 1], done: true),
            h => h.Pread(new byte[512], 1024), "out of bounds");

    [Fact]
    public Task ErrorChunkWithMessageLongerThanTheChunk_KillsConnection()
    {
        byte[] payload = new byte[10];
        BinaryPrimitives.WriteUInt32BigEndian(payload, 5);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), 200);
        return Scripted.BadReplyKillsAsync((c, r) => c.SendChunkAsync(r.Cookie, 1, 0x8001, payload),
            h => h.Pread(new byte[512], 0), "error message length 200 too large");
    }

    [Fact]
    public Task ErrorChunkWithErrorZero_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendErrorChunkAsync(r, 0, "", done: true),
            h => h.Pread(new byte[512], 0), "error value 0");

    [Fact]
    public Task BlockStatusChunkForARead_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendBlockStatusAsync(r, 1, new[] { (512UL, 0UL) }, done: true),
            h => h.Pread(new byte[512], 0), "block status chunk in reply to a read");

    [Fact]
    public Task DataChunkForAFlush_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendDataChunkAsync(r, 0, new byte[16], done: true),
            h => h.Flush(), "data chunk in reply to a flush");

    [Fact]
    public Task UnknownNonErrorChunkType_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendChunkAsync(r.Cookie, 1, 11, new byte[4]),
            h => h.Pread(new byte[512], 0), "unknown structured reply type 11");

    [Fact]
    public async Task ChunkAfterDone_KillsConnectionOnTheNextRead()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest first = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(first, first.Offset, new byte[first.Length], done: true);
            await c.SendDataChunkAsync(first, first.Offset, new byte[first.Length], done: true);
            ScriptedRequest second = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(second, second.Offset, new byte[second.Length], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        Scripted.Within(() =>
        {
            h.Pread(new byte[512], 0);
            return 0;
        });
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 512));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("matches no command in flight", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public Task SuccessWithoutAllTheData_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendDataChunkAsync(r, r.Offset, new byte[r.Length / 2], done: true),
            h => h.Pread(new byte[512], 0), "without sending all of the data");

    [Fact]
    public async Task ZeroLengthExtent_FailsBlockStatus()
    {
        int calls = 0;
        await Scripted.BadReplyKillsAsync((c, r) => c.SendBlockStatusAsync(r, 1, new[] { (0UL, 0UL) }, done: true),
            h => h.BlockStatus(65536, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) =>
            {
                calls++;
                return 0;
            }), "zero-length extent");
        Assert.Equal(0, calls);
    }

    [Fact]
    public Task ExtentPastTheEndOfTheExport_FailsBlockStatus() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendBlockStatusAsync(r, 1, new[] { (1024UL * 1024, 0UL), (4096UL, 3UL) }, done: true),
            h => h.BlockStatus(65536, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0), "past the end of the export");

    [Fact]
    public Task BlockStatusForAnUnnegotiatedContext_KillsConnection() =>
        Scripted.BadReplyKillsAsync((c, r) => c.SendBlockStatusAsync(r, 99, new[] { (4096UL, 0UL) }, done: true),
            h => h.BlockStatus(4096, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0), "context id 99");

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(64)]
    public async Task BadReplyWithManyCommandsInFlight_FailsEachExactlyOnce(int inFlight)
    {
        var ready = new TaskCompletionSource();
        await using var server = Scripted.Serve(async c =>
        {
            for (int i = 0; i < inFlight; i++)
                await c.ReadRequestAsync();
            await c.WriteAsync(new byte[20]);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        int[] calls = new int[inFlight];
        int[] errors = new int[inFlight];
        for (int i = 0; i < inFlight; i++)
        {
            int slot = i;
            h.AioPread(new byte[512], (ulong)(512 * i), (ref int error) =>
            {
                Interlocked.Increment(ref calls[slot]);
                errors[slot] = error;
                return 1;
            });
        }
        Scripted.PollUntilDone(h);
        Assert.Equal(0, h.AioInFlight());
        Assert.All(calls, c => Assert.Equal(1, c));
        Assert.All(errors, e => Assert.Equal(Errno.EPROTO, e));
        Assert.True(h.AioIsDead());
    }

    /// <summary>
    /// T24: garbage behind NBD_CMD_DISC, from a server that then keeps the connection open. The read before the
    /// disconnect succeeds once; Shutdown ends within the deadline and, as libnbd's nbd_shutdown, fails with the
    /// reply's error (EPROTO), leaving the handle dead.
    /// </summary>
    [Fact]
    public async Task GarbageAfterDisconnect_FailsShutdownWithoutHanging()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest read = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(read, read.Offset, new byte[read.Length], done: true);
            ScriptedRequest disc = await c.ReadRequestAsync();
            Assert.Equal(2, disc.Type);
            await c.WriteAsync(Enumerable.Repeat((byte)0xA5, 4096).ToArray());
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        int calls = 0, error = -1;
        h.AioPread(new byte[512], 0, (ref int e) =>
        {
            Interlocked.Increment(ref calls);
            error = e;
            return 1;
        });
        NbdException failure = Scripted.Fails(() => h.Shutdown());
        Assert.Equal(Errno.EPROTO, failure.Errno);
        Assert.Contains("reply magic", failure.Message, StringComparison.Ordinal);
        Assert.Equal((1, 0), (calls, error));
        Assert.True(h.AioIsDead());
    }

    /// <summary>
    /// Shutdown waits for the commands in flight; when one never gets its reply, the request timeout (or Cancel
    /// from another thread) ends the wait, and Shutdown reports it rather than returning as if all went well.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ShutdownWaitingForAStalledCommand_FailsWithTheTimeoutOrCancellation(bool cancel)
    {
        // The server reads the request and NBD_CMD_DISC, then holds the connection open until the test ends.
        var release = new TaskCompletionSource();
        await using var server = Scripted.Serve(async c =>
        {
            await c.ReadRequestAsync();
            await c.DrainAsync();
            await release.Task;
        });
        try
        {
            ShutdownFails(server, cancel);
        }
        finally
        {
            release.TrySetResult();
        }
    }

    private static void ShutdownFails(ScriptedServer server, bool cancel)
    {
        using NbdHandle h = Scripted.Connect(server);
        // A second's margin: Shutdown must already be waiting when the timeout or the cancellation strikes.
        if (!cancel)
            h.SetRequestTimeout(TimeSpan.FromSeconds(1));
        int calls = 0, error = 0;
        h.AioPread(new byte[512], 0, (ref int e) =>
        {
            Interlocked.Increment(ref calls);
            error = e;
            return 1;
        });
        using var canceller = new Timer(_ => h.Cancel(), null, cancel ? 1000 : Timeout.Infinite, Timeout.Infinite);
        NbdException failure = Scripted.Fails(() => h.Shutdown());
        int expected = cancel ? Errno.ECANCELED : Errno.ETIMEDOUT;
        Assert.Equal(expected, failure.Errno);
        Assert.Equal((1, expected), (calls, error));
        Assert.True(h.AioIsDead());
    }

    /// <summary>
    /// X2: once the connection is dead (a bad reply) or closed (Shutdown), every command, in its synchronous, aio
    /// and Task-based form, fails at once with libnbd's invalid-state error (EINVAL) and sends nothing.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AfterDeadOrClosed_EveryCommandFailsAtOnce(bool closed)
    {
        long afterwards = -1;
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest first = await c.ReadRequestAsync();
            if (closed)
            {
                Assert.Equal(2, first.Type);
                c.Close();
                return;
            }
            await c.WriteAsync(new byte[20]);
            afterwards = await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        if (closed)
        {
            Scripted.Within(() =>
            {
                h.Shutdown();
                return 0;
            });
        }
        else
        {
            Scripted.Fails(() => h.Flush());
        }

        byte[] buffer = new byte[512];
        ExtentCallback extents = (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0;
        var failures = new List<NbdException>
        {
            Assert.Throws<NbdException>(() => h.Pread(buffer, 0)),
            Assert.Throws<NbdException>(() => h.Pwrite(buffer, 0)),
            Assert.Throws<NbdException>(() => h.Flush()),
            Assert.Throws<NbdException>(() => h.Trim(512, 0)),
            Assert.Throws<NbdException>(() => h.Zero(512, 0)),
            Assert.Throws<NbdException>(() => h.Cache(512, 0)),
            Assert.Throws<NbdException>(() => h.BlockStatus(512, 0, extents)),
            Assert.Throws<NbdException>(() => h.AioPread(buffer, 0)),
            Assert.Throws<NbdException>(() => h.AioPwrite(buffer, 0)),
            Assert.Throws<NbdException>(() => h.AioFlush()),
            Assert.Throws<NbdException>(() => h.AioTrim(512, 0)),
            Assert.Throws<NbdException>(() => h.AioZero(512, 0)),
            Assert.Throws<NbdException>(() => h.AioCache(512, 0)),
            Assert.Throws<NbdException>(() => h.AioBlockStatus(512, 0, extents)),
            await Assert.ThrowsAsync<NbdException>(async () => await h.PreadAsync(buffer, 0)),
            await Assert.ThrowsAsync<NbdException>(async () => await h.PwriteAsync(buffer, 0)),
            await Assert.ThrowsAsync<NbdException>(async () => await h.FlushAsync()),
            await Assert.ThrowsAsync<NbdException>(async () => await h.ZeroAsync(512, 0)),
            await Assert.ThrowsAsync<NbdException>(async () => await h.BlockStatusAsync(512, 0, extents)),
        };
        string state = closed ? "CLOSED" : "DEAD";
        Assert.All(failures, e =>
        {
            Assert.Equal(Errno.EINVAL, e.Errno);
            Assert.Contains("invalid state: " + state, e.Message, StringComparison.Ordinal);
        });
        Assert.Equal(0, h.AioInFlight());
        h.Dispose();
        await server.Completion.WaitAsync(Scripted.Deadline);
        if (!closed)
            Assert.Equal(0, afterwards);
    }

    /// <summary>A server that closes the connection after NBD_CMD_DISC: Shutdown succeeds and the handle is closed.</summary>
    [Fact]
    public async Task CleanCloseAfterDisconnect_ShutdownSucceeds()
    {
        await using var server = Scripted.Serve(async c =>
        {
            Assert.Equal(2, (await c.ReadRequestAsync()).Type);
            c.Close();
        });
        using NbdHandle h = Scripted.Connect(server);
        Scripted.Within(() =>
        {
            h.Shutdown();
            return 0;
        });
        Assert.True(h.AioIsClosed());
    }
}

[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public class SerialCollection
{
}
