using System;

namespace NbdSharp.Engine;

/// <summary>
/// Calls user callbacks. A callback that throws is treated as one that returned -1 without setting an
/// error, so the command fails (EPROTO unless it already had an error) and the engine carries on.
/// </summary>
internal static class Callbacks
{
#pragma warning disable CA1031 // User code must not be able to break the reader; its failure becomes the command's.
    public static int InvokeCompletion(CompletionCallback callback, ref int error)
    {
        try
        {
            return callback(ref error);
        }
        catch (Exception)
        {
            return -1;
        }
    }

    public static int InvokeChunk(ChunkCallback callback, ReadOnlySpan<byte> subbuf, ulong offset, uint status, ref int error)
    {
        try
        {
            return callback(subbuf, offset, status, ref error);
        }
        catch (Exception)
        {
            return -1;
        }
    }

    public static int InvokeExtent(ExtentCallback callback, string context, ulong offset, ReadOnlySpan<uint> entries, ref int error)
    {
        try
        {
            return callback(context, offset, entries, ref error);
        }
        catch (Exception)
        {
            return -1;
        }
    }

    public static int InvokeExtent64(Extent64Callback callback, string context, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int error)
    {
        try
        {
            return callback(context, offset, entries, ref error);
        }
        catch (Exception)
        {
            return -1;
        }
    }
#pragma warning restore CA1031
}
