using System;

namespace NbdSharp.Tools.Discard;

/// <summary>The bytes a run works on, and the requests that cover them.</summary>
/// <param name="Offset">The first byte.</param>
/// <param name="Length">How many bytes (possibly 0).</param>
internal readonly record struct ExportRange(long Offset, long Length)
{
    // libnbd's tool keeps every request at 1 GiB when extended headers do not lift the 32-bit length limit.
    private const ulong CompactHeaderLimit = 1UL << 30;

    // base:allocation flags (libnbd's LIBNBD_STATE_HOLE and LIBNBD_STATE_ZERO).
    private const ulong StateHole = 1;
    private const ulong StateZero = 2;

    /// <summary>
    /// The range <paramref name="offset"/> and <paramref name="length"/> name on an export of
    /// <paramref name="size"/> bytes, cut at its end. As in libnbd's tool, an offset at or past the end means
    /// there is nothing to do (null), and a range running past the end is shortened; both with a warning on stdout.
    /// </summary>
    /// <param name="size">The export size.</param>
    /// <param name="offset">The -o value, or null for 0.</param>
    /// <param name="length">The -l value, or null for up to the end.</param>
    /// <param name="quiet">Whether to keep the warnings to itself.</param>
    /// <returns>The range, or null.</returns>
    public static ExportRange? Within(long size, long? offset, long? length, bool quiet)
    {
        if (offset >= size)
        {
            Warn(quiet, "warning: offset at or beyond the end of the disk");
            return null;
        }
        long start = offset ?? 0;
        long rest = size - start;
        if (length > rest)
            Warn(quiet, "warning: offset + length is beyond the end of the disk");
        return new ExportRange(start, Math.Min(length ?? rest, rest));
    }

    /// <summary>The last byte, as the prompt shows it: one before <see cref="Offset"/> for an empty range.</summary>
    public long Last => Offset + Length - 1;

    /// <summary>
    /// The first offset in the range whose base:allocation extent is not a hole (or with <paramref name="zero"/>,
    /// does not read as zeroes), or null when the whole range is.
    /// </summary>
    /// <param name="handle">A handle connected with base:allocation negotiated.</param>
    /// <param name="zero">Whether reading as zeroes is enough.</param>
    /// <returns>The offset of the first data, or null.</returns>
    /// <exception cref="ToolException">The server answered a block status request with no extent.</exception>
    public long? FindData(NbdHandle handle, bool zero)
    {
        ulong goal = zero ? StateZero : StateHole;
        ulong limit = handle.GetExtendedHeadersNegotiated() ? ulong.MaxValue : CompactHeaderLimit;
        ulong position = (ulong)Offset;
        ulong end = (ulong)(Offset + Length);
        long? data = null;
        while (position < end && data == null)
        {
            ulong asked = position;
            handle.BlockStatus64(Math.Min(end - position, limit), position,
                (string context, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int error) =>
                {
                    if (context != MetaContext.BaseAllocation)
                        return 0;
                    foreach (NbdExtent extent in entries)
                    {
                        if ((extent.Flags & goal) == 0)
                        {
                            data = (long)position;
                            break;
                        }
                        position += extent.Length;
                    }
                    return 0;
                });
            if (position == asked && data == null)
                throw new ToolException("the server described no extent at offset " + asked.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return data;
    }

    /// <summary>Discards (or with <paramref name="zero"/>, zeroes) the range, in as few requests as the server allows.</summary>
    /// <param name="handle">A connected handle.</param>
    /// <param name="zero">Zero instead of discarding.</param>
    /// <param name="flags"><see cref="CmdFlag.FastZero"/> or none, for zeroing.</param>
    public void Erase(NbdHandle handle, bool zero, CmdFlag flags)
    {
        ulong limit = EraseLimit(handle);
        ulong offset = (ulong)Offset;
        for (ulong left = (ulong)Length; left > 0;)
        {
            ulong count = Math.Min(left, limit);
            if (zero)
                handle.Zero(count, offset, flags);
            else
                handle.Trim(count, offset);
            offset += count;
            left -= count;
        }
    }

    /// <summary>
    /// The longest trim or zero request: libnbd's limit, and also no longer than the server's advertised maximum
    /// block size (rounded down to its minimum). libnbd's tool ignores that maximum; proto.md lets a client exceed it
    /// for requests without payload but lets the server refuse them, and a client may always be stricter.
    /// </summary>
    private static ulong EraseLimit(NbdHandle handle)
    {
        ulong limit = handle.GetExtendedHeadersNegotiated() ? ulong.MaxValue : CompactHeaderLimit;
        long maximum = handle.GetBlockSize(SizeKind.Maximum);
        // proto.md: a maximum of 0xffffffff means no fixed limit.
        if (maximum > 0 && maximum < uint.MaxValue)
            limit = Math.Min(limit, (ulong)maximum);
        long minimum = handle.GetBlockSize(SizeKind.Minimum);
        if (minimum > 1 && limit > (ulong)minimum)
            limit -= limit % (ulong)minimum;
        return limit;
    }

    private static void Warn(bool quiet, string warning)
    {
        if (!quiet)
            Console.WriteLine(warning);
    }
}
