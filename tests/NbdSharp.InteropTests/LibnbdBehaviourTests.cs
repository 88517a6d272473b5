using System;
using System.Collections.Generic;
using System.IO;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>
/// Behaviours matched to libnbd's (its 1.22 source says what each should be): option refusals that leave the handle
/// negotiating, NBD_OPT_ABORT before fixed newstyle, the "closing handle" debug message, and the URI of a socket made
/// for socket activation.
/// </summary>
public class LibnbdBehaviourTests
{
    private static NbdHandle NegotiatingWithoutStructuredReplies(ServerProcess server)
    {
        var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetRequestStructuredReplies(false);
        h.ConnectUnix(server.Socket);
        Assert.True(h.AioIsNegotiating());
        Assert.False(h.GetStructuredRepliesNegotiated());
        return h;
    }

    [Fact]
    public void SetMetaContext_RefusedWithoutStructuredReplies_FailsWithEnotsup_AndTheHandleNegotiatesOn()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using NbdHandle h = NegotiatingWithoutStructuredReplies(server);
        h.AddMetaContext(MetaContext.BaseAllocation);
        var seen = new List<string>();
        ContextCallback collect = name =>
        {
            seen.Add(name);
            return 0;
        };

        // libnbd's tests/opt-set-meta.c: SET cannot succeed until structured replies are negotiated.
        var set = Assert.Throws<NbdServerException>(() => h.OptSetMetaContext(collect));
        Assert.Equal(Errno.ENOTSUP, set.Errno);
        Assert.StartsWith("nbd_opt_set_meta_context: server replied with error to meta context request: ", set.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsNegotiating());
        Assert.Equal(Errno.ENOTSUP, Assert.Throws<NbdServerException>(() => h.OptSetMetaContextQueries([MetaContext.BaseAllocation], collect)).Errno);
        Assert.True(h.AioIsNegotiating());
        Assert.Empty(seen);
        // LIST is sent all the same (libnbd 1.22's tests/opt-list-meta.c): nbdkit answers it, and it selects nothing.
        Assert.Equal(1, h.OptListMetaContext(collect));
        Assert.Equal([MetaContext.BaseAllocation], seen);
        seen.Clear();

        // Every option still works afterwards.
        Assert.False(h.OptStarttls()); // nbdkit without --tls refuses it, and the handle negotiates on
        Assert.True(h.OptStructuredReply());
        Assert.Equal(1, h.OptSetMetaContext(collect));
        Assert.Equal([MetaContext.BaseAllocation], seen);
        h.OptGo();
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        h.BlockStatus(4096, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0);
    }

    [Fact]
    public void AioSetMetaContext_Refused_TellsTheCompletionCallbackThroughPoll_AndTheHandleNegotiatesOn()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using NbdHandle h = NegotiatingWithoutStructuredReplies(server);
        var errors = new List<int>();
        CompletionCallback record = (ref int error) =>
        {
            errors.Add(error);
            return 1;
        };
        h.AioOptSetMetaContextQueries([MetaContext.BaseAllocation], _ => 0, record);
        PollWhileConnecting(h);
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.AioOptSetMetaContext(_ => 0, record);
        PollWhileConnecting(h);
        h.AioOptListMetaContext(_ => 0, record);
        PollWhileConnecting(h);
        Assert.Equal([Errno.ENOTSUP, Errno.ENOTSUP, 0], errors);
        Assert.True(h.AioIsNegotiating());
        Assert.True(h.OptStructuredReply());
        h.OptGo();
        Assert.True(h.AioIsReady());
    }

    private static void PollWhileConnecting(NbdHandle h)
    {
        DateTime until = DateTime.UtcNow.AddSeconds(60);
        while (h.AioIsConnecting())
        {
            Assert.True(DateTime.UtcNow < until, "the option did not finish");
            h.Poll(1000);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OptAbort_BeforeFixedNewstyle_SucceedsAndLeavesTheHandleDead(bool aio)
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetHandshakeFlags(HandshakeFlag.None); // the client does not agree to fixed newstyle
        h.ConnectUnix(server.Socket);
        Assert.True(h.AioIsNegotiating());
        Assert.Equal("newstyle", h.GetProtocol());
        if (aio)
        {
            h.AioOptAbort();
            PollWhileConnecting(h);
        }
        else
        {
            h.OptAbort();
        }
        Assert.True(h.AioIsDead());
        Assert.False(h.AioIsClosed());
    }

    [Fact]
    public void Dispose_SaysClosingHandle_ToTheDebugCallback_ThenForgetsIt()
    {
        using ServerProcess server = Peers.Nbdkit("memory", "1M");
        var messages = new List<(string Context, string Message)>();
        var h = new NbdHandle();
        h.SetDebug(true);
        h.SetDebugCallback((context, message) =>
        {
            lock (messages)
                messages.Add((context, message));
            return 0;
        });
        h.ConnectUnix(server.Socket);
        h.Dispose();
        lock (messages)
        {
            Assert.Contains(("nbd_close", "closing handle"), messages);
            Assert.Equal(("nbd_close", "closing handle"), messages[^1]);
        }
    }

    [Fact]
    public void GetUri_AfterSocketActivation_NamesTheSocketItMade_WhichServesMoreConnections()
    {
        Requires.Program("nbdkit");
        string uri;
        string socketPath;
        using (var h = new NbdHandle())
        {
            h.ConnectSystemdSocketActivation(["nbdkit", "memory", "1M"]);
            uri = h.GetUri();
            Assert.StartsWith("nbd+unix:///?socket=", uri, StringComparison.Ordinal);
            socketPath = NbdUri.Parse(uri).Socket!;
            Assert.True(File.Exists(socketPath) || Directory.Exists(Path.GetDirectoryName(socketPath)));
            h.Pwrite([1, 2, 3, 4], 0);

            // libnbd's nbdcopy opens more connections to a socket-activated server this way.
            using var second = new NbdHandle();
            second.ConnectUri(uri);
            byte[] back = new byte[4];
            second.Pread(back, 0);
            Assert.Equal([1, 2, 3, 4], back);
        }
        // Closing the handle stops the server and removes the socket's folder.
        Assert.False(Directory.Exists(Path.GetDirectoryName(socketPath)));
    }
}
