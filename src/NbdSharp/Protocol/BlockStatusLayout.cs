namespace NbdSharp.Protocol;

/// <summary>The layout of a block status chunk's payload: a prefix and one or more whole descriptors.</summary>
internal static class BlockStatusLayout
{
    /// <summary>
    /// How many descriptors a block status chunk of <paramref name="length"/> bytes holds (wide: the 64-bit form of
    /// extended headers), or -1 when the length does not fit the layout.
    /// </summary>
    public static int DescriptorCount(bool wide, ulong length)
    {
        int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
        int descriptor = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        if (length < (ulong)(prefix + descriptor) || (length - (ulong)prefix) % (ulong)descriptor != 0 || length > int.MaxValue)
            return -1;
        return (int)((length - (ulong)prefix) / (ulong)descriptor);
    }
}
