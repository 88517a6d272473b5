using System;
using System.IO;
using System.Text.Json;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>qemu-nbd (raw and qcow2) and nbd-server (simple replies only).</summary>
public class QemuAndNbdServerTests
{
    private static string RawImage(TempDirectory dir, long size)
    {
        string image = dir.File("disk.img");
        Peers.Run("qemu-img", "create", "-q", "-f", "raw", image, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return image;
    }

    private static string Qcow2Image(TempDirectory dir)
    {
        string image = dir.File("disk.qcow2");
        Peers.Run("qemu-img", "create", "-q", "-f", "qcow2", image, "64M");
        Peers.Run("qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 2M", "-c", "write -P 9 8M 64k", image);
        return image;
    }

    [Fact]
    public void QemuNbdRaw_ReadWriteAndCommands()
    {
        using ServerProcess server = Peers.QemuNbd("raw", dir => RawImage(dir, 16 << 20));
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.ConnectUri(server.Uri);
        Oracle.SameExport(h, Libnbd.Describe(server.Uri));
        byte[] data = new byte[1 << 20];
        new Random(4).NextBytes(data);
        h.Pwrite(data, 3 << 20, h.CanFua() ? CmdFlag.Fua : CmdFlag.None);
        h.Flush();
        byte[] back = new byte[1 << 20];
        h.Pread(back, 3 << 20);
        Assert.Equal(data, back);
        h.Zero(65536, 3 << 20);
        // qemu-nbd ignores discards by default: a trim may leave the data (proto.md: contents undefined).
        h.Trim(65536, (3 << 20) + 65536);
        h.Pread(back.AsSpan(0, 65536), 3 << 20);
        Assert.All(back[..65536], b => Assert.Equal(0, b));
        JsonElement libnbd = Libnbd.Describe(server.Uri, 0, 16 << 20, MetaContext.BaseAllocation);
        Assert.Equal(libnbd.GetProperty("sha256").GetString(), Oracle.Sha256(h, 0, 16 << 20));
        Assert.Equal(Oracle.Extents(libnbd), Oracle.Extents(h, 0, 16 << 20));
    }

    [Fact]
    public void QemuNbdQcow2_HolesAreZeroFilled_AndDataMatches()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", Qcow2Image);
        using var h = new NbdHandle();
        h.AddMetaContext(MetaContext.BaseAllocation);
        h.SetPreadInitialize(false);
        h.ConnectUri(server.Uri);
        byte[] buffer = new byte[4 << 20];
        buffer.AsSpan().Fill(0xEE);
        int holes = 0;
        h.PreadStructured(buffer, 0, (ReadOnlySpan<byte> _, ulong _, uint status, ref int _) =>
        {
            if (status == ReadStatus.Hole)
                holes++;
            return 0;
        });
        Assert.True(holes > 0, "qemu-nbd should answer unallocated ranges with hole chunks");
        Assert.All(buffer[..(1 << 20)], b => Assert.Equal(0, b));
        Assert.All(buffer[(1 << 20)..(3 << 20)], b => Assert.Equal(7, b));
        Assert.All(buffer[(3 << 20)..], b => Assert.Equal(0, b));
        JsonElement libnbd = Libnbd.Describe(server.Uri, 0, 64 << 20, MetaContext.BaseAllocation);
        Assert.Equal(libnbd.GetProperty("sha256").GetString(), Oracle.Sha256(h, 0, 64 << 20));
        Assert.Equal(Oracle.Extents(libnbd), Oracle.Extents(h, 0, 64 << 20));
    }

    [Fact]
    public void QemuNbdReadOnly_RefusesWrites()
    {
        using ServerProcess server = Peers.QemuNbd("qcow2", Qcow2Image, "-r");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        Assert.True(h.IsReadOnly());
        Assert.Equal(Errno.EPERM, Assert.Throws<NbdException>(() => h.Pwrite(new byte[512], 0)).Errno);
        // With strict mode off the write reaches qemu-nbd, which refuses it with EINVAL (libnbd sees the same).
        h.SetStrictMode(StrictFlag.None);
        Assert.Equal(Errno.EINVAL, Assert.Throws<NbdServerException>(() => h.Pwrite(new byte[512], 0)).Errno);
    }

    [Fact]
    public void NbdServer_SimpleReplies_ReadWrite()
    {
        using ServerProcess server = Peers.NbdServer("exp1", dir =>
        {
            string file = dir.File("export.img");
            File.WriteAllBytes(file, new byte[8 << 20]);
            return file;
        });
        using var h = new NbdHandle();
        h.ConnectUri(server.UriFor("exp1"));
        Assert.False(h.GetStructuredRepliesNegotiated());
        Assert.Equal(8 << 20, h.GetSize());
        byte[] data = new byte[1 << 20];
        new Random(8).NextBytes(data);
        h.Pwrite(data, 1 << 20);
        if (h.CanFlush())
            h.Flush();
        byte[] back = new byte[1 << 20];
        h.Pread(back, 1 << 20);
        Assert.Equal(data, back);
        // Many reads in flight over simple replies.
        byte[][] reads = new byte[16][];
        for (int i = 0; i < reads.Length; i++)
        {
            reads[i] = new byte[65536];
            h.AioPread(reads[i], (1 << 20) + (ulong)(i * 65536), (ref int error) =>
            {
                Assert.Equal(0, error);
                return 1;
            });
        }
        while (h.AioInFlight() > 0)
            h.Poll(-1);
        for (int i = 0; i < reads.Length; i++)
            Assert.Equal(data.AsSpan(i * 65536, 65536).ToArray(), reads[i]);
        JsonElement libnbd = Libnbd.Describe(server.UriFor("exp1"), 0, 8 << 20);
        Assert.Equal(libnbd.GetProperty("sha256").GetString(), Oracle.Sha256(h, 0, 8 << 20));
    }
}
