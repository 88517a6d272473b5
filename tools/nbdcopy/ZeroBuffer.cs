using System.Threading;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// A request's worth of zeroes, which both copiers write where the destination cannot zero: made the first time one
/// cannot, so that a copy that never needs it does not carry it (a large-object allocation stays until the process
/// ends). Zeroes are zeroes, so threads that race to make it may each use their own.
/// </summary>
internal static class ZeroBuffer
{
    private static byte[]? s_zeroes;

    /// <summary>At least <paramref name="size"/> zero bytes.</summary>
    public static byte[] Get(int size)
    {
        byte[]? zeroes = Volatile.Read(ref s_zeroes);
        if (zeroes == null || zeroes.Length < size)
            Volatile.Write(ref s_zeroes, zeroes = new byte[size]);
        return zeroes;
    }
}
