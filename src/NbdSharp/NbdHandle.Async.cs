using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Engine;

namespace NbdSharp;

/// <summary>
/// The Task-based form of every data command. The handle's reader thread completes the tasks; continuations
/// run asynchronously, never on the reader. Cancelling a token after the request was sent stops the wait only:
/// the command still completes on the wire, and its reply is drained without touching the caller's buffer.
/// </summary>
public sealed unsafe partial class NbdHandle
{
    /// <summary>Reads into <paramref name="buf"/> (the Task form of <see cref="Pread"/>).</summary>
    /// <param name="buf">Receives the data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags">No flag is valid.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask PreadAsync(Memory<byte> buf, ulong offset, CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_pread";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            ZeroIfInitializing(buf.Span);
            CommandEngine engine = Connected(call);
            Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, CmdFlag.None, null);
            return IssueAsync(engine, cmd, call, buf, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>A structured read with a chunk callback (the Task form of <see cref="PreadStructured"/>).</summary>
    /// <param name="buf">Receives the data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="chunk">Called for each chunk, on the reader thread.</param>
    /// <param name="flags"><see cref="CmdFlag.Df"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask PreadStructuredAsync(Memory<byte> buf, ulong offset, ChunkCallback chunk, CmdFlag flags = CmdFlag.None,
        CancellationToken cancellationToken = default)
    {
        const string call = "nbd_pread_structured";
        ArgumentNullException.ThrowIfNull(chunk);
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            ZeroIfInitializing(buf.Span);
            CommandEngine engine = Connected(call);
            Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, PreadStructuredFlags, null);
            cmd.Chunk = chunk;
            return IssueAsync(engine, cmd, call, buf, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Writes <paramref name="buf"/> (the Task form of <see cref="Pwrite"/>).</summary>
    /// <param name="buf">The data; pinned until the command completes.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask PwriteAsync(ReadOnlyMemory<byte> buf, ulong offset, CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_pwrite";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            Command cmd = PrepareWrite(engine, call, (ulong)buf.Length, offset, flags, null);
            return IssueAsync(engine, cmd, call, System.Runtime.InteropServices.MemoryMarshal.AsMemory(buf), cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Flushes (the Task form of <see cref="Flush"/>).</summary>
    /// <param name="flags">No flag is valid.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask FlushAsync(CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_flush";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            return IssueAsync(engine, PrepareFlush(engine, call, flags), call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Trims a range (the Task form of <see cref="Trim"/>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask TrimAsync(ulong count, ulong offset, CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_trim";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            return IssueAsync(engine, PrepareTrim(engine, call, count, offset, flags), call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Prefetches a range (the Task form of <see cref="Cache"/>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags">No flag is valid.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask CacheAsync(ulong count, ulong offset, CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_cache";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            return IssueAsync(engine, PrepareCache(engine, call, count, offset, flags), call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Writes zeroes to a range (the Task form of <see cref="Zero"/>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>, <see cref="CmdFlag.NoHole"/>, <see cref="CmdFlag.FastZero"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask ZeroAsync(ulong count, ulong offset, CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_zero";
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            return IssueAsync(engine, PrepareZero(engine, call, count, offset, flags), call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Block status with the 32-bit extent callback (the Task form of <see cref="BlockStatus"/>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent">Called once per metadata context, on the reader thread.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask BlockStatusAsync(ulong count, ulong offset, ExtentCallback extent, CmdFlag flags = CmdFlag.None,
        CancellationToken cancellationToken = default)
    {
        const string call = "nbd_block_status";
        ArgumentNullException.ThrowIfNull(extent);
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
            cmd.Extent = extent;
            return IssueAsync(engine, cmd, call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Block status with the 64-bit extent callback (the Task form of <see cref="BlockStatus64"/>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent64">Called once per metadata context, on the reader thread.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask BlockStatus64Async(ulong count, ulong offset, Extent64Callback extent64, CmdFlag flags = CmdFlag.None,
        CancellationToken cancellationToken = default)
    {
        const string call = "nbd_block_status_64";
        ArgumentNullException.ThrowIfNull(extent64);
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
            cmd.Extent64 = extent64;
            return IssueAsync(engine, cmd, call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Filtered block status (the Task form of <see cref="BlockStatusFilter"/>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="contexts">Negotiated context names to report.</param>
    /// <param name="extent64">Called once per reported context, on the reader thread.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>; <see cref="CmdFlag.PayloadLen"/> as in <see cref="BlockStatusFilter"/>.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>A task that completes with the command.</returns>
    public ValueTask BlockStatusFilterAsync(ulong count, ulong offset, IReadOnlyList<string> contexts, Extent64Callback extent64,
        CmdFlag flags = CmdFlag.None, CancellationToken cancellationToken = default)
    {
        const string call = "nbd_block_status_filter";
        ArgumentNullException.ThrowIfNull(contexts);
        ArgumentNullException.ThrowIfNull(extent64);
        if (cancellationToken.IsCancellationRequested)
            return ValueTask.FromCanceled(cancellationToken);
        try
        {
            CommandEngine engine = Connected(call);
            Command cmd = PrepareBlockStatusFilter(engine, call, count, offset, contexts, flags);
            cmd.Extent64 = extent64;
            return IssueAsync(engine, cmd, call, default, cancellationToken);
        }
        catch (NbdException e)
        {
            return ValueTask.FromException(e);
        }
    }

    private static ValueTask IssueAsync(CommandEngine engine, Command cmd, string call, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (!buffer.IsEmpty)
        {
            cmd.Pin = buffer.Pin();
            cmd.Data = (byte*)cmd.Pin.Pointer;
        }
        cmd.CancellationToken = cancellationToken;
        return engine.IssueAsync(cmd, call);
    }
}
