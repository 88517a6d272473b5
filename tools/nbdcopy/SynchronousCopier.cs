using System;
using System.IO;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// The synchronous copy (--synchronous, and whenever a side is a pipe or stdio): one request at a time, in order.
/// The multi-connection copy is <see cref="AioCopier"/>.
/// </summary>
internal sealed class SynchronousCopier
{
    private readonly CopyEnd _source;
    private readonly CopyEnd _destination;
    private readonly CopyOptions _options;
    private readonly ProgressBar _progress;

    public SynchronousCopier(CopyEnd source, CopyEnd destination, CopyOptions options, ProgressBar progress)
    {
        _source = source;
        _destination = destination;
        _options = options;
        _progress = progress;
    }

    /// <summary>How many bytes a source of unknown size turned out to hold (after the synchronous copy).</summary>
    public long CopiedSize { get; private set; } = -1;

    /// <summary>
    /// The synchronous copy (--synchronous, and whenever a side is a pipe): one request at a time, in order, with
    /// the library's synchronous calls (no thread hand-off). A source of unknown size is copied until its end;
    /// otherwise extents still let holes be zeroed, not read.
    /// </summary>
    public void RunSynchronous()
    {
        byte[] buffer = GC.AllocateUninitializedArray<byte>(_options.RequestSize, pinned: true);
        long offset = 0;
        if (_source.Size < 0)
        {
            while (true)
            {
                int n = Read(buffer, offset);
                if (n == 0)
                {
                    CopiedSize = offset;
                    return;
                }
                _options.BlockHash?.Add(offset, n, buffer.AsSpan(0, n), zero: false);
                Write(buffer.AsSpan(0, n), offset);
                offset += n;
            }
        }

        var extents = new ExtentList();
        while (offset < _source.Size)
        {
            // Extents are asked for a work unit at a time, as the multi-connection copy asks (libnbd's synchronous
            // copy asks once per request: a third round trip for every 256 KiB, and the copy waits for each).
            long count = Math.Min(_source.Size - offset, AioCopier.WorkSize);
            if (_options.Extents)
            {
                try
                {
                    _source.GetExtents(0, offset, count, extents);
                }
                catch (NbdException e)
                {
                    throw new ToolException(_source.Name + ": " + e.Message, e);
                }
            }
            else
            {
                CopyEnd.DefaultExtents(offset, count, extents);
            }
            foreach (Extent extent in extents)
            {
                if (extent.Zero)
                {
                    _options.BlockHash?.Add(offset, extent.Length, default, zero: true);
                    Zero(offset, extent.Length);
                    offset += extent.Length;
                    continue;
                }
                long end = offset + extent.Length;
                while (offset < end)
                {
                    // Requests keep to the --request-size grid, as when extents came a request at a time.
                    long gridEnd = (offset / buffer.Length + 1) * buffer.Length;
                    Span<byte> data = buffer.AsSpan(0, (int)(Math.Min(end, gridEnd) - offset));
                    if (Read(data, offset) < data.Length)
                        throw new ToolException(_source.Name + ": unexpected end of file");
                    _options.BlockHash?.Add(offset, data.Length, data, zero: false);
                    Write(data, offset);
                    offset += data.Length;
                    _progress.Update(offset, _source.Size);
                }
            }
        }
    }

    private int Read(Span<byte> data, long offset)
    {
        try
        {
            return _source.ReadSome(data, offset);
        }
        catch (Exception e) when (e is NbdException or IOException or ToolException)
        {
            throw new ToolException(CopyFailure.Describe("read", offset, e), e);
        }
    }

    private void Write(ReadOnlySpan<byte> data, long offset)
    {
        try
        {
            _destination.Write(data, offset);
        }
        catch (Exception e) when (e is NbdException or IOException or ToolException)
        {
            throw new ToolException(CopyFailure.Describe("write", offset, e), e);
        }
    }

    /// <summary>Makes a range of the destination read as zeroes: nothing when it already does, a zero request
    /// when the destination has one, else zeroes written the hard way.</summary>
    private void Zero(long offset, long length)
    {
        if (_options.DestinationIsZero)
            return;
        try
        {
            if (_destination.Zero(offset, length, _options.Allocated))
                return;
        }
        catch (Exception e) when (e is NbdException or IOException or ToolException)
        {
            throw new ToolException(CopyFailure.Describe("write", offset, e), e);
        }
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, _options.RequestSize);
            Write(ZeroBuffer.Get(_options.RequestSize).AsSpan(0, chunk), offset);
            offset += chunk;
            length -= chunk;
        }
    }
}
