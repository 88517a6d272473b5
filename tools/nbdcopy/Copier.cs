using System;
using System.Collections.Generic;
using System.Globalization;
using System.Threading;
using System.Threading.Tasks;

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
    private readonly CancellationTokenSource _failed = new();
    private string? _failure;

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

    /// <summary>Why the copy failed (one line), or null while it has not.</summary>
    public string? Failure => Volatile.Read(ref _failure);

    /// <summary>Signalled at the first failure.</summary>
    public CancellationToken FailedToken => _failed.Token;

    /// <summary>Records the first failure and stops everything else.</summary>
    public void Fail(string message)
    {
        if (Interlocked.CompareExchange(ref _failure, message, null) == null)
            _failed.Cancel();
    }

    /// <summary>
    /// The synchronous copy (--synchronous, and whenever a side is a pipe): one request at a time, in order. A
    /// source of unknown size is copied until its end; otherwise extents still let holes be zeroed, not read.
    /// </summary>
    public async Task RunSynchronousAsync()
    {
        byte[] buffer = GC.AllocateUninitializedArray<byte>(_options.RequestSize, pinned: true);
        long offset = 0;
        if (_source.Size < 0)
        {
            while (true)
            {
                int n;
                try
                {
                    n = await _source.ReadSomeAsync(buffer, offset).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not CopyFailedException)
                {
                    throw Failed(Describe("read", offset, e));
                }
                if (n == 0)
                {
                    CopiedSize = offset;
                    return;
                }
                _options.BlockHash?.Add(offset, n, buffer.AsSpan(0, n), zero: false);
                await WriteAsync(0, buffer.AsMemory(0, n), offset).ConfigureAwait(false);
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
                    await _source.GetExtentsAsync(0, offset, count, extents).ConfigureAwait(false);
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
                    await ZeroAsync(0, offset, extent.Length).ConfigureAwait(false);
                    offset += extent.Length;
                    continue;
                }
                Memory<byte> data = buffer.AsMemory(0, (int)extent.Length);
                int n;
                try
                {
                    n = await _source.ReadSomeAsync(data, offset).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not CopyFailedException)
                {
                    throw Failed(Describe("read", offset, e));
                }
                if (n < data.Length)
                    throw Failed(_source.Name + ": unexpected end of file");
                _options.BlockHash?.Add(offset, n, data.Span, zero: false);
                await WriteAsync(0, data, offset).ConfigureAwait(false);
                offset += n;
                _progress.Update(offset, _source.Size);
            }
        }
    }

    internal static long RoundUp(long value, long multiple) => (value + multiple - 1) & ~(multiple - 1);

    internal static bool IsZero(ReadOnlySpan<byte> block) => !block.ContainsAnyExcept((byte)0);

    private async ValueTask WriteAsync(int connection, ReadOnlyMemory<byte> data, long offset)
    {
        try
        {
            await _destination.WriteAsync(connection, data, offset).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Failed(Describe("write", offset, e));
        }
    }

    /// <summary>Makes a range of the destination read as zeroes: nothing when it already does, a zero request
    /// when the destination has one, else zeroes written the hard way.</summary>
    private async ValueTask ZeroAsync(int connection, long offset, long length)
    {
        if (_options.DestinationIsZero)
            return;
        try
        {
            if (await _destination.ZeroAsync(connection, offset, length, _options.Allocated).ConfigureAwait(false))
                return;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Failed(Describe("write", offset, e));
        }
        while (length > 0)
        {
            int chunk = (int)Math.Min(length, _zeroes.Length);
            await WriteAsync(connection, _zeroes.AsMemory(0, chunk), offset).ConfigureAwait(false);
            offset += chunk;
            length -= chunk;
        }
    }

    private CopyFailedException Failed(string message)
    {
        Fail(message);
        return new CopyFailedException();
    }

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

    /// <summary>Unwinds a worker after its failure was recorded in <see cref="Failure"/>.</summary>
    internal sealed class CopyFailedException : Exception
    {
    }
}
