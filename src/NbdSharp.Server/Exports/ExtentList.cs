using System;

namespace NbdSharp.Server;

/// <summary>
/// The extents an export reports for one block-status request, in order from the request's offset. The server
/// reuses one list per connection; it caps how many extents and how many bytes it takes, so an export can add
/// extents in a simple loop and stop when <see cref="Add"/> returns false.
/// </summary>
public sealed class ExtentList
{
    private long[] _lengths;
    private uint[] _flags;
    private int _count;
    private long _covered;
    private long _limit;
    private int _maxCount;

    internal ExtentList(int initialCapacity = 64)
    {
        _lengths = new long[initialCapacity];
        _flags = new uint[initialCapacity];
    }

    /// <summary>How many extents have been added (neighbours with equal flags are merged).</summary>
    public int Count => _count;

    /// <summary>How many bytes the extents cover so far.</summary>
    public long Covered => _covered;

    /// <summary>How many more bytes the request wants described.</summary>
    public long Remaining => _limit - _covered;

    internal long LengthAt(int index) => _lengths[index];

    internal uint FlagsAt(int index) => _flags[index];

    internal void Reset(long limit, int maxCount)
    {
        _count = 0;
        _covered = 0;
        _limit = limit;
        _maxCount = maxCount;
    }

    /// <summary>
    /// Adds the next extent of <paramref name="length"/> bytes with <paramref name="flags"/>; a length past the
    /// request's end is cut to it. Returns false when the list wants no more extents (the request is covered, or the
    /// reply is full).
    /// </summary>
    public bool Add(long length, ExtentFlags flags)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (_covered >= _limit)
            return false;
        if (length > _limit - _covered)
            length = _limit - _covered;
        if (_count > 0 && _flags[_count - 1] == (uint)flags)
        {
            _lengths[_count - 1] += length;
        }
        else
        {
            if (_count == _maxCount)
                return false;
            if (_count == _lengths.Length)
            {
                int grown = Math.Min(_maxCount, _lengths.Length * 2);
                Array.Resize(ref _lengths, grown);
                Array.Resize(ref _flags, grown);
            }
            _lengths[_count] = length;
            _flags[_count] = (uint)flags;
            _count++;
        }
        _covered += length;
        return _covered < _limit;
    }
}
