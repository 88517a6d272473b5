using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// A readable, seekable <see cref="Stream"/> served read-only: an image inside an archive, a download kept in memory,
/// any .NET stream. Its length when the export is made is the disk's size. Reads take turns (a stream is not
/// thread-safe), each seeking and then reading exactly the bytes asked for.
/// </summary>
public sealed class StreamExport : NbdExport
{
    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly long _size;
    private readonly SemaphoreSlim _turn = new(1, 1);

    /// <summary>Serves <paramref name="stream"/>.</summary>
    /// <param name="stream">A readable, seekable stream; its current length is the disk's size.</param>
    /// <param name="leaveOpen">Whether disposing the export leaves the stream open; by default it disposes it.</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="stream"/> cannot read or cannot seek.</exception>
    public StreamExport(Stream stream, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead || !stream.CanSeek)
            throw new ArgumentException("stream: the stream must be readable and seekable", nameof(stream));
        _stream = stream;
        _leaveOpen = leaveOpen;
        _size = stream.Length;
    }

    /// <inheritdoc/>
    public override long Size => _size;

    /// <inheritdoc/>
    public override bool IsReadOnly => true;

    /// <inheritdoc/>
    /// <exception cref="NbdException">The stream ended before the range did (EIO): it shrank after the export was made.</exception>
    public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _stream.Position = offset;
            await _stream.ReadExactlyAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
        catch (EndOfStreamException e)
        {
            throw new NbdException(Errno.EIO, "stream: the stream ended before offset " + (offset + buffer.Length) +
                " (it is shorter than when the export was made)", e);
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (!_leaveOpen)
                _stream.Dispose();
            _turn.Dispose();
        }
        base.Dispose(disposing);
    }
}
