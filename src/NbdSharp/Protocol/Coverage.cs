using System;

namespace NbdSharp.Protocol;

/// <summary>
/// The parts of a structured read the server has answered (data, holes), as sorted, merged, disjoint ranges
/// relative to the request. A read succeeds only if its chunks tile the request exactly once: no overlap and
/// no gap. Chunks in order merge into one range, so the common case costs nothing; out-of-order chunks are
/// bounded by <see cref="MaxRanges"/> so a hostile server cannot make the check quadratic. One lives in each pooled
/// command; its arrays grow only for a fragmented reply, and shrink back when the command is reused.
/// </summary>
internal sealed class Coverage
{
    /// <summary>The most disjoint ranges tracked before a reply counts as abusive fragmentation.</summary>
    public const int MaxRanges = 4096;

    private ulong[] _starts = new ulong[4];
    private ulong[] _ends = new ulong[4];
    private int _count;

    public int RangeCount => _count;

    public void Reset()
    {
        _count = 0;
        if (_starts.Length > 64)
        {
            _starts = new ulong[4];
            _ends = new ulong[4];
        }
    }

    /// <summary>Whether the ranges are exactly [0, <paramref name="length"/>).</summary>
    public bool Covers(ulong length) =>
        length == 0 ? _count == 0 : _count == 1 && _starts[0] == 0 && _ends[0] == length;

    /// <summary>
    /// Adds [start, start+length). Returns false if it overlaps what is already covered or if the reply is
    /// fragmented beyond <see cref="MaxRanges"/>. The caller has checked that the range lies inside the request.
    /// </summary>
    public bool TryAdd(ulong start, ulong length)
    {
        if (length == 0)
            return true;
        ulong end = start + length;
        int n = _count;
        // Fast path: appending right after the last range (chunks in order).
        if (n > 0 && _ends[n - 1] == start)
        {
            _ends[n - 1] = end;
            return true;
        }
        // Index of the first range that starts after 'start'.
        int next = UpperBound(start);
        int prev = next - 1;
        if (prev >= 0 && _ends[prev] > start)
            return false;
        if (next < n && _starts[next] < end)
            return false;
        bool joinPrev = prev >= 0 && _ends[prev] == start;
        bool joinNext = next < n && _starts[next] == end;
        if (joinPrev && joinNext)
        {
            _ends[prev] = _ends[next];
            RemoveAt(next);
        }
        else if (joinPrev)
        {
            _ends[prev] = end;
        }
        else if (joinNext)
        {
            _starts[next] = start;
        }
        else
        {
            if (n == MaxRanges)
                return false;
            InsertAt(next, start, end);
        }
        return true;
    }

    private int UpperBound(ulong value)
    {
        int lo = 0, hi = _count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_starts[mid] <= value)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    private void InsertAt(int index, ulong start, ulong end)
    {
        if (_count == _starts.Length)
        {
            Array.Resize(ref _starts, _count * 2);
            Array.Resize(ref _ends, _count * 2);
        }
        Array.Copy(_starts, index, _starts, index + 1, _count - index);
        Array.Copy(_ends, index, _ends, index + 1, _count - index);
        _starts[index] = start;
        _ends[index] = end;
        _count++;
    }

    private void RemoveAt(int index)
    {
        Array.Copy(_starts, index + 1, _starts, index, _count - index - 1);
        Array.Copy(_ends, index + 1, _ends, index, _count - index - 1);
        _count--;
    }
}
