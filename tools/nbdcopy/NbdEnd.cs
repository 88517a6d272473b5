using System;
using System.Collections.Generic;

namespace NbdSharp.Tools.Copy;

/// <summary>An NBD export, over one connection or (multi-conn) one per worker.</summary>
internal sealed class NbdEnd : CopyEnd
{
    /// <summary>The most one block-status request asks about: nbdkit 1.32.5 dies on a request of 4 GiB - 1
    /// (CVE-2025-47711), and a worker never looks further than its 128 MiB range anyway.</summary>
    private const long MaxBlockStatusRequest = 128L << 20;

    private readonly ServerEndpoint _endpoint;
    private readonly bool _reading;
    private readonly CopyOptions _options;
    private readonly List<NbdHandle> _handles = [];
    private readonly List<ExtentCollector> _collectors = [];
    private bool _canZero;

    public NbdEnd(string name, ServerEndpoint endpoint, bool reading, CopyOptions options)
        : base(name, "nbd_ops")
    {
        _endpoint = endpoint;
        _reading = reading;
        _options = options;
        OpenOne();
    }

    public override bool IsReadOnly => _handles[0].IsReadOnly();

    public override bool CanMultiConn => _handles[0].CanMultiConn();

    public override bool CanExtents => _handles[0].CanMetaContext(MetaContext.BaseAllocation);

    public override void StartMultiConn(int connections)
    {
        while (_handles.Count < connections)
            OpenOne();
    }

    private void OpenOne()
    {
        var handle = new NbdHandle();
        try
        {
            if (_options.Verbose)
            {
                handle.SetDebug(true);
                handle.SetHandleName((_reading ? "src" : "dst") + _handles.Count.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            if (_options.Extents && _reading)
                handle.AddMetaContext(MetaContext.BaseAllocation);
            // The library checks that every byte of a read was answered exactly once, so pre-zeroing the
            // buffer (libnbd's default safety net) would only cost a memset per request.
            if (_reading)
                handle.SetPreadInitialize(false);
            _endpoint.Connect(handle, _options.Timeout);
            if (_handles.Count == 0)
            {
                _canZero = handle.CanZero();
                Size = handle.GetSize();
                long preferred = handle.GetBlockSize(SizeKind.Preferred);
                Preferred = CopyOptions.IsPowerOfTwo(preferred) ? preferred : 4096;
            }
        }
        catch (NbdException e)
        {
            handle.Dispose();
            throw new ToolException(Name + ": " + e.Message, e);
        }
        _handles.Add(handle);
        _collectors.Add(new ExtentCollector());
    }

    public override NbdHandle? PollHandle(int connection) => _handles[connection];

    public override void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done) =>
        _handles[connection].AioPread(buffer, (ulong)offset, done);

    public override void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done) =>
        _handles[connection].AioPwrite(buffer, (ulong)offset, done);

    public override bool StartZero(int connection, long offset, long length, bool allocate, CompletionCallback done)
    {
        if (!_canZero)
            return false;
        _handles[connection].AioZero((ulong)length, (ulong)offset, done, allocate ? CmdFlag.NoHole : CmdFlag.None);
        return true;
    }

    public override int ReadSome(Span<byte> buffer, long offset)
    {
        int length = (int)Math.Min(buffer.Length, Math.Max(0, Size - offset));
        if (length > 0)
            _handles[0].Pread(buffer[..length], (ulong)offset);
        return length;
    }

    public override void Write(ReadOnlySpan<byte> buffer, long offset) => _handles[0].Pwrite(buffer, (ulong)offset);

    public override bool Zero(long offset, long length, bool allocate)
    {
        if (!_canZero)
            return false;
        _handles[0].Zero((ulong)length, (ulong)offset, allocate ? CmdFlag.NoHole : CmdFlag.None);
        return true;
    }

    public override void GetExtents(int connection, long offset, long count, ExtentList extents)
    {
        extents.Clear();
        ExtentCollector collector = _collectors[connection];
        while (count > 0)
        {
            long start = offset;
            collector.Reset(offset, Math.Min(count, MaxBlockStatusRequest));
            _handles[connection].BlockStatus64((ulong)collector.End - (ulong)offset, (ulong)offset, collector.Callback);
            // Keep what starts where we are, clipped to what was asked; the server must make progress.
            foreach (Extent extent in collector.Found)
            {
                if (extent.Offset != offset || extent.Length == 0)
                    break;
                long length = Math.Min(extent.Length, count);
                extents.Add(extent with { Length = length });
                offset += length;
                count -= length;
                if (count == 0)
                    break;
            }
            if (offset == start)
            {
                throw new ToolException(Name + ": NBD server is broken: it is not returning extent information; " +
                    "try nbdcopy --no-extents as a workaround");
            }
        }
    }

    public override void Flush()
    {
        foreach (NbdHandle handle in _handles)
            Named(() => handle.Flush());
    }

    public override void Close()
    {
        foreach (NbdHandle handle in _handles)
            Named(() => handle.Shutdown());
        Dispose();
    }

    private void Named(Action action)
    {
        try
        {
            action();
        }
        catch (NbdException e)
        {
            throw new ToolException(Name + ": " + e.Message, e);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (NbdHandle handle in _handles)
                handle.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>Collects the base:allocation extents of one block-status reply (one per connection, reused).</summary>
    private sealed class ExtentCollector
    {
        private long _next;

        public ExtentCollector() => Callback = OnExtents;

        public Extent64Callback Callback { get; }

        public ExtentList Found { get; } = new();

        public long End { get; private set; }

        public void Reset(long offset, long count)
        {
            Found.Clear();
            _next = offset;
            End = offset + count;
        }

        private int OnExtents(string metacontext, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int error)
        {
            if (metacontext != MetaContext.BaseAllocation || error != 0)
                return 0;
            _next = (long)offset;
            foreach (NbdExtent entry in entries)
            {
                // Lengths past the export are clipped by the caller; a length beyond long is nonsense anyway.
                long length = entry.Length > long.MaxValue / 2 ? long.MaxValue / 2 : (long)entry.Length;
                Found.Add(new Extent(_next, length, (entry.Flags & 2) != 0));
                _next += length;
                if (_next >= End)
                    break;
            }
            return 0;
        }
    }
}
