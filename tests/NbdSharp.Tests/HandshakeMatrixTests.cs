using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Text;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The H group of the hostile-server matrix: every handshake misbehaviour, through the synchronous, Task-based
/// and aio connect. A broken handshake fails the connect within the deadline with the errno the case names and
/// leaves the handle dead (and disposable); a strange but valid one connects with defined behaviour.
/// </summary>
[Collection(nameof(SerialCollection))]
public class HandshakeMatrixTests
{
    private const uint Ack = 1, Info = 3, MetaContext = 4, ErrUnsup = 0x80000001, ErrUnknown = 0x80000006;
    private const uint OptExportName = 1, OptGo = 7, OptStructuredReply = 8, OptSetMetaContext = 10;

    /// <summary>How the connect is made.</summary>
    public enum Api
    {
        Sync,
        Task,
        Aio,
    }

    /// <summary>A case: its script (after nothing: it sends the greeting itself), and the expected outcome.</summary>
    /// <param name="Script">The server's side, greeting included.</param>
    /// <param name="Errno">The connect's errno, or 0 when it must connect.</param>
    /// <param name="Message">A fragment of the error message, or of nothing.</param>
    /// <param name="Then">What to check on a connected handle.</param>
    /// <param name="Configure">Settings of the handle before it connects.</param>
    private sealed record Row(Func<ScriptedConnection, Task> Script, int Errno, string Message = "", Action<NbdHandle>? Then = null,
        Action<NbdHandle>? Configure = null);

    private static readonly Dictionary<string, Row> Cases = new()
    {
        ["H1 bad NBDMAGIC"] = new(c => c.WriteAsync(Encoding.ASCII.GetBytes("NBDMAGIXIHAVEOPT\0\u0003")), Errno.EPROTO, "did not send expected NBD magic"),
        ["H1 neither oldstyle nor IHAVEOPT"] = new(c => c.WriteAsync(Encoding.ASCII.GetBytes("NBDMAGICIHAVEOPX\0\u0003")), Errno.EPROTO, "not either an oldstyle or fixed newstyle"),
        ["H1 not fixed newstyle with TLS required"] = new(async c =>
        {
            await c.SendNewstyleGreetingAsync(globalFlags: 0);
            await c.DrainAsync();
        }, Errno.ENOTSUP, "not using fixed newstyle", Configure: h => h.SetTls(TlsMode.Require)),
        ["H1 not fixed newstyle falls back to NBD_OPT_EXPORT_NAME"] = new(async c =>
        {
            await c.SendNewstyleGreetingAsync(globalFlags: 0);
            await c.ReadClientFlagsAsync();
            (uint option, _) = await c.ReadOptionAsync();
            Assert.Equal(OptExportName, option);
            byte[] reply = new byte[8 + 2 + 124];
            BinaryPrimitives.WriteUInt64BigEndian(reply, 1 << 20);
            BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), 0x0001);
            await c.WriteAsync(reply);
            await c.DrainAsync();
        }, 0, Then: h => Assert.Equal(("newstyle", 1L << 20), (h.GetProtocol(), h.GetSize()))),
        ["H3 wrong option reply magic"] = new(Go(c => c.WriteAsync(new byte[20])), Errno.EPROTO, "invalid option reply magic"),
        ["H4 reply for another option"] = new(Go(c => c.ReplyOptionAsync(OptStructuredReply, Ack)), Errno.EPROTO, "invalid option reply magic or option"),
        ["H5 option reply of 0xFFFFFFF0 bytes"] = new(Go(c => c.ReplyOptionAsync(OptGo, Info, new byte[16], claimedLength: 0xFFFFFFF0)), Errno.EPROTO, "invalid option reply length"),
        ["H6 NBD_INFO_EXPORT too short"] = new(Go(c => c.ReplyOptionAsync(OptGo, Info, new byte[6])), Errno.EPROTO, "incorrect NBD_INFO_EXPORT option reply length"),
        ["H6 NBD_INFO of one byte"] = new(Go(c => c.ReplyOptionAsync(OptGo, Info, new byte[1])), Errno.EPROTO, "NBD_REP_INFO reply length too small"),
        ["H7 context name over 4096 bytes"] = new(Contexts(c => c.ReplyOptionAsync(OptSetMetaContext, MetaContext, new byte[4 + 5000])), Errno.EPROTO, "invalid NBD_REP_META_CONTEXT reply length"),
        ["H7 context reply too short for an id"] = new(Contexts(c => c.ReplyOptionAsync(OptSetMetaContext, MetaContext, new byte[3])), Errno.EPROTO, "invalid NBD_REP_META_CONTEXT reply length"),
        ["H6 NBD_INFO_BLOCK_SIZE of the wrong length"] = new(Go(async c =>
        {
            await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
            await c.ReplyOptionAsync(OptGo, Info, [0, 3, 0, 0, 2, 0]);
        }), Errno.EPROTO, "incorrect NBD_INFO_BLOCK_SIZE option reply length"),
        ["H7 a context the client did not ask for"] = new(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            while (true)
            {
                (uint option, _) = await c.ReadOptionAsync();
                if (option == OptSetMetaContext)
                {
                    byte[] context = new byte[4 + 13];
                    BinaryPrimitives.WriteUInt32BigEndian(context, 7);
                    Encoding.ASCII.GetBytes("qemu:surprise").CopyTo(context, 4);
                    await c.ReplyOptionAsync(option, MetaContext, context);
                    await c.ReplyOptionAsync(option, Ack);
                }
                else if (option == OptGo)
                {
                    await c.ReplyOptionAsync(option, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
                    await c.ReplyOptionAsync(option, Ack);
                    break;
                }
                else
                {
                    await c.ReplyOptionAsync(option, option == OptStructuredReply ? Ack : ErrUnsup);
                }
            }
            await c.DrainAsync();
        }, 0, Then: h => Assert.False(h.CanMetaContext(NbdSharp.MetaContext.BaseAllocation))),
        ["H8 unknown reply type to GO"] = new(Go(c => c.ReplyOptionAsync(OptGo, 99)), Errno.EPROTO, ""),
        ["H9 error reply with a message over 4096 bytes"] = new(Go(c => c.ReplyOptionAsync(OptGo, ErrUnknown, new byte[5000])), Errno.EPROTO, "option error string too long"),
        ["H9 error reply to GO with an escape sequence"] = new(Go(c => c.ReplyOptionAsync(OptGo, ErrUnknown, Encoding.UTF8.GetBytes("no such export\u001b[31m"))), Errno.ENOENT, @"no such export\x1b[31m"),
        ["H10 export size 2^64-1"] = new(Export(ulong.MaxValue, 0x0001), 0, Then: h =>
            Assert.Equal(Errno.EOVERFLOW, Assert.Throws<NbdException>(() => h.GetSize()).Errno)),
        ["H10 export size 2^63"] = new(Export(1UL << 63, 0x0001), 0, Then: h =>
            Assert.Equal(Errno.EOVERFLOW, Assert.Throws<NbdException>(() => h.GetSize()).Errno)),
        ["H10 export size 2^63+4096"] = new(Export((1UL << 63) + 4096, 0x0001), 0, Then: h =>
            Assert.Equal(Errno.EOVERFLOW, Assert.Throws<NbdException>(() => h.GetSize()).Errno)),
        ["H11 export size 0"] = new(Export(0, 0x0001), 0, Then: h =>
        {
            Assert.Equal(0, h.GetSize());
            Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Pread(new byte[1], 0)).Errno);
        }),
        ["H12 nonsense block sizes are ignored"] = new(Go(async c =>
        {
            await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
            byte[] sizes = new byte[14];
            BinaryPrimitives.WriteUInt16BigEndian(sizes, 3);
            BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), 4096);
            BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), 3000);
            BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), 512);
            await c.ReplyOptionAsync(OptGo, Info, sizes);
            await c.ReplyOptionAsync(OptGo, Ack);
            ScriptedRequest read = await c.ReadRequestAsync();
            await c.SendSimpleReplyAsync(read.Cookie, data: new byte[read.Length]);
        }), 0, Then: h =>
        {
            Assert.Equal(0, h.GetBlockSize(SizeKind.Minimum));
            Scripted.Within(() =>
            {
                h.Pread(new byte[512], 0);
                return 0;
            });
        }),
        ["H13 flags without HAS_FLAGS are used as sent"] = new(Export(1 << 20, 0x0004 | 0x0008), 0, Then: h =>
        {
            Assert.True(h.CanFlush());
            Assert.True(h.CanFua());
        }),
        ["H13 export flags 0"] = new(Export(1 << 20, 0), Errno.EINVAL, "invalid eflags"),
        ["H17 server gone in the middle of the GO reply"] = new(Go(async c =>
        {
            await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
            await c.WriteAsync([0x00, 0x03, 0xe8]);
            c.Close();
        }), Errno.ENOTCONN, ""),
        ["H17 server gone before acknowledging GO"] = new(Go(async c =>
        {
            await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(1 << 20, 0x0001));
            c.Close();
        }), Errno.ENOTCONN, ""),
    };

    /// <summary>Negotiates normally up to NBD_OPT_GO (no structured replies), then lets <paramref name="go"/> answer it.</summary>
    private static Func<ScriptedConnection, Task> Go(Func<ScriptedConnection, Task> go) => Scripted.RefuseOptionsUntilGo(go);

    /// <summary>Accepts structured replies, then lets <paramref name="reply"/> answer NBD_OPT_SET_META_CONTEXT.</summary>
    private static Func<ScriptedConnection, Task> Contexts(Func<ScriptedConnection, Task> reply) =>
        Scripted.RefuseOptionsUntil(OptSetMetaContext, reply, acknowledged: OptStructuredReply);

    private static Func<ScriptedConnection, Task> Export(ulong size, ushort flags) => Go(async c =>
    {
        await c.ReplyOptionAsync(OptGo, Info, ScriptedConnection.InfoExport(size, flags));
        await c.ReplyOptionAsync(OptGo, Ack);
    });

    private static NbdException? Failure(Action connect)
    {
        try
        {
            connect();
            return null;
        }
        catch (NbdException e)
        {
            return e;
        }
    }

    private static async Task<NbdException?> TaskFailureAsync(Task connect)
    {
        try
        {
            await connect.WaitAsync(Scripted.Deadline);
            return null;
        }
        catch (NbdException e)
        {
            return e;
        }
    }

    public static TheoryData<string, Api> Matrix()
    {
        var data = new TheoryData<string, Api>();
        foreach (string id in Cases.Keys)
        {
            foreach (Api api in Enum.GetValues<Api>())
                data.Add(id, api);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public async Task TheConnectEndsAsTheCaseSays(string id, Api api)
    {
        Row row = Cases[id];
        await using var server = ScriptedServer.Start(row.Script);
        using var h = new NbdHandle();
        h.AddMetaContext(NbdSharp.MetaContext.BaseAllocation);
        row.Configure?.Invoke(h);
        NbdException? failure = await ConnectAsync(h, server, api);
        if (row.Errno == 0)
        {
            Assert.Null(failure);
            Assert.True(h.AioIsReady(), "the handle should be connected");
            row.Then?.Invoke(h);
        }
        else
        {
            Assert.NotNull(failure);
            Assert.Equal(row.Errno, failure.Errno);
            Assert.Contains(row.Message, failure.Message, StringComparison.Ordinal);
            Assert.True(h.AioIsDead(), "a failed connect leaves the handle dead");
        }
    }

    /// <summary>
    /// H5's bound: refusing an option reply that claims 0xFFFFFFF0 bytes allocates under 64 KiB more than
    /// refusing one of 16 honest bytes through the same connect (whose own sockets, tasks and exception are
    /// not the claim's doing).
    /// </summary>
    [Theory]
    [InlineData(Api.Sync)]
    [InlineData(Api.Task)]
    [InlineData(Api.Aio)]
    public async Task AHugeOptionReplyClaim_AllocatesNothingForIt(Api api)
    {
        // The server waits for the close reading a byte at a time: a drain buffer of its own, allocated while
        // the client is being measured, would be counted against the client.
        static async Task WaitForCloseAsync(ScriptedConnection c)
        {
            try
            {
                while ((await c.ReadExactlyAsync(1)).Length == 1)
                {
                }
            }
            catch (System.IO.IOException)
            {
            }
        }
        long honest = await AllocatedByFailedConnectAsync(Scripted.RefuseOptionsUntilGo(c => c.ReplyOptionAsync(OptGo, Info, new byte[16]), WaitForCloseAsync), api);
        long huge = await AllocatedByFailedConnectAsync(Scripted.RefuseOptionsUntilGo(c => c.ReplyOptionAsync(OptGo, Info, new byte[16], claimedLength: 0xFFFFFFF0), WaitForCloseAsync), api);
        Assert.True(huge - honest < 64 * 1024, $"{huge} bytes allocated against {honest} for an honest reply");
    }

    private static async Task<long> AllocatedByFailedConnectAsync(Func<ScriptedConnection, Task> script, Api api)
    {
        // The counter is the process's: whatever else still runs (an earlier test's server winding down, the
        // runtime's own threads) adds to it. The least of six connects, the first of which pays first-use costs,
        // is the connect's own.
        long allocated = long.MaxValue;
        for (int i = 0; i < 6; i++)
        {
            await using var server = ScriptedServer.Start(script);
            using var h = new NbdHandle();
            long before = GC.GetTotalAllocatedBytes(precise: true);
            NbdException? failure = await ConnectAsync(h, server, api);
            allocated = Math.Min(allocated, GC.GetTotalAllocatedBytes(precise: true) - before);
            Assert.Equal(Errno.EPROTO, failure?.Errno);
        }
        return allocated;
    }

    private static async Task<NbdException?> ConnectAsync(NbdHandle h, ScriptedServer server, Api api) => api switch
    {
        Api.Sync => Scripted.Within(() => Failure(() => h.ConnectUri(server.Uri))),
        Api.Task => await TaskFailureAsync(h.ConnectUriAsync(server.Uri)),
        _ => Scripted.Within(() => Failure(() =>
        {
            h.AioConnectUri(server.Uri);
            while (h.AioIsConnecting())
                h.Poll(1000);
        })),
    };
}
