namespace NbdSharp.Protocol;

/// <summary>Where a data or hole chunk of a structured read may lie.</summary>
internal static class ContentChunkBounds
{
    /// <summary>
    /// Whether [<paramref name="offset"/>, +<paramref name="length"/>) lies inside the request at
    /// <paramref name="requestOffset"/> of <paramref name="requestCount"/> bytes. Computed without overflow: the
    /// 2019 libnbd remote code execution was an offset that wrapped around.
    /// </summary>
    public static bool IsInsideRequest(ulong requestOffset, ulong requestCount, ulong offset, ulong length) =>
        offset >= requestOffset && offset - requestOffset < requestCount && length <= requestCount - (offset - requestOffset);
}
