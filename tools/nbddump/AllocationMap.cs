using System;
using System.Collections.Generic;

namespace NbdSharp.Tools.Dump;

/// <summary>
/// Which parts of the export read as zeroes, from the server's <c>base:allocation</c> block status, so that holes
/// are not read. Asked for lazily, in windows, as the dump moves forward. Without block status (or when the
/// server refuses it) everything is data, which is always correct, only slower.
/// </summary>
internal sealed class AllocationMap
{
    /// <summary>How far ahead one block status request looks (it must fit the 32-bit length of compact requests).</summary>
    private const ulong Window = 1UL << 30;

    private readonly NbdHandle? _handle;
    private readonly Extent64Callback _onExtents;
    private readonly List<Run> _runs = new();
    private int _index;
    private ulong _reported;

    /// <summary>Creates the map; <paramref name="handle"/> is asked only if it negotiated <c>base:allocation</c>.</summary>
    public AllocationMap(NbdHandle handle)
    {
        _handle = handle.CanMetaContext(MetaContext.BaseAllocation) ? handle : null;
        _onExtents = OnExtents;
    }

    /// <summary>
    /// The length of the run of bytes of one kind (zeroes or data) starting at <paramref name="offset"/>, at most
    /// up to <paramref name="end"/>. Offsets must be asked in increasing order.
    /// </summary>
    public ulong RunAt(ulong offset, ulong end, out bool zeroes)
    {
        if (_handle == null)
        {
            zeroes = false;
            return end - offset;
        }
        while (_index < _runs.Count && _runs[_index].End <= offset)
            _index++;
        if (_index == _runs.Count)
            Query(_handle, offset, end);
        Run run = _runs[_index];
        zeroes = run.Zeroes;
        return Math.Min(run.End, end) - offset;
    }

    private void Query(NbdHandle handle, ulong offset, ulong end)
    {
        ulong count = Math.Min(end - offset, Window);
        _runs.Clear();
        _index = 0;
        _reported = offset;
        try
        {
            handle.BlockStatus64(count, offset, _onExtents);
        }
        catch (NbdServerException)
        {
            // The server would not say: read it all.
            _runs.Clear();
        }
        if (_runs.Count == 0 || _reported <= offset)
        {
            _runs.Clear();
            _runs.Add(new Run(offset + count, Zeroes: false));
        }
    }

    private int OnExtents(string metacontext, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int error)
    {
        if (metacontext != MetaContext.BaseAllocation)
            return 0;
        foreach (NbdExtent extent in entries)
        {
            bool zeroes = (extent.Flags & (ulong)BlockStatusFlag.Zero) != 0;
            _reported += extent.Length;
            if (_runs.Count > 0 && _runs[^1].Zeroes == zeroes)
                _runs[^1] = new Run(_reported, zeroes);
            else
                _runs.Add(new Run(_reported, zeroes));
        }
        return 0;
    }

    /// <summary>Bytes up to <paramref name="End"/> (from the end of the previous run) that are all zeroes or data.</summary>
    private readonly record struct Run(ulong End, bool Zeroes);
}
