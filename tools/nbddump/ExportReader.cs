using System;

namespace NbdSharp.Tools.Dump;

/// <summary>
/// A piece of the dump: <see cref="Length"/> bytes at <see cref="Offset"/>, either read (<see cref="Data"/>) or
/// known to be zeroes without reading.
/// </summary>
internal readonly record struct Segment(ulong Offset, ulong Length, bool Zeroes, ReadOnlyMemory<byte> Data);

/// <summary>
/// Reads a range of the export in order, as segments that start on dump lines (16 bytes from the start of the
/// range): several reads in flight (libnbd's aio calls and <see cref="NbdHandle.Poll"/>), holes of at least
/// <see cref="MinimumHole"/> bytes skipped using <see cref="AllocationMap"/>.
/// </summary>
internal sealed class ExportReader
{
    /// <summary>Shorter zero runs are read with the data around them: a request costs more than 64 KiB of zeroes.</summary>
    private const ulong MinimumHole = 64 * 1024;

    private readonly NbdHandle _handle;
    private readonly AllocationMap _map;
    private readonly Request[] _ring;
    private readonly int _chunkSize;
    private readonly ulong _end;
    private ulong _next;
    private int _head;
    private int _queued;
    private bool _headHandedOut;

    /// <summary>Prepares to read [<paramref name="start"/>, <paramref name="end"/>).</summary>
    /// <param name="handle">A connected handle.</param>
    /// <param name="map">Where the holes are.</param>
    /// <param name="start">The first byte.</param>
    /// <param name="end">The byte after the last.</param>
    /// <param name="chunkSize">The largest read, a multiple of 16.</param>
    /// <param name="depth">How many reads may be in flight.</param>
    public ExportReader(NbdHandle handle, AllocationMap map, ulong start, ulong end, int chunkSize, int depth)
    {
        _handle = handle;
        _map = map;
        _next = start;
        _end = end;
        _chunkSize = chunkSize;
        _ring = new Request[depth];
        for (int i = 0; i < depth; i++)
            _ring[i] = new Request();
    }

    /// <summary>
    /// The next segment; its data stays valid until the next call. False at the end of the range.
    /// </summary>
    /// <exception cref="NbdException">A read failed.</exception>
    public bool TryRead(out Segment segment)
    {
        if (_headHandedOut)
        {
            _head = (_head + 1) % _ring.Length;
            _queued--;
            _headHandedOut = false;
        }
        while (_queued < _ring.Length && _next < _end)
        {
            Issue(_ring[(_head + _queued) % _ring.Length]);
            _queued++;
        }
        if (_queued == 0)
        {
            segment = default;
            return false;
        }

        Request head = _ring[_head];
        if (head.Cookie != 0)
        {
            while (!_handle.AioCommandCompleted(head.Cookie))
                _handle.Poll(-1);
            head.Cookie = 0;
        }
        _headHandedOut = true;
        segment = head.Zeroes
            ? new Segment(head.Offset, head.Length, true, ReadOnlyMemory<byte>.Empty)
            : new Segment(head.Offset, head.Length, false, head.Buffer.AsMemory(0, (int)head.Length));
        return true;
    }

    private void Issue(Request request)
    {
        request.Offset = _next;
        ulong hole = _map.RunAt(_next, _end, out bool zeroes);
        if (zeroes && (hole >= MinimumHole || _next + hole == _end))
        {
            // Up to the last whole line in the hole, so that the next segment starts on a line too.
            request.Zeroes = true;
            request.Length = _next + hole == _end ? hole : hole & ~15UL;
            _next += request.Length;
            return;
        }

        ulong length = ReadLength();
        request.Zeroes = false;
        request.Length = length;
        request.Buffer ??= GC.AllocateUninitializedArray<byte>(_chunkSize);
        request.Cookie = _handle.AioPread(request.Buffer.AsMemory(0, (int)length), _next);
        _next += length;
    }

    /// <summary>
    /// How much to read from <see cref="_next"/>: up to a chunk, stopping before a hole worth skipping (rounded up
    /// to a whole line).
    /// </summary>
    private ulong ReadLength()
    {
        ulong chunkEnd = _next + Math.Min((ulong)_chunkSize, _end - _next);
        ulong position = _next;
        while (position < chunkEnd)
        {
            ulong run = _map.RunAt(position, _end, out bool zeroes);
            if (zeroes && run >= MinimumHole && position > _next)
                break;
            position += run;
        }
        ulong length = Math.Min(position, chunkEnd) - _next;
        return Math.Min((length + 15) & ~15UL, chunkEnd - _next);
    }

    /// <summary>One slot of the ring: a read in flight (or done), or a hole.</summary>
    private sealed class Request
    {
        public byte[]? Buffer;
        public ulong Offset;
        public ulong Length;
        public bool Zeroes;
        public long Cookie;
    }
}
