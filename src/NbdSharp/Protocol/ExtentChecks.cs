using System;

namespace NbdSharp.Protocol;

/// <summary>What may be wrong with the extents of a block status chunk.</summary>
internal enum ExtentProblem
{
    None,
    /// <summary>proto.md: every extent has a non-zero length.</summary>
    ZeroLength,
    /// <summary>The extents run past the end of the export.</summary>
    PastEnd,
}

/// <summary>The rules every extent of a block status chunk must keep.</summary>
internal static class ExtentChecks
{
    /// <summary>
    /// Checks the <paramref name="count"/> descriptors of <paramref name="descriptors"/>: each must have a non-zero
    /// length, and together they must fit in <paramref name="room"/> bytes (from the request's offset to the end of the
    /// export). <paramref name="index"/> is the first descriptor at fault.
    /// </summary>
    public static ExtentProblem Check(ReadOnlySpan<byte> descriptors, int count, bool wide, ulong room, out int index)
    {
        int size = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        ulong total = 0;
        for (index = 0; index < count; index++)
        {
            BlockStatusChunk.ReadDescriptor(descriptors[(index * size)..], wide, out ulong length, out _);
            if (length == 0)
                return ExtentProblem.ZeroLength;
            if (length > room - total)
                return ExtentProblem.PastEnd;
            total += length;
        }
        index = -1;
        return ExtentProblem.None;
    }
}
