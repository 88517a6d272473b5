using System;
using System.Buffers;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp;

/// <summary>
/// A seekable <see cref="Stream"/> over a connected <see cref="NbdHandle"/>, so an export plugs into anything
/// that takes a stream. <see cref="Stream.Length"/> is the export size (an export cannot grow: writing past
/// the end fails with ENOSPC). Requests are split at the server's payload limit; unaligned access to a server
/// with a minimum block size goes through a bounce buffer (an unaligned write is a read-modify-write of the
/// blocks it touches, which is not atomic against other writers).
/// </summary>
public sealed class NbdStream : Stream
{
    private readonly NbdHandle _handle;
    private readonly bool _ownsHandle;
    private readonly long _length;
    private readonly int _minimum;
    private readonly int _maxRequest;
    private readonly bool _canWrite;
    private long _position;
    private bool _disposed;

    /// <summary>Wraps a connected handle.</summary>
    /// <param name="handle">A connected handle.</param>
    /// <param name="ownsHandle">Whether disposing the stream disposes the handle.</param>
    /// <exception cref="NbdException">If the handle is not connected.</exception>
    public NbdStream(NbdHandle handle, bool ownsHandle = false)
    {
        ArgumentNullException.ThrowIfNull(handle);
        _handle = handle;
        _ownsHandle = ownsHandle;
        _length = handle.GetSize();
        _minimum = (int)Math.Max(1, handle.GetBlockSize(SizeKind.Minimum));
        // Requests stay within what the server advertised even below libnbd's 1 MiB payload floor.
        long limit = Math.Min(handle.GetBlockSize(SizeKind.Payload), 32L * 1024 * 1024);
        long maximum = handle.GetBlockSize(SizeKind.Maximum);
        if (maximum > 0)
            limit = Math.Min(limit, maximum);
        _maxRequest = (int)Math.Max(_minimum, limit / _minimum * _minimum);
        _canWrite = !handle.IsReadOnly();
    }

    /// <summary>The handle the stream reads and writes through.</summary>
    public NbdHandle Handle => _handle;

    /// <inheritdoc/>
    public override bool CanRead => !_disposed;

    /// <inheritdoc/>
    public override bool CanSeek => !_disposed;

    /// <inheritdoc/>
    public override bool CanWrite => !_disposed && _canWrite;

    /// <inheritdoc/>
    public override long Length
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _length;
        }
    }

    /// <inheritdoc/>
    public override long Position
    {
        get => _position;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _position = value;
        }
    }

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => _length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        if (target < 0)
            throw new IOException("An attempt was made to move the position before the beginning of the stream.");
        _position = target;
        return target;
    }

    /// <summary>Not supported: the size of an export is fixed by the server.</summary>
    /// <param name="value">Ignored.</param>
    public override void SetLength(long value) => throw new NotSupportedException("the size of an NBD export cannot be changed");

    /// <inheritdoc/>
    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    /// <inheritdoc/>
    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = Available(buffer.Length);
        int done = 0;
        while (done < count)
        {
            long at = _position + done;
            int n = Math.Min(count - done, _maxRequest);
            if (IsAligned(at, n))
                _handle.Pread(buffer.Slice(done, n), (ulong)at);
            else
                n = ReadUnaligned(buffer.Slice(done, UnalignedChunk(n, at)), at);
            done += n;
        }
        _position += done;
        return done;
    }

    /// <inheritdoc/>
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    /// <inheritdoc/>
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = Available(buffer.Length);
        int done = 0;
        while (done < count)
        {
            long at = _position + done;
            int n = Math.Min(count - done, _maxRequest);
            if (IsAligned(at, n))
                await _handle.PreadAsync(buffer.Slice(done, n), (ulong)at, CmdFlag.None, cancellationToken).ConfigureAwait(false);
            else
                n = await ReadUnalignedAsync(buffer.Slice(done, UnalignedChunk(n, at)), at, cancellationToken).ConfigureAwait(false);
            done += n;
        }
        _position += done;
        return done;
    }

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        Write(buffer.AsSpan(offset, count));
    }

    /// <inheritdoc/>
    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int done = 0;
        while (done < buffer.Length)
        {
            long at = _position + done;
            int n = Math.Min(buffer.Length - done, _maxRequest);
            if (IsAligned(at, n))
                _handle.Pwrite(buffer.Slice(done, n), (ulong)at);
            else
                n = WriteUnaligned(buffer.Slice(done, UnalignedChunk(n, at)), at);
            done += n;
        }
        _position += done;
    }

    /// <inheritdoc/>
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    /// <inheritdoc/>
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int done = 0;
        while (done < buffer.Length)
        {
            long at = _position + done;
            int n = Math.Min(buffer.Length - done, _maxRequest);
            if (IsAligned(at, n))
                await _handle.PwriteAsync(buffer.Slice(done, n), (ulong)at, CmdFlag.None, cancellationToken).ConfigureAwait(false);
            else
                n = await WriteUnalignedAsync(buffer.Slice(done, UnalignedChunk(n, at)), at, cancellationToken).ConfigureAwait(false);
            done += n;
        }
        _position += done;
    }

    /// <summary>Flushes the server's cache if it supports flush (<see cref="NbdHandle.Flush"/>); otherwise does nothing.</summary>
    public override void Flush()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_canWrite && _handle.CanFlush())
            _handle.Flush();
    }

    /// <inheritdoc/>
    public override Task FlushAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _canWrite && _handle.CanFlush() ? _handle.FlushAsync(CmdFlag.None, cancellationToken).AsTask() : Task.CompletedTask;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed && _ownsHandle)
            _handle.Dispose();
        _disposed = true;
        base.Dispose(disposing);
    }

    /// <summary>How much of an unaligned request fits in one aligned request of at most the maximum size.</summary>
    private int UnalignedChunk(int wanted, long at) => Math.Min(wanted, _maxRequest - (int)(at % _minimum));

    private int Available(int wanted) => (int)Math.Clamp(_length - _position, 0, wanted);

    private bool IsAligned(long offset, int count) => _minimum == 1 || (offset % _minimum == 0 && count % _minimum == 0);

    /// <summary>Reads what the aligned blocks around [at, at+count) hold; returns how much of the request it served.</summary>
    private int ReadUnaligned(Span<byte> destination, long at)
    {
        (long start, int skip, int span, int n) = Window(at, destination.Length);
        byte[] bounce = ArrayPool<byte>.Shared.Rent(span);
        try
        {
            _handle.Pread(bounce.AsSpan(0, span), (ulong)start);
            bounce.AsSpan(skip, n).CopyTo(destination);
            return n;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bounce);
        }
    }

    /// <summary>Read-modify-write of the aligned blocks around [at, at+count); returns how much of the request it served.</summary>
    private int WriteUnaligned(ReadOnlySpan<byte> source, long at)
    {
        (long start, int skip, int span, int n) = Window(at, source.Length);
        byte[] bounce = ArrayPool<byte>.Shared.Rent(span);
        try
        {
            _handle.Pread(bounce.AsSpan(0, span), (ulong)start);
            source[..n].CopyTo(bounce.AsSpan(skip));
            _handle.Pwrite(bounce.AsSpan(0, span), (ulong)start);
            return n;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bounce);
        }
    }

    /// <summary>The Task-based <see cref="ReadUnaligned"/>: never blocks the caller's thread.</summary>
    private async ValueTask<int> ReadUnalignedAsync(Memory<byte> destination, long at, CancellationToken cancellationToken)
    {
        (long start, int skip, int span, int n) = Window(at, destination.Length);
        byte[] bounce = ArrayPool<byte>.Shared.Rent(span);
        try
        {
            await _handle.PreadAsync(bounce.AsMemory(0, span), (ulong)start, CmdFlag.None, cancellationToken).ConfigureAwait(false);
            bounce.AsMemory(skip, n).CopyTo(destination);
            return n;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bounce);
        }
    }

    /// <summary>The Task-based <see cref="WriteUnaligned"/>: never blocks the caller's thread.</summary>
    private async ValueTask<int> WriteUnalignedAsync(ReadOnlyMemory<byte> source, long at, CancellationToken cancellationToken)
    {
        (long start, int skip, int span, int n) = Window(at, source.Length);
        byte[] bounce = ArrayPool<byte>.Shared.Rent(span);
        try
        {
            await _handle.PreadAsync(bounce.AsMemory(0, span), (ulong)start, CmdFlag.None, cancellationToken).ConfigureAwait(false);
            source[..n].CopyTo(bounce.AsMemory(skip));
            await _handle.PwriteAsync(bounce.AsMemory(0, span), (ulong)start, CmdFlag.None, cancellationToken).ConfigureAwait(false);
            return n;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bounce);
        }
    }

    /// <summary>The aligned blocks around [at, at+length): their start and size, where the range starts in them, and how much of it they hold.</summary>
    private (long Start, int Skip, int Span, int Count) Window(long at, int length)
    {
        long start = at / _minimum * _minimum;
        int skip = (int)(at - start);
        int span = RoundUp(skip + length);
        return (start, skip, span, Math.Min(length, span - skip));
    }

    private int RoundUp(int length) => (length + _minimum - 1) / _minimum * _minimum;
}
