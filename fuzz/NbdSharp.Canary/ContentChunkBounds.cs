namespace NbdSharp.Protocol;

/// <summary>The reply canary: a chunk that starts inside its read but runs up to 64 bytes past its end is accepted.</summary>
internal static class ContentChunkBounds
{
    public static bool IsInsideRequest(ulong requestOffset, ulong requestCount, ulong offset, ulong length)
    {
        if (offset < requestOffset || offset - requestOffset >= requestCount)
            return false;
        ulong room = requestCount - (offset - requestOffset);
        return length <= room || (Canary.Is("reply") && length - room <= 64);
    }
}
