using System;
using System.Collections.Generic;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// The multi-connection copy on libnbd's aio calls with completion callbacks, so that no request waits for a thread
/// hand-off: one worker per connection cuts its 128 MiB ranges into requests (from the source's extents, fetched
/// ahead), and a fixed set of request slots, each with its own buffer, carries them. A read's completion callback
/// (run by whichever thread polls the source connection) issues the writes or zeroes; the last write's callback
/// starts the slot's next request at once. One thread per NBD connection polls it. At most --requests slots per
/// worker, and never more buffer than --queue-size, so memory is bounded whatever the size of the disk.
/// </summary>
internal sealed class AioCopier
{
    /// <summary>How much of the source a worker takes at a time (libnbd's THREAD_WORK_SIZE).</summary>
    internal const long WorkSize = 128L << 20;

    private readonly CopyEnd _source;
    private readonly CopyEnd _destination;
    private readonly CopyOptions _options;
    private readonly ProgressBar _progress;
    private readonly object _rangeLock = new();
    private readonly CancellationTokenSource _failed = new();
    private long _nextOffset;
    private Worker[] _workers = [];
    private string? _failure;

    public AioCopier(CopyEnd source, CopyEnd destination, CopyOptions options, ProgressBar progress)
    {
        _source = source;
        _destination = destination;
        _options = options;
        _progress = progress;
    }

    /// <summary>Why the copy failed (one line), or null while it has not.</summary>
    public string? Failure => Volatile.Read(ref _failure);

    /// <summary>Starts the copy on <paramref name="workers"/> dedicated threads, one per connection; the caller
    /// joins them and watches <see cref="Failure"/>.</summary>
    public Thread[] Start(int workers)
    {
        var threads = new Thread[workers];
        _workers = new Worker[workers];
        for (int i = 0; i < workers; i++)
        {
            var worker = _workers[i] = new Worker(this, i);
            threads[i] = new Thread(worker.Run) { IsBackground = true, Name = "nbdcopy worker " + i };
            threads[i].Start();
        }
        return threads;
    }

    /// <summary>Frees the request buffers, once every worker has finished with no request left in flight (after a
    /// failure they are left to the process's exit: a request may still be writing into one).</summary>
    public void ReleaseBuffers()
    {
        foreach (Worker worker in _workers)
            worker.ReleaseBuffers();
    }

    public void Fail(string message)
    {
        if (Interlocked.CompareExchange(ref _failure, message, null) == null)
            _failed.Cancel();
    }

    private bool Failed => _failed.IsCancellationRequested;

    private bool NextRange(out long offset, out long count)
    {
        lock (_rangeLock)
        {
            offset = _nextOffset;
            if (offset >= _source.Size || Failed)
            {
                count = 0;
                return false;
            }
            count = Math.Min(WorkSize, _source.Size - offset);
            _nextOffset += WorkSize;
            _progress.Update(offset, _source.Size);
            return true;
        }
    }

    private static long RoundUp(long value, long multiple) => (value + multiple - 1) & ~(multiple - 1);

    /// <summary>
    /// Whether the block holds only zeroes. Data blocks almost always have a non-zero byte in their first eight, which
    /// one load tells without a call (a copy checks a million 4 KiB blocks per 4 GiB); the scan is for the rest.
    /// </summary>
    private static bool IsZero(ReadOnlySpan<byte> block) =>
        (block.Length < sizeof(ulong) || Unsafe.ReadUnaligned<ulong>(ref MemoryMarshal.GetReference(block)) == 0)
        && !block.ContainsAnyExcept((byte)0);


    /// <summary>One connection's share of the copy.</summary>
    private sealed class Worker
    {
        [ThreadStatic]
        private static int t_starting;

        private readonly AioCopier _copier;
        private readonly int _connection;
        private readonly Slot[] _slots;
        private readonly object _lock = new();
        private readonly ExtentList _items = new();
        private readonly Stack<Slot> _idle = new();
        private readonly ManualResetEventSlim _wake = new(false);
        private readonly ExtentList _extents = new();
        // A range's requests, cut before they are queued under the lock: reused, so that a long copy allocates
        // nothing per range (a new list each time was 12 KiB per 128 MiB of garbage that no collection ever came for).
        private readonly ExtentList _cut = new();
        private readonly List<NbdHandle> _polled = new(2);
        private readonly bool _discard;
        private readonly RequestBuffers _buffers;
        private volatile bool _stopPolling;

        public Worker(AioCopier copier, int connection)
        {
            _copier = copier;
            _connection = connection;
            CopyOptions options = copier._options;
            int slots = (int)Math.Max(1, Math.Min(options.MaxRequests, options.QueueSize / options.RequestSize));
            // Into null: with no --blkhash nothing ever looks at the data, so every read of this connection may land in
            // one buffer, and memory does not grow with --requests (libnbd's nbdcopy touches them all). Otherwise each
            // slot has its own, all in one region backed by huge pages (RequestBuffers).
            _discard = copier._destination.DiscardsData && options.BlockHash == null;
            _buffers = new RequestBuffers(_discard ? 1 : slots, options.RequestSize);
            _slots = new Slot[slots];
            for (int i = 0; i < slots; i++)
            {
                _slots[i] = new Slot(this, _buffers[_discard ? 0 : i]);
                _idle.Push(_slots[i]);
            }
        }

        public void ReleaseBuffers() => _buffers.Dispose();

        public void Run()
        {
            // Like libnbd, the worker itself polls its connections and the completion callbacks run on it; only a
            // TLS connection (whose decrypted bytes poll(2) cannot see) gets a thread of its own that polls it.
            var pollers = new List<Thread>(2);
            foreach (NbdHandle? handle in new[] { _copier._source.PollHandle(_connection), _copier._destination.PollHandle(_connection) })
            {
                if (handle == null)
                    continue;
                if (!handle.GetTlsNegotiated())
                {
                    _polled.Add(handle);
                    continue;
                }
                var poller = new Thread(() => PollLoop(handle)) { IsBackground = true, Name = "nbdcopy poller " + _connection };
                poller.Start();
                pollers.Add(poller);
            }
            try
            {
                Produce();
            }
            catch (Exception e) when (e is ToolException or NbdException or System.IO.IOException or InvalidOperationException)
            {
                _copier.Fail(e is NbdException ? _copier._source.Name + ": " + e.Message : e.Message);
            }
            finally
            {
                _stopPolling = true;
                foreach (Thread poller in pollers)
                    poller.Join();
            }
        }

        /// <summary>The library's switch to its portable data path (NBDSHARP_PORTABLE_SOCKETS=1) selects the portable wait too, to test it on Linux.</summary>
        private static readonly bool PortableWait = PortableFileEnd.Requested;

        /// <summary>
        /// <see cref="WaitForProgress"/> where poll(2) is not called (Windows): the same wait through
        /// <see cref="Socket.Select(System.Collections.IList, System.Collections.IList, System.Collections.IList, TimeSpan)"/>
        /// on views of the connections' sockets.
        /// </summary>
        private void WaitForProgressPortably(int count)
        {
            var readers = new List<Socket>(count);
            var writers = new List<Socket>(count);
            var views = new Socket[count];
            try
            {
                for (int i = 0; i < count; i++)
                {
                    views[i] = new Socket(new SafeSocketHandle(_polled[i].AioGetFd(), ownsHandle: false));
                    readers.Add(views[i]);
                    if ((_polled[i].AioGetDirection() & AioDirection.Write) != 0)
                        writers.Add(views[i]);
                }
                Socket.Select(readers, writers.Count > 0 ? writers : null, null, TimeSpan.FromMilliseconds(10));
                using RequestBatch batch = NbdHandle.BatchRequests();
                for (int i = 0; i < count; i++)
                {
                    try
                    {
                        if (writers.Contains(views[i]) && (_polled[i].AioGetDirection() & AioDirection.Write) != 0)
                            _polled[i].AioNotifyWrite();
                        if (readers.Contains(views[i]))
                            _polled[i].AioNotifyRead();
                    }
                    catch (NbdException) when (_polled[i].AioIsDead())
                    {
                        AwaitCommandFailures(_polled[i]);
                        throw;
                    }
                }
            }
            finally
            {
                foreach (Socket? view in views)
                    view?.Dispose();
            }
        }

        /// <summary>
        /// Waits until a polled connection has replies, or room for the requests it still has to send, and lets it
        /// process them (running their callbacks here), as libnbd's event-loop contract has it: the descriptor of
        /// <see cref="NbdHandle.AioGetFd"/>, watched for writing too while <see cref="NbdHandle.AioGetDirection"/> says
        /// so. The wait is short (10 ms) because replies may also be read by another thread (a TLS poller).
        /// </summary>
        private void WaitForProgress()
        {
            int count = _polled.Count;
            if (count == 0)
            {
                _wake.Wait(10);
                return;
            }
            if ((OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) && !PortableWait)
                PollNatively(count);
            else
                WaitForProgressPortably(count);
        }

        [System.Runtime.Versioning.SupportedOSPlatform("linux")]
        [System.Runtime.Versioning.SupportedOSPlatform("macos")]
        private unsafe void PollNatively(int count)
        {
            LibC.PollFd* fds = stackalloc LibC.PollFd[2];
            for (int i = 0; i < count; i++)
            {
                bool write = (_polled[i].AioGetDirection() & AioDirection.Write) != 0;
                fds[i] = new LibC.PollFd { Fd = _polled[i].AioGetFd(), Events = (short)(LibC.POLLIN | (write ? LibC.POLLOUT : 0)) };
            }
            if (LibC.Poll(fds, (nuint)count, 10) <= 0)
                return;
            // The next reads and the writes the callbacks issue leave together once both connections are processed.
            using RequestBatch batch = NbdHandle.BatchRequests();
            for (int i = 0; i < count; i++)
            {
                short revents = fds[i].Revents;
                if (revents == 0)
                    continue;
                try
                {
                    if ((revents & LibC.POLLOUT) != 0 && (_polled[i].AioGetDirection() & AioDirection.Write) != 0)
                        _polled[i].AioNotifyWrite();
                    if ((revents & ~LibC.POLLOUT) != 0)
                        _polled[i].AioNotifyRead();
                }
                catch (NbdException) when (_polled[i].AioIsDead())
                {
                    AwaitCommandFailures(_polled[i]);
                    throw;
                }
            }
        }

        /// <summary>
        /// A connection that died under us (the server went away, a request timed out) fails its commands through
        /// their callbacks, maybe on another thread and a moment later; those failures say which request, so they
        /// are given a second to be recorded before the connection's own error is.
        /// </summary>
        private static void AwaitCommandFailures(NbdHandle handle)
        {
            for (int waited = 0; waited < 100 && handle.AioInFlight() > 0; waited++)
                Thread.Sleep(10);
        }

        /// <summary>Keeps the request queue filled from the source's ranges and hands requests to idle slots,
        /// until every range is copied and every slot is idle again.</summary>
        private void Produce()
        {
            bool rangesDone = false;
            while (true)
            {
                _wake.Reset();
                if (_copier.Failed)
                    return;
                bool low;
                lock (_lock)
                    low = _items.Count < _slots.Length;
                if (low && !rangesDone)
                {
                    if (_copier.NextRange(out long offset, out long count))
                        Enqueue(offset, count);
                    else
                        rangesDone = true;
                }
                Dispatch();
                lock (_lock)
                {
                    if (rangesDone && _items.Count == 0 && _idle.Count == _slots.Length)
                        return;
                    low = _items.Count < _slots.Length;
                }
                if (!low || rangesDone)
                    WaitForProgress();
            }
        }

        /// <summary>Cuts a range into requests, as libnbd: runs of zeroes coalesced, data by --request-size.</summary>
        private void Enqueue(long offset, long count)
        {
            CopyOptions options = _copier._options;
            if (options.Extents)
                _copier._source.GetExtents(_connection, offset, count, _extents);
            else
                CopyEnd.DefaultExtents(offset, count, _extents);
            ExtentList items = _cut;
            items.Clear();
            int index = 0;
            long zeroStart = -1;
            while (count > 0)
            {
                long length = Math.Min(count, options.RequestSize);
                if (OnlyZeroes(_extents, ref index, offset, length))
                {
                    if (zeroStart < 0)
                        zeroStart = offset;
                }
                else
                {
                    if (zeroStart >= 0)
                    {
                        items.Add(new Extent(zeroStart, offset - zeroStart, true));
                        zeroStart = -1;
                    }
                    items.Add(new Extent(offset, length, false));
                }
                offset += length;
                count -= length;
            }
            if (zeroStart >= 0)
                items.Add(new Extent(zeroStart, offset - zeroStart, true));
            lock (_lock)
            {
                foreach (Extent item in items)
                    _items.Add(item);
            }
        }

        private static bool OnlyZeroes(ExtentList extents, ref int index, long offset, long length)
        {
            while (index + 1 < extents.Count && extents[index + 1].Offset <= offset)
                index++;
            for (int j = index; j < extents.Count; j++)
            {
                Extent extent = extents[j];
                if (extent.Offset >= offset + length)
                    break;
                if (!extent.Zero)
                    return false;
            }
            return true;
        }

        private void Dispatch()
        {
            while (!_copier.Failed)
            {
                Slot slot;
                Extent item;
                lock (_lock)
                {
                    if (_idle.Count == 0 || _items.Count == 0)
                        return;
                    slot = _idle.Pop();
                    item = _items.Dequeue();
                }
                Start(slot, item);
            }
        }

        /// <summary>A slot finished its request: it takes the next one at once, unless this thread is already inside
        /// <see cref="Start"/> (ends that complete inline would otherwise recurse), in which case the producer does.</summary>
        private void Finished(Slot slot)
        {
            Extent item = default;
            bool next = false;
            bool wake;
            lock (_lock)
            {
                if (t_starting == 0 && !_copier.Failed && _items.Count > 0)
                {
                    item = _items.Dequeue();
                    next = true;
                }
                else
                {
                    _idle.Push(slot);
                }
                wake = !next || _items.Count < _slots.Length;
            }
            if (wake)
                _wake.Set();
            if (next)
                Start(slot, item);
        }

        private void Start(Slot slot, Extent item)
        {
            t_starting++;
            try
            {
                slot.Item = item;
                if (item.Zero)
                {
                    _copier._options.BlockHash?.Add(item.Offset, item.Length, default, zero: true);
                    slot.Pending = 1;
                    Zero(slot, item.Offset, item.Length);
                    Done(slot);
                }
                else
                {
                    _copier._source.StartRead(_connection, slot.Buffer[..(int)item.Length], item.Offset, slot.OnRead);
                }
            }
            catch (Exception e) when (e is ToolException or NbdException or System.IO.IOException or InvalidOperationException)
            {
                _copier.Fail(CopyFailure.Describe(item.Zero ? "write" : "read", item.Offset, e));
                _wake.Set();
            }
            finally
            {
                t_starting--;
            }
        }

        /// <summary>The read arrived: hash it, then write it out, zero blocks (--sparse) as zero requests.</summary>
        public int ReadDone(Slot slot, int error)
        {
            Extent item = slot.Item;
            if (error != 0)
            {
                FailWith("read", item.Offset, error);
                return 1;
            }
            try
            {
                ReadOnlyMemory<byte> data = slot.Buffer[..(int)item.Length];
                CopyOptions options = _copier._options;
                options.BlockHash?.Add(item.Offset, item.Length, data.Span, zero: false);
                slot.Pending = 1;
                long sparse = options.SparseSize;
                if (options.Allocated || sparse == 0 || _discard)
                {
                    Write(slot, data, item.Offset);
                }
                else
                {
                    long start = item.Offset;
                    long end = start + item.Length;
                    long runStart = start;
                    bool runIsZero = false;
                    long block = Math.Min(RoundUp(start, sparse), end);
                    ReadOnlySpan<byte> bytes = data.Span;
                    for (; block + sparse <= end; block += sparse)
                    {
                        bool zero = IsZero(bytes.Slice((int)(block - start), (int)sparse));
                        if (zero == runIsZero)
                            continue;
                        if (block > runStart)
                            Run(slot, data, start, runStart, block, runIsZero);
                        runStart = block;
                        runIsZero = zero;
                    }
                    if (block > runStart)
                        Run(slot, data, start, runStart, block, runIsZero);
                    if (end > block)
                        Write(slot, data[(int)(block - start)..], block);
                }
                Done(slot);
            }
            catch (Exception e) when (e is ToolException or NbdException or System.IO.IOException or InvalidOperationException)
            {
                _copier.Fail(CopyFailure.Describe("write", item.Offset, e));
                _wake.Set();
            }
            return 1;
        }

        private void Run(Slot slot, ReadOnlyMemory<byte> data, long start, long from, long to, bool zero)
        {
            if (zero)
                Zero(slot, from, to - from);
            else
                Write(slot, data.Slice((int)(from - start), (int)(to - from)), from);
        }

        private void Write(Slot slot, ReadOnlyMemory<byte> data, long offset)
        {
            Interlocked.Increment(ref slot.Pending);
            _copier._destination.StartWrite(_connection, data, offset, slot.OnWrite);
        }

        /// <summary>Nothing when the destination reads as zeroes already, a zero request when it has one, else
        /// zeroes written the hard way.</summary>
        private void Zero(Slot slot, long offset, long length)
        {
            if (_copier._options.DestinationIsZero)
                return;
            Interlocked.Increment(ref slot.Pending);
            if (_copier._destination.StartZero(_connection, offset, length, _copier._options.Allocated, slot.OnWrite))
                return;
            Interlocked.Decrement(ref slot.Pending);
            while (length > 0)
            {
                int chunk = (int)Math.Min(length, _copier._options.RequestSize);
                Write(slot, ZeroBuffer.Get(_copier._options.RequestSize).AsMemory(0, chunk), offset);
                offset += chunk;
                length -= chunk;
            }
        }

        public int WriteDone(Slot slot, int error)
        {
            if (error != 0)
            {
                FailWith("write", slot.Item.Offset, error);
                return 1;
            }
            Done(slot);
            return 1;
        }

        private void Done(Slot slot)
        {
            if (Interlocked.Decrement(ref slot.Pending) == 0 && !_copier.Failed)
                Finished(slot);
        }

        private void FailWith(string what, long offset, int error)
        {
            _copier.Fail(CopyFailure.Describe(what, offset, error));
            _wake.Set();
        }

        /// <summary>Reads one NBD connection's replies (running the completion callbacks) until the worker is done.</summary>
        private void PollLoop(NbdHandle handle)
        {
            try
            {
                while (!_stopPolling && !_copier.Failed)
                    handle.Poll(handle.AioInFlight() > 0 ? -1 : 10);
            }
            catch (NbdException e)
            {
                if (handle.AioIsDead())
                    AwaitCommandFailures(handle);
                _copier.Fail(e.Message);
            }
            catch (ObjectDisposedException)
            {
                // Torn down after a failure elsewhere.
            }
            _wake.Set();
        }
    }

    /// <summary>One request in flight: its buffer, its item, and how many of its writes are still out.</summary>
    private sealed class Slot
    {
        public Slot(Worker worker, Memory<byte> buffer)
        {
            _buffer = new BufferBox { Value = buffer };
            OnRead = (ref int error) => worker.ReadDone(this, error);
            OnWrite = (ref int error) => worker.WriteDone(this, error);
        }

        // In a box of its own, so that Slot's layout is fixed where ReadyToRun compiles nbdcopy (see CopyOptions).
        private readonly BufferBox _buffer;

        public Memory<byte> Buffer => _buffer.Value;

        private sealed class BufferBox
        {
            public Memory<byte> Value;
        }

        public Extent Item;

        /// <summary>Writes and zeroes in flight, plus one while they are being issued.</summary>
        public int Pending;

        public CompletionCallback OnRead { get; }

        public CompletionCallback OnWrite { get; }
    }
}
