using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// The synchronous copy (--synchronous, and whenever a side is a pipe or stdio): one request at a time, in order,
/// with libnbd's request words for failures. The multi-connection copy is <see cref="AioCopier"/>, which shares
/// the helpers here.
/// </summary>
internal sealed class Copier
{
    /// <summary>How much of the source a worker of the multi-connection copy takes at a time (libnbd's
    /// THREAD_WORK_SIZE).</summary>
    public const long WorkSize = 128L << 20;

    private readonly CopyEnd _source;
    private readonly CopyEnd _destination;
    private readonly CopyOptions _options;
    private readonly ProgressBar _progress;
    private readonly byte[] _zeroes;

    public Copier(CopyEnd source, CopyEnd destination, CopyOptions options, ProgressBar progress)
    {
        _source = source;
        _destination = destination;
        _options = options;
        _progress = progress;
        _zeroes = new byte[options.RequestSize];
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

        var extents = new List<Extent>();
        while (offset < _source.Size)
        {
            long count = Math.Min(_source.Size - offset, buffer.Length);
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
                Span<byte> data = buffer.AsSpan(0, (int)extent.Length);
                if (Read(data, offset) < data.Length)
                    throw new ToolException(_source.Name + ": unexpected end of file");
                _options.BlockHash?.Add(offset, data.Length, data, zero: false);
                Write(data, offset);
                offset += data.Length;
                _progress.Update(offset, _source.Size);
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
            throw new ToolException(Describe("read", offset, e), e);
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
            throw new ToolException(Describe("write", offset, e), e);
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
            throw new ToolException(Describe("write", offset, e), e);
        }
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, _zeroes.Length);
            Write(_zeroes.AsSpan(0, chunk), offset);
            offset += chunk;
            length -= chunk;
        }
    }

    internal static long RoundUp(long value, long multiple) => (value + multiple - 1) & ~(multiple - 1);

    internal static bool IsZero(ReadOnlySpan<byte> block) => !block.ContainsAnyExcept((byte)0);

    /// <summary>One line for a failed request, libnbd's words: "read at offset N failed: strerror".</summary>
    public static string Describe(string what, long offset, Exception e)
    {
        string reason = e switch
        {
            ToolException t => t.Message,
            NbdException n => n.Errno != 0 ? Errno.Describe(n.Errno) + DetailOf(n) : n.Message,
            _ => e.Message,
        };
        return offset < 0 ? what + " failed: " + reason
            : what + " at offset " + offset.ToString(CultureInfo.InvariantCulture) + " failed: " + reason;
    }

    /// <summary>When the connection itself failed, what happened to it (libnbd's strerror alone would hide it).</summary>
    private static string DetailOf(NbdException e) => e is NbdProtocolException ? " (" + e.Message + ")" : "";
}
