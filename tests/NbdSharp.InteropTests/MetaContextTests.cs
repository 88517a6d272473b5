using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>base:allocation, qemu:dirty-bitmap:NAME and qemu:allocation-depth from qemu-nbd, several in one call.</summary>
public class MetaContextTests
{
    private const string Bitmap = "qemu:dirty-bitmap:b0";
    private const ulong Size = 64 << 20;

    /// <summary>What libnbd reports for one BlockStatus over the whole disk with the three contexts.</summary>
    private const string Script = """
        import json, sys, nbd
        h = nbd.NBD()
        for c in sys.argv[2:]:
            h.add_meta_context(c)
        h.connect_uri(sys.argv[1])
        out = {}
        def cb(meta, off, entries, err):
            out.setdefault(meta, []).extend([[entries[i], entries[i + 1]] for i in range(0, len(entries), 2)])
            return 0
        h.block_status(h.get_size(), 0, cb)
        h.shutdown()
        print(json.dumps(out))
        """;

    private static Dictionary<string, List<(ulong Length, uint Flags)>> OneCall(NbdHandle h)
    {
        var seen = new Dictionary<string, List<(ulong, uint)>>(StringComparer.Ordinal);
        h.BlockStatus(Size, 0, (string context, ulong offset, ReadOnlySpan<uint> entries, ref int _) =>
        {
            Assert.Equal(0UL, offset);
            if (!seen.TryGetValue(context, out List<(ulong, uint)>? list))
                seen[context] = list = [];
            for (int i = 0; i + 1 < entries.Length; i += 2)
                list.Add((entries[i], entries[i + 1]));
            return 0;
        });
        return seen;
    }

    /// <summary>The flags at <paramref name="offset"/> in a list of extents starting at 0.</summary>
    private static uint At(List<(ulong Length, uint Flags)> extents, ulong offset)
    {
        ulong start = 0;
        foreach ((ulong length, uint flags) in extents)
        {
            if (offset < start + length)
                return flags;
            start += length;
        }
        throw new InvalidOperationException($"no extent covers {offset}");
    }

    [Fact]
    public void ThreeContexts_InOneBlockStatus_MatchTheImageAndLibnbd()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-B", "b0", "-A");
        string[] contexts = [MetaContext.BaseAllocation, Bitmap, MetaContext.QemuAllocationDepth];
        using var h = new NbdHandle();
        foreach (string context in contexts)
            h.AddMetaContext(context);
        h.ConnectUri(server.Uri);
        foreach (string context in contexts)
            Assert.True(h.CanMetaContext(context), context);

        Dictionary<string, List<(ulong Length, uint Flags)>> ours = OneCall(h);
        Assert.Equal(contexts.Order(StringComparer.Ordinal), ours.Keys.Order(StringComparer.Ordinal));

        // What the image holds: backing data at depth 2, the overlay's write at depth 1 and dirty, the rest absent.
        List<(ulong Length, uint Flags)> depth = ours[MetaContext.QemuAllocationDepth];
        Assert.Equal(0u, At(depth, 0));
        Assert.Equal(2u, At(depth, QemuImages.BackingData));
        Assert.Equal(1u, At(depth, QemuImages.DirtyData));
        List<(ulong Length, uint Flags)> dirty = ours[Bitmap];
        Assert.Equal(0u, At(dirty, QemuImages.BackingData));
        Assert.Equal(1u, At(dirty, QemuImages.DirtyData));
        Assert.Equal(1u, At(dirty, QemuImages.DirtyData + QemuImages.DirtyLength - 1));
        Assert.Equal(0u, At(dirty, QemuImages.DirtyData + QemuImages.DirtyLength) & 1);
        List<(ulong Length, uint Flags)> allocation = ours[MetaContext.BaseAllocation];
        Assert.Equal((uint)(BlockStatusFlag.Hole | BlockStatusFlag.Zero), At(allocation, 0));
        Assert.Equal(0u, At(allocation, QemuImages.BackingData));
        Assert.Equal(0u, At(allocation, QemuImages.DirtyData));

        JsonElement theirs = JsonDocument.Parse(Libnbd.Python(Script, [server.Uri, .. contexts])).RootElement;
        foreach (string context in contexts)
        {
            var expected = theirs.GetProperty(context).EnumerateArray()
                .Select(e => (e[0].GetUInt64(), e[1].GetUInt32())).ToList();
            Assert.Equal(expected, ours[context]);
        }
    }

    [Fact]
    public void OnlyTheBitmap_IsReported_WhenOnlyItIsRequested()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-B", "b0");
        using var h = new NbdHandle();
        h.AddMetaContext(Bitmap);
        h.AddMetaContext(MetaContext.QemuAllocationDepth); // not exported without -A: silently not negotiated
        h.ConnectUri(server.Uri);
        Assert.True(h.CanMetaContext(Bitmap));
        Assert.False(h.CanMetaContext(MetaContext.QemuAllocationDepth));
        Assert.False(h.CanMetaContext(MetaContext.BaseAllocation));
        Dictionary<string, List<(ulong Length, uint Flags)>> ours = OneCall(h);
        Assert.Equal([Bitmap], ours.Keys);
        Assert.Equal(1u, At(ours[Bitmap], QemuImages.DirtyData));
    }
}
