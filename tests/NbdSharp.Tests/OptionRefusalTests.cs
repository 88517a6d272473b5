using System;
using System.Collections.Generic;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// No refusal of an option kills the handle (libnbd alike): a server that refuses everything but NBD_OPT_GO leaves an
/// opt-mode handle negotiating after every refused call, synchronous or aio, each failing with libnbd's errno.
/// </summary>
[Collection(nameof(SerialCollection))]
public class OptionRefusalTests
{
    private const uint OptGo = 7, Info = 3, Ack = 1;

    private static ScriptedServer RefusingAllButGo() => ScriptedServer.Start(Scripted.RefuseOptionsUntilGo(async c =>
    {
        await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
        await c.ReplyOptionAsync(OptGo, Ack);
    }));

    [Fact]
    public async Task EveryRefusal_FailsThatCall_AndTheHandleNegotiatesOn()
    {
        await using ScriptedServer server = RefusingAllButGo();
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.AddMetaContext(MetaContext.BaseAllocation);
        Scripted.Within(() =>
        {
            h.ConnectUri(server.Uri);
            return 0;
        });
        Assert.True(h.AioIsNegotiating());
        Assert.False(h.GetStructuredRepliesNegotiated()); // refused too, while connecting

        var refused = new List<(string Call, Action Run, int Errno)>
        {
            ("OptList", () => h.OptList((_, _) => 0), Errno.ENOTSUP),
            ("OptListMetaContext", () => h.OptListMetaContext(_ => 0), Errno.ENOTSUP),
            ("OptListMetaContextQueries", () => h.OptListMetaContextQueries([], _ => 0), Errno.ENOTSUP),
            ("OptSetMetaContext", () => h.OptSetMetaContext(_ => 0), Errno.ENOTSUP),
            ("OptSetMetaContextQueries", () => h.OptSetMetaContextQueries([MetaContext.BaseAllocation], _ => 0), Errno.ENOTSUP),
            ("OptInfo", h.OptInfo, Errno.ENOTSUP),
        };
        foreach ((string call, Action run, int errno) in refused)
        {
            var e = Assert.Throws<NbdServerException>(run);
            Assert.True(errno == e.Errno, call + ": " + e.Message);
            Assert.True(h.AioIsNegotiating(), call + " left the handle " + h.ConnectionState());
        }
        Assert.False(Scripted.Within(h.OptStructuredReply));
        Assert.False(Scripted.Within(h.OptExtendedHeaders));

        var errors = new List<int>();
        CompletionCallback record = (ref int error) =>
        {
            errors.Add(error);
            return 1;
        };
        h.AioOptList((_, _) => 0, record);
        PollWhileConnecting(h);
        h.AioOptListMetaContextQueries([], _ => 0, record);
        PollWhileConnecting(h);
        h.AioOptSetMetaContext(_ => 0, record);
        PollWhileConnecting(h);
        h.AioOptInfo(record);
        PollWhileConnecting(h);
        Assert.Equal([Errno.ENOTSUP, Errno.ENOTSUP, Errno.ENOTSUP, Errno.ENOTSUP], errors);
        Assert.True(h.AioIsNegotiating());

        Scripted.Within(() =>
        {
            h.OptGo();
            return 0;
        });
        Assert.True(h.AioIsReady());
        Assert.Equal(1 << 20, h.GetSize());
    }

    private static void PollWhileConnecting(NbdHandle h)
    {
        DateTime until = DateTime.UtcNow + Scripted.Deadline;
        while (h.AioIsConnecting())
        {
            Assert.True(DateTime.UtcNow < until, "the option did not finish");
            h.Poll(1000);
        }
    }
}
