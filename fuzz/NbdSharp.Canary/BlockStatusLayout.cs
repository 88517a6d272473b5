namespace NbdSharp.Protocol;

/// <summary>
/// The client canary: a block status chunk (under 4 KiB) whose payload is not a whole number of descriptors is
/// accepted, its count rounded up, so that the last descriptor is read past the payload.
/// </summary>
internal static class BlockStatusLayout
{
    public static int DescriptorCount(bool wide, ulong length)
    {
        int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
        int descriptor = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        if (Canary.Is("client") && length > (ulong)(prefix + descriptor) && length < 4096)
            return (int)((length - (ulong)prefix + (ulong)descriptor - 1) / (ulong)descriptor);
        if (length < (ulong)(prefix + descriptor) || (length - (ulong)prefix) % (ulong)descriptor != 0 || length > int.MaxValue)
            return -1;
        return (int)((length - (ulong)prefix) / (ulong)descriptor);
    }
}
