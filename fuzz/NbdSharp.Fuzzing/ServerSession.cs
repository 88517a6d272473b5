using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging.Abstractions;
using NbdSharp.Server;
using NbdSharp.Server.Negotiation;
using NbdSharp.Server.Transmission;

namespace NbdSharp.Fuzzing;

/// <summary>
/// One client session of the server over an in-memory stream: the client's bytes are handed out at most <c>split</c>
/// at a time and then end of stream, everything the server writes is kept. The session runs as
/// <see cref="NbdServer"/> runs a connection (the handshake, then the transmission loop, on one <see cref="InputBuffer"/>),
/// but on the calling thread rather than the thread pool, so that the fuzzer's coverage is the input's alone: with an
/// export that completes at once, the whole session completes before <see cref="Run"/> looks at it. It must end on its
/// own, within a bound, and with no exception but the I/O ending that the server expects (NbdServer logs anything else
/// as a failure).
/// </summary>
internal static class ServerSession
{
    /// <summary>Output past this is counted but not kept (reads of 64 KiB each can add up).</summary>
    public const int MaxOutput = 16 * 1024 * 1024;

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(3);

    /// <summary>Runs the session; returns the server's bytes, or null when there were more than <see cref="MaxOutput"/>.</summary>
    public static byte[]? Run(byte[] client, int split, NbdServerOptions options, IEnumerable<(string Name, NbdExport Export, string? Description)> exports)
    {
        options.Validate();
        var registry = new ExportRegistry();
        foreach ((string name, NbdExport export, string? description) in exports)
            registry.Add(new ServedExport(name, description, export), isDefault: false);
        var stream = new ScriptStream(client, split);
        var log = new ServerLog(NullLogger.Instance, 1);
        Task session = ServeAsync(stream, registry, options, log);
        if (!session.IsCompleted && !session.Wait(Limit))
            throw new FuzzInvariantException("the server's session did not end within " + Limit + " after the client's last byte");
        try
        {
            session.GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // How a session ends when the client's bytes run out in the middle of a message.
        }
        catch (Exception e)
        {
            throw new FuzzInvariantException("the server failed unexpectedly: " + e.Message, e);
        }
        return stream.Overflowed ? null : stream.Output;
    }

    /// <summary>What NbdServer does with one connection: the handshake, then, if an export was entered, the transmission loop.</summary>
    private static async Task ServeAsync(Stream stream, ExportRegistry registry, NbdServerOptions options, ServerLog log)
    {
        using (stream)
        {
            var input = new InputBuffer(stream);
            var handshake = new ServerHandshake(stream, input, registry, options, log);
            Negotiated? negotiated = await handshake.RunAsync(CancellationToken.None).ConfigureAwait(false);
            if (negotiated == null)
                return;
            var loop = new TransmissionLoop(handshake.Stream, input, negotiated, options, log, CancellationToken.None);
            await loop.RunAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>The client's side: a fixed script to read, a growing record of what the server wrote.</summary>
    private sealed class ScriptStream(byte[] script, int split) : Stream
    {
        private readonly MemoryStream _output = new();
        private int _position;
        private bool _disposed;

        public byte[] Output => _output.ToArray();

        public bool Overflowed { get; private set; }

        public override bool CanRead => true;

        public override bool CanWrite => true;

        public override bool CanSeek => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(Span<byte> buffer)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            int count = Math.Min(buffer.Length, script.Length - _position);
            if (split > 0)
                count = Math.Min(count, split);
            script.AsSpan(_position, count).CopyTo(buffer);
            _position += count;
            return count;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            cancellationToken.IsCancellationRequested ? ValueTask.FromCanceled<int>(cancellationToken) : ValueTask.FromResult(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            lock (_output)
            {
                if (_output.Length + buffer.Length > MaxOutput)
                    Overflowed = true;
                else
                    _output.Write(buffer);
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (cancellationToken.IsCancellationRequested)
                return ValueTask.FromCanceled(cancellationToken);
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush()
        {
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            _disposed = true;
            base.Dispose(disposing);
        }
    }
}

/// <summary>
/// An export that holds the server to what <see cref="NbdExport"/> promises implementers: every call inside the disk,
/// aligned to the advertised minimum, reads and writes no longer than the maximum, nothing that changes data on a
/// read-only export. A broken promise is kept (the server turns an export's exception into an error reply) and thrown
/// by <see cref="ThrowIfBroken"/>. The data lives in a <see cref="MemoryExport"/>, whose calls complete at once; a
/// <c>dense</c> one reports no extents, so reads go out as one data chunk and block status as one allocated extent.
/// </summary>
internal sealed class CheckingExport(long size, ExportBlockSize blockSize, bool readOnly, bool dense) : NbdExport
{
    private readonly MemoryExport _inner = new(size);
    private string? _broken;

    public override long Size => size;

    public override bool IsReadOnly => readOnly;

    public override bool CanFlush => true;

    public override bool CanFua => true;

    public override bool CanTrim => true;

    public override bool CanZero => true;

    public override bool CanFastZero => true;

    public override bool CanCache => true;

    public override bool CanMultiConn => true;

    public override bool CanExtents => !dense;

    public override bool CanSparseRead => !dense;

    public override ExportBlockSize BlockSize => blockSize;

    public void ThrowIfBroken()
    {
        if (Volatile.Read(ref _broken) is { } broken)
            throw new FuzzInvariantException("the server broke an export promise: " + broken);
    }

    private void Check(string call, long offset, long length, bool changes, bool payload, bool aligned = true)
    {
        string? problem = null;
        if (offset < 0 || length < 1 || offset > size - length)
            problem = "outside the disk";
        else if (aligned && (offset % blockSize.Minimum != 0 || (length % blockSize.Minimum != 0 && offset + length != size)))
            problem = "not aligned to the minimum block size " + blockSize.Minimum;
        else if (payload && length > blockSize.Maximum)
            problem = "longer than the maximum payload " + blockSize.Maximum;
        else if (changes && readOnly)
            problem = "on a read-only export";
        if (problem == null)
            return;
        Interlocked.CompareExchange(ref _broken, call + " at " + offset + " length " + length + " " + problem, null);
        throw new NbdException(Errno.EIO, "harness: broken promise");
    }

    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Check("read", offset, buffer.Length, changes: false, payload: true);
        return _inner.ReadAsync(offset, buffer, cancellationToken);
    }

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Check("write", offset, data.Length, changes: true, payload: true);
        return _inner.WriteAsync(offset, data, fua, cancellationToken);
    }

    public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        Check("trim", offset, length, changes: true, payload: false);
        return _inner.TrimAsync(offset, length, fua, cancellationToken);
    }

    public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
    {
        Check("zero", offset, length, changes: true, payload: false);
        return _inner.ZeroAsync(offset, length, mayTrim, fast, fua, cancellationToken);
    }

    public override ValueTask CacheAsync(long offset, long length, CancellationToken cancellationToken)
    {
        Check("cache", offset, length, changes: false, payload: false);
        return ValueTask.CompletedTask;
    }

    public override ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
    {
        // Inside the disk, but with no alignment promise: a sparse read asks for its own range.
        Check("extents", offset, length, changes: false, payload: false, aligned: false);
        return _inner.GetExtentsAsync(offset, length, extents, cancellationToken);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}
