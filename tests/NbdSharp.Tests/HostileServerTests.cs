using System;
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

    [Fact]
    public async Task TruncatedInfoExport_FailsConnect()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                if (option == OptionGo)
                {
                    await c.ReplyOptionAsync(option, ReplyTypeInfo, new byte[] { 0, 0, 0, 0, 0, 0 });
                    break;
                }
                await c.ReplyOptionAsync(option, 0x80000001);
            }
            await c.DrainAsync();
        });
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
        await using var server = Scripted.Serve(async c =>
        {
            await c.ReadRequestAsync();
            await c.WriteAsync(new byte[16]);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.IsType<NbdProtocolException>(e);
        Assert.Contains("invalid or unexpected reply magic 0x00000000", e.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsDead());
        NbdException after = Assert.Throws<NbdException>(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EINVAL, after.Errno);
    }

    [Fact]
    public async Task UnknownCookie_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendNoneChunkAsync(request with { Cookie = request.Cookie + 1000 });
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Flush());
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("matches no command in flight", e.Message, StringComparison.Ordinal);
    }

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
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendChunkAsync(request.Cookie, 1, 1, new byte[8], claimedLength: 0xFFFFFFF0);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("invalid server reply length 4294967280", e.Message, StringComparison.Ordinal);
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
    public async Task MoreDataThanRequested_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(request, request.Offset, new byte[request.Length + 1], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 1024));
        Assert.Equal(Errno.EPROTO, e.Errno);
    }

    [Fact]
    public async Task ErrorChunkWithMessageLongerThanTheChunk_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            byte[] payload = new byte[10];
            BinaryPrimitives.WriteUInt32BigEndian(payload, 5);
            BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), 200);
            await c.SendChunkAsync(request.Cookie, 1, 0x8001, payload);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("error message length 200 too large", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ErrorChunkWithErrorZero_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendErrorChunkAsync(request, 0, "", done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
    }

    [Fact]
    public async Task BlockStatusChunkForARead_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendBlockStatusAsync(request, 1, new[] { (512UL, 0UL) }, done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("block status chunk in reply to a read", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DataChunkForAFlush_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(request, 0, new byte[16], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Flush());
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("data chunk in reply to a flush", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnknownNonErrorChunkType_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendChunkAsync(request.Cookie, 1, 11, new byte[4]);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Contains("unknown structured reply type 11", e.Message, StringComparison.Ordinal);
    }

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
    public async Task SuccessWithoutAllTheData_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendDataChunkAsync(request, request.Offset, new byte[request.Length / 2], done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.Pread(new byte[512], 0));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("without sending all of the data", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ZeroLengthExtent_FailsBlockStatus()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendBlockStatusAsync(request, 1, new[] { (0UL, 0UL) }, done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        int calls = 0;
        NbdException e = Scripted.Fails(() => h.BlockStatus(65536, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) =>
        {
            calls++;
            return 0;
        }));
        Assert.Equal(Errno.EPROTO, e.Errno);
        Assert.Contains("zero-length extent", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, calls);
    }

    [Fact]
    public async Task ExtentPastTheEndOfTheExport_FailsBlockStatus()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendBlockStatusAsync(request, 1, new[] { (1024UL * 1024, 0UL), (4096UL, 3UL) }, done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.BlockStatus(65536, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0));
        Assert.Contains("past the end of the export", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BlockStatusForAnUnnegotiatedContext_KillsConnection()
    {
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest request = await c.ReadRequestAsync();
            await c.SendBlockStatusAsync(request, 99, new[] { (4096UL, 0UL) }, done: true);
            await c.DrainAsync();
        });
        using NbdHandle h = Scripted.Connect(server);
        NbdException e = Scripted.Fails(() => h.BlockStatus(4096, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0));
        Assert.Contains("context id 99", e.Message, StringComparison.Ordinal);
    }

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
        Scripted.Within(() =>
        {
            while (h.AioInFlight() > 0)
            {
                try
                {
                    h.Poll(-1);
                }
                catch (NbdException)
                {
                    break;
                }
            }
            return 0;
        });
        Assert.Equal(0, h.AioInFlight());
        Assert.All(calls, c => Assert.Equal(1, c));
        Assert.All(errors, e => Assert.Equal(Errno.EPROTO, e));
        Assert.True(h.AioIsDead());
    }
}

[CollectionDefinition(nameof(SerialCollection), DisableParallelization = true)]
public class SerialCollection
{
}
