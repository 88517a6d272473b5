namespace NbdSharp.Testing;

/// <summary>Disk images made with qemu-img and qemu-io for qemu-nbd tests.</summary>
public static class QemuImages
{
    /// <summary>Offset and length of the data only the backing file holds (allocation depth 2).</summary>
    public const long BackingData = 1 << 20, BackingLength = 2 << 20;

    /// <summary>Offset and length of the data written after bitmap b0 was added (depth 1, dirty in b0).</summary>
    public const long DirtyData = 8 << 20, DirtyLength = 64 << 10;

    /// <summary>
    /// A 64 MiB qcow2 overlay on a qcow2 backing file: the backing file holds pattern 7 at
    /// <see cref="BackingData"/>; the overlay has the persistent dirty bitmap "b0", added before pattern 9 was
    /// written at <see cref="DirtyData"/>. Returns the overlay's path.
    /// </summary>
    public static string WithBitmap(TempDirectory dir)
    {
        string backing = dir.File("base.qcow2");
        string top = dir.File("top.qcow2");
        string I(long n) => n.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Peers.Run("qemu-img", "create", "-q", "-f", "qcow2", backing, "64M");
        Peers.Run("qemu-io", "-f", "qcow2", "-c", $"write -P 7 {I(BackingData)} {I(BackingLength)}", backing);
        Peers.Run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, top);
        Peers.Run("qemu-img", "bitmap", "--add", top, "b0");
        Peers.Run("qemu-io", "-f", "qcow2", "-c", $"write -P 9 {I(DirtyData)} {I(DirtyLength)}", top);
        return top;
    }
}
