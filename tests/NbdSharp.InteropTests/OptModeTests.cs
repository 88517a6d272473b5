using System;
using System.Collections.Generic;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Opt mode: the caller drives the handshake by hand, against nbdkit with several exports and qemu-nbd.</summary>
public class OptModeTests
{
    /// <summary>nbdkit serving exports "a" (the default) and "b", each described by a script, and nothing else.</summary>
    private static ServerProcess TwoExports() => Peers.Nbdkit("--filter=exportname", "memory", "1M",
        "exportname=a", "exportname=b", "exportname-list=explicit", "exportname-strict=true", "default-export=a",
        "exportdesc=script:echo \"about $name\"");

    private static NbdHandle Negotiating(ServerProcess server)
    {
        var h = new NbdHandle();
        h.SetOptMode(true);
        Assert.True(h.GetOptMode());
        h.ConnectUnix(server.Socket);
        Assert.True(h.AioIsNegotiating());
        return h;
    }

    [Fact]
    public void List_Info_Refusal_Go()
    {
        using ServerProcess server = TwoExports();
        using NbdHandle h = Negotiating(server);

        var exports = new List<string>();
        int count = h.OptList((name, description) =>
        {
            exports.Add($"{name}={description}");
            return 0;
        });
        Assert.Equal(2, count);
        Assert.Equal(["a=about a", "b=about b"], exports);

        // An unknown export is refused with the server's errno, and the handle stays usable.
        h.SetExportName("zz");
        NbdServerException refused = Assert.Throws<NbdServerException>(h.OptInfo);
        Assert.Equal(Errno.ENOENT, refused.Errno);
        Assert.Contains("nbd_opt_info", refused.Message, StringComparison.Ordinal);
        Assert.True(h.AioIsNegotiating());

        h.SetFullInfo(true);
        h.SetExportName("b");
        h.OptInfo();
        Assert.True(h.AioIsNegotiating());
        Assert.Equal(1 << 20, h.GetSize());
        Assert.Equal("about b", h.GetExportDescription());
        Assert.Equal("b", h.GetCanonicalExportName());
        Assert.True(h.CanFlush());

        // Changing the name forgets what OptInfo learned, as in libnbd.
        h.SetExportName("");
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.GetSize()).Errno);

        // A refused go stays negotiating ("" is not permitted by exportname-strict); another name then works.
        Assert.Equal(Errno.ENOENT, Assert.Throws<NbdServerException>(h.OptGo).Errno);
        Assert.True(h.AioIsNegotiating());
        h.SetExportName("a");
        h.OptGo();
        Assert.True(h.AioIsReady());
        Assert.Equal("a", h.GetCanonicalExportName());
        Assert.Equal("about a", h.GetExportDescription());
        h.Pwrite([1, 2, 3], 0);
        byte[] back = new byte[3];
        h.Pread(back, 0);
        Assert.Equal(new byte[] { 1, 2, 3 }, back);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(h.OptInfo).Errno);
    }

    [Fact]
    public void List_MatchesLibnbd()
    {
        using ServerProcess server = TwoExports();
        using NbdHandle h = Negotiating(server);
        var ours = new List<string>();
        h.OptList((name, description) =>
        {
            ours.Add($"{name}\t{description}");
            return 0;
        });
        string theirs = Libnbd.Python("""
            import nbd, sys
            h = nbd.NBD()
            h.set_opt_mode(True)
            h.connect_uri(sys.argv[1])
            h.opt_list(lambda n, d: print(n + "\t" + d) or 0)
            h.opt_abort()
            """, server.Uri);
        Assert.Equal(theirs.TrimEnd('\n').Split('\n'), ours);
    }

    [Fact]
    public void Abort_ClosesCleanly()
    {
        using ServerProcess server = TwoExports();
        using NbdHandle h = Negotiating(server);
        h.OptAbort();
        Assert.True(h.AioIsClosed());
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(h.OptGo).Errno);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.Pread(new byte[1], 0)).Errno);
    }

    [Fact]
    public void StructuredAndExtendedHeaders_AgainstAServerWithoutExtendedHeaders()
    {
        using ServerProcess server = TwoExports();
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetRequestStructuredReplies(false);
        h.SetRequestExtendedHeaders(false);
        h.ConnectUnix(server.Socket);
        Assert.False(h.GetStructuredRepliesNegotiated());
        // nbdkit 1.32 predates extended headers: refused, and the handle keeps negotiating.
        Assert.False(h.OptExtendedHeaders());
        Assert.False(h.GetExtendedHeadersNegotiated());
        Assert.True(h.OptStructuredReply());
        Assert.True(h.GetStructuredRepliesNegotiated());
        h.SetExportName("a");
        h.OptGo();
        Assert.Equal("newstyle-fixed", h.GetProtocol());
        Assert.True(h.GetStructuredRepliesNegotiated());
        var seen = new List<uint>();
        h.PreadStructured(new byte[4096], 0, (ReadOnlySpan<byte> _, ulong _, uint status, ref int _) =>
        {
            seen.Add(status);
            return 0;
        });
        Assert.NotEmpty(seen);
    }

    [Fact]
    public void SyncConnect_ThenAioOptions_RunOnTheSameSocket()
    {
        // On Linux a synchronous Unix connect opens its socket with libc and no .NET Socket; the aio options that
        // follow negotiate asynchronously, through a Socket made then over the same descriptor.
        using ServerProcess server = TwoExports();
        using NbdHandle h = Negotiating(server);
        var exports = new List<string>();
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptList((name, _) =>
        {
            exports.Add(name);
            return 0;
        }, c)));
        Assert.Equal(["a", "b"], exports);
        h.SetExportName("b");
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptGo(c)));
        Assert.True(h.AioIsReady());
        byte[] data = new byte[4096];
        h.Pwrite([1, 2, 3], 4093);
        h.Pread(data, 0);
        Assert.Equal([1, 2, 3], data[4093..]);
        h.Shutdown();
    }

    [Fact]
    public void AioForms_CompleteThroughPoll()
    {
        using ServerProcess server = TwoExports();
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.AioConnectUnix(server.Socket);
        while (h.AioIsConnecting())
            h.Poll(-1);
        Assert.True(h.AioIsNegotiating());

        var exports = new List<string>();
        int listed = -1;
        h.AioOptList((name, _) =>
        {
            exports.Add(name);
            return 0;
        }, (ref int error) =>
        {
            listed = error;
            return 1;
        });
        Assert.Equal(-1, listed);
        while (listed == -1)
            h.Poll(-1);
        Assert.Equal(0, listed);
        Assert.Equal(["a", "b"], exports);

        h.SetExportName("nope");
        Assert.Equal(Errno.ENOENT, Exercise.Complete(h, c => h.AioOptInfo(c)));
        Assert.True(h.AioIsNegotiating());

        // Contexts belong to an export name: choose the name first.
        h.SetExportName("b");
        var contexts = new List<string>();
        int set = -1;
        h.AioOptSetMetaContextQueries([MetaContext.BaseAllocation], name =>
        {
            contexts.Add(name);
            return 0;
        }, (ref int error) =>
        {
            set = error;
            return 1;
        });
        while (set == -1)
            h.Poll(-1);
        Assert.Equal(0, set);
        Assert.Equal([MetaContext.BaseAllocation], contexts);

        h.SetRequestMetaContext(false);
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptGo(c)));
        Assert.True(h.AioIsReady());
        // The context chosen by hand before going stays in force.
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        int extents = 0;
        h.BlockStatus(65536, 0, (string context, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
        {
            Assert.Equal(MetaContext.BaseAllocation, context);
            extents += entries.Length / 2;
            return 0;
        });
        Assert.True(extents > 0);
    }

    [Fact]
    public void AioAbort_EndsConnecting()
    {
        using ServerProcess server = TwoExports();
        using NbdHandle h = Negotiating(server);
        h.AioOptAbort();
        while (h.AioIsConnecting())
            h.Poll(-1);
        Assert.True(h.AioIsClosed());
    }

    [Fact]
    public void MetaContexts_ListSetAndRequestList_AgainstQemuNbd()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-B", "b0", "-A");
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.ConnectUnix(server.Socket);

        var all = new List<string>();
        Assert.Equal(3, h.OptListMetaContext(name =>
        {
            all.Add(name);
            return 0;
        }));
        all.Sort(StringComparer.Ordinal);
        Assert.Equal([MetaContext.BaseAllocation, MetaContext.QemuAllocationDepth, "qemu:dirty-bitmap:b0"], all);

        var qemu = new List<string>();
        h.OptListMetaContextQueries(["qemu:"], name =>
        {
            qemu.Add(name);
            return 0;
        });
        qemu.Sort(StringComparer.Ordinal);
        Assert.Equal([MetaContext.QemuAllocationDepth, "qemu:dirty-bitmap:b0"], qemu);

        // The request list: add, count, read back, clear.
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.AddMetaContext("qemu:dirty-bitmap:b0");
        h.AddMetaContext("no:such-context");
        Assert.Equal(3, h.GetNrMetaContexts());
        Assert.Equal("qemu:dirty-bitmap:b0", h.GetMetaContext(1));
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdException>(() => h.GetMetaContext(3)).Errno);
        var chosen = new List<string>();
        Assert.Equal(2, h.OptSetMetaContext(name =>
        {
            chosen.Add(name);
            return 0;
        }));
        chosen.Sort(StringComparer.Ordinal);
        Assert.Equal([MetaContext.BaseAllocation, "qemu:dirty-bitmap:b0"], chosen);
        h.ClearMetaContexts();
        Assert.Equal(0, h.GetNrMetaContexts());

        // OptGo with nothing requested and request-meta-context on sends an empty SET: no contexts remain.
        h.OptGo();
        Assert.False(h.CanMetaContext(MetaContext.BaseAllocation));
        Assert.Equal(Errno.ENOTSUP, Assert.Throws<NbdException>(() =>
            h.BlockStatus(65536, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0)).Errno);
    }

    [Fact]
    public void RemainingAioOptions_AgainstQemuNbd()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-B", "b0", "-A");
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetRequestStructuredReplies(false);
        h.SetRequestExtendedHeaders(false);
        h.ConnectUnix(server.Socket);

        // qemu 7.2 predates extended headers: the refusal reaches the callback as ENOTSUP.
        Assert.Equal(Errno.ENOTSUP, Exercise.Complete(h, c => h.AioOptExtendedHeaders(c)));
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptStructuredReply(c)));
        Assert.True(h.GetStructuredRepliesNegotiated());

        var listed = new List<string>();
        h.AddMetaContext(MetaContext.QemuDirtyBitmap + "b0");
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptListMetaContext(name =>
        {
            listed.Add(name);
            return 0;
        }, c)));
        Assert.Equal(["qemu:dirty-bitmap:b0"], listed);

        listed.Clear();
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptListMetaContextQueries([MetaContext.NamespaceBase], name =>
        {
            listed.Add(name);
            return 0;
        }, c)));
        Assert.Equal([MetaContext.BaseAllocation], listed);

        listed.Clear();
        Assert.Equal(0, Exercise.Complete(h, c => h.AioOptSetMetaContext(name =>
        {
            listed.Add(name);
            return 0;
        }, c)));
        Assert.Equal(["qemu:dirty-bitmap:b0"], listed);

        listed.Clear();
        Assert.Equal(2, h.OptSetMetaContextQueries([MetaContext.QemuAllocationDepth, MetaContext.BaseAllocation], name =>
        {
            listed.Add(name);
            return 0;
        }));
        listed.Sort(StringComparer.Ordinal);
        Assert.Equal([MetaContext.BaseAllocation, MetaContext.QemuAllocationDepth], listed);

        // Keep that selection through GO; the handle reports exactly it.
        h.SetRequestMetaContext(false);
        Assert.False(h.GetRequestMetaContext());
        h.OptGo();
        Assert.True(h.CanMetaContext(MetaContext.QemuAllocationDepth));
        Assert.True(h.CanMetaContext(MetaContext.BaseAllocation));
        Assert.False(h.CanMetaContext("qemu:dirty-bitmap:b0"));
    }

    [Fact]
    public void RequestBlockSize_AsksForTheConstraints_OnlyWhenSet()
    {
        using ServerProcess server = Peers.Nbdkit("--filter=blocksize-policy", "memory", "1M",
            "blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=262144");
        using (var h = new NbdHandle())
        {
            Assert.True(h.GetRequestBlockSize());
            h.ConnectUnix(server.Socket);
            Assert.Equal(4096, h.GetBlockSize(SizeKind.Minimum));
            Assert.Equal(65536, h.GetBlockSize(SizeKind.Preferred));
            Assert.Equal(262144, h.GetBlockSize(SizeKind.Maximum));
        }
        using (var h = new NbdHandle())
        {
            h.SetRequestBlockSize(false);
            Assert.False(h.GetRequestBlockSize());
            h.ConnectUnix(server.Socket);
            Assert.Equal(0, h.GetBlockSize(SizeKind.Minimum));
            Assert.Equal(0, h.GetBlockSize(SizeKind.Maximum));
        }
    }
}
