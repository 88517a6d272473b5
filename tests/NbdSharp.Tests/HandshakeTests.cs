using System;
using System.Text;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>Handshake paths a well-behaved server takes less often: fallbacks, old clients, refusals.</summary>
[Collection(nameof(SerialCollection))]
public class HandshakeTests
{
    private const uint Ack = 1, Info = 3, ErrUnsup = 0x80000001, ErrPolicy = 0x80000002;
    private const uint OptExportName = 1, OptAbort = 2, OptGo = 7;

    [Fact]
    public async Task GoUnsupported_FallsBackToExportName_WithZeroPadding()
    {
        byte[]? sentName = null;
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync(globalFlags: 0x0001); // fixed newstyle, no NO_ZEROES
            Assert.Equal(1u, await c.ReadClientFlagsAsync());
            while (true)
            {
                (uint option, byte[] data) = await c.ReadOptionAsync();
                if (option == OptExportName)
                {
                    sentName = data;
                    byte[] reply = new byte[134];
                    reply[6] = 0x10;              // 4096 bytes
                    reply[9] = 0x01;              // HAS_FLAGS
                    reply[133] = 0xFF;            // garbage in the padding must be skipped, not parsed
                    await c.WriteAsync(reply);
                    break;
                }
                await c.ReplyOptionAsync(option, ErrUnsup);
            }
            ScriptedRequest r = await c.ReadRequestAsync();
            await c.SendSimpleReplyAsync(r.Cookie, 0, new byte[r.Length]);
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.SetExportName("legacy");
        h.ConnectUri(server.Uri.Replace(":///", ":///legacy", StringComparison.Ordinal));
        Assert.Equal("legacy", Encoding.UTF8.GetString(sentName!));
        Assert.Equal(4096, h.GetSize());
        Assert.Equal(HandshakeFlag.FixedNewstyle, h.GetHandshakeFlags());
        await Scripted.WithinAsync(() => h.Pread(new byte[512], 0));
    }

    [Fact]
    public async Task RefusedGo_CarriesTheServersOwnMessage_AndAborts()
    {
        bool aborted = false;
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                if (option == OptGo)
                {
                    await c.ReplyOptionAsync(option, ErrPolicy, Encoding.UTF8.GetBytes("go away\x01"));
                    continue;
                }
                if (option == OptAbort)
                {
                    aborted = true;
                    break;
                }
                await c.ReplyOptionAsync(option, ErrUnsup);
            }
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        var e = Assert.Throws<NbdServerException>(() => h.ConnectUri(server.Uri));
        Assert.Equal(Errno.ENOTSUP, e.Errno);
        Assert.Equal("nbd_connect_uri: server policy prevents the operation: go away\\x01: Operation not supported", e.Message);
        await server.Completion.WaitAsync(Scripted.Deadline);
        Assert.True(aborted, "the client should end a refused negotiation with NBD_OPT_ABORT");
        Assert.True(h.AioIsDead());
    }

    [Fact]
    public async Task AckWithoutInfoExport_FailsConnect()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                await c.ReplyOptionAsync(option, option == OptGo ? Ack : ErrUnsup);
                if (option == OptGo)
                    break;
            }
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        Assert.Contains("without sending NBD_INFO_EXPORT", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ZeroTransmissionFlags_FailConnect()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                if (option != OptGo)
                {
                    await c.ReplyOptionAsync(option, ErrUnsup);
                    continue;
                }
                await c.ReplyOptionAsync(option, Info, ScriptedConnection.InfoExport(4096, 0));
                await c.ReplyOptionAsync(option, Ack);
                break;
            }
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        NbdException e = Scripted.Fails(() => h.ConnectUri(server.Uri));
        Assert.Contains("invalid eflags == 0", e.Message, StringComparison.Ordinal);
        Assert.Equal(Errno.EINVAL, e.Errno);
    }

    [Fact]
    public async Task UnknownInfoTypesAndLongDescriptions_AreHandled()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                if (option != OptGo)
                {
                    await c.ReplyOptionAsync(option, ErrUnsup);
                    continue;
                }
                await c.ReplyOptionAsync(option, Info, new byte[] { 0x00, 0x63, 1, 2, 3 });      // unknown type 99: skipped
                await c.ReplyOptionAsync(option, Info, new byte[20000]);                        // too large to keep: skipped
                byte[] description = new byte[2 + 10];
                description[1] = 2;
                Encoding.UTF8.GetBytes("hello disk", description.AsSpan(2));
                await c.ReplyOptionAsync(option, Info, description);
                await c.ReplyOptionAsync(option, Info, ScriptedConnection.InfoExport(8192, 0x0001));
                await c.ReplyOptionAsync(option, Ack);
                break;
            }
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.SetFullInfo(true);
        Scripted.Within(() =>
        {
            h.ConnectUri(server.Uri);
            return 0;
        });
        Assert.Equal(8192, h.GetSize());
        Assert.Equal("hello disk", h.GetExportDescription());
        Assert.Equal(Errno.ENOTSUP, Assert.Throws<NbdException>(() => h.GetCanonicalExportName()).Errno);
    }

    [Fact]
    public async Task OldstyleServer_IsAccepted()
    {
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendOldstyleHandshakeAsync(65536, 0x0001 | 0x0004);
            ScriptedRequest r = await c.ReadRequestAsync();
            await c.SendSimpleReplyAsync(r.Cookie);
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.Equal("oldstyle", h.GetProtocol());
        Assert.Equal(HandshakeFlag.None, h.GetHandshakeFlags());
        await Scripted.WithinAsync(() => h.Flush());
    }

    [Fact]
    public async Task ConnectAsync_SameResultAsSync()
    {
        await using var server = Scripted.Serve(c => c.DrainAsync());
        await using var h = new NbdHandle();
        await h.ConnectUriAsync(server.Uri).WaitAsync(Scripted.Deadline);
        Assert.Equal(1 << 20, h.GetSize());
        Assert.True(h.AioIsReady());
    }

    [Fact]
    public async Task ConnectAsync_Cancelled_LeavesTheHandleDead()
    {
        await using var server = ScriptedServer.Start(c => c.DrainAsync());
        await using var h = new NbdHandle();
        using var cts = new System.Threading.CancellationTokenSource(200);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => h.ConnectUriAsync(server.Uri, cts.Token).WaitAsync(Scripted.Deadline));
        Assert.True(h.AioIsDead());
    }
}
