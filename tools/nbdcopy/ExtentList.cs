using System;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// A growable run of extents, read in order by index or taken from the front (<see cref="Dequeue"/>), so one type
/// serves as the list of a range's extents and as a worker's queue of work. nbdcopy's own type rather than .NET's
/// <c>List</c> and <c>Queue</c>: those, instantiated over <see cref="Extent"/>, are generic code that ReadyToRun images
/// cannot hold, compiled at run time on every start of the JIT build (about twenty methods).
/// </summary>
internal sealed class ExtentList
{
    private Extent[] _items = new Extent[16];
    private int _head;
    private int _tail;

    /// <summary>How many extents are left (added and not yet dequeued).</summary>
    public int Count => _tail - _head;

    /// <summary>The <paramref name="index"/>-th extent left, counting from the front.</summary>
    public Extent this[int index]
    {
        get
        {
            if ((uint)index >= (uint)Count)
                throw new ArgumentOutOfRangeException(nameof(index));
            return _items[_head + index];
        }
    }

    /// <summary>Forgets every extent.</summary>
    public void Clear() => _head = _tail = 0;

    /// <summary>Adds <paramref name="extent"/> at the end.</summary>
    /// <param name="extent">The extent.</param>
    public void Add(Extent extent)
    {
        if (_tail == _items.Length)
            MakeRoom();
        _items[_tail++] = extent;
    }

    /// <summary>Takes the extent at the front.</summary>
    /// <returns>The extent.</returns>
    /// <exception cref="InvalidOperationException">The list is empty.</exception>
    public Extent Dequeue()
    {
        if (_head == _tail)
            throw new InvalidOperationException("no extent left");
        Extent extent = _items[_head++];
        if (_head == _tail)
            _head = _tail = 0;
        return extent;
    }

    /// <summary>Walks the extents left, front to back.</summary>
    /// <returns>The enumerator.</returns>
    public Enumerator GetEnumerator() => new(this);

    private void MakeRoom()
    {
        int count = Count;
        if (_head > 0 && count <= _items.Length / 2)
        {
            Array.Copy(_items, _head, _items, 0, count);
        }
        else
        {
            var bigger = new Extent[_items.Length * 2];
            Array.Copy(_items, _head, bigger, 0, count);
            _items = bigger;
        }
        _head = 0;
        _tail = count;
    }

    /// <summary>The enumerator of <see cref="ExtentList"/>, for <c>foreach</c>.</summary>
    /// <param name="list">The list.</param>
    public struct Enumerator(ExtentList list)
    {
        private int _index = list._head - 1;

        /// <summary>The current extent.</summary>
        public readonly Extent Current => list._items[_index];

        /// <summary>Moves to the next extent.</summary>
        /// <returns>Whether there is one.</returns>
        public bool MoveNext() => ++_index < list._tail;
    }
}
