using System;
using Xunit;

namespace NbdSharp.Testing;

/// <summary>Small routines many interop tests run on a connected handle.</summary>
public static class Exercise
{
    /// <summary>Writes <paramref name="length"/> random bytes at <paramref name="offset"/>, reads them back and compares.</summary>
    public static void WriteReadBack(NbdHandle h, ulong offset, int length, int seed = 1)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        h.Pwrite(data, offset);
        byte[] back = new byte[length];
        h.Pread(back, offset);
        Assert.Equal(data, back);
    }

    /// <summary>
    /// Starts an aio call with a completion callback, polls until the callback ran and returns the error it was
    /// given (0 for success).
    /// </summary>
    public static int Complete(NbdHandle h, Action<CompletionCallback> start)
    {
        int result = -1;
        start((ref int error) =>
        {
            result = error;
            return 1;
        });
        while (result == -1)
            h.Poll(-1);
        return result;
    }
}
