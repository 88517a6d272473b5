using System;

namespace NbdSharp.Tools.Copy;

/// <summary>A run of the source that either holds data or reads as zeroes.</summary>
internal readonly record struct Extent(long Offset, long Length, bool Zero);

/// <summary>
/// One side of a copy (libnbd's <c>struct rw</c>): an NBD export, a file or block device, a pipe, or <c>null:</c>.
/// Connection indexes pick the NBD connection of a worker; other kinds ignore them.
/// </summary>
internal abstract class CopyEnd : IDisposable
{
    protected CopyEnd(string name, string kind)
    {
        Name = name;
        Kind = kind;
    }

    /// <summary>The name the user gave, for messages.</summary>
    public string Name { get; }

    /// <summary>libnbd's name for the kind of end (as --verbose prints it).</summary>
    public string Kind { get; }

    /// <summary>The size in bytes, or -1 when it cannot be known (a pipe).</summary>
    public long Size { get; protected set; } = -1;

    /// <summary>The preferred request size: a power of two.</summary>
    public long Preferred { get; protected set; } = 4096;

    public virtual bool IsReadOnly => false;

    public virtual bool CanMultiConn => false;

    /// <summary>Whether what is written here is never looked at (<c>null:</c>): reads for it may share one buffer.</summary>
    public virtual bool DiscardsData => false;

    /// <summary>Whether <see cref="GetExtents"/> tells holes from data.</summary>
    public virtual bool CanExtents => false;

    /// <summary>Opens connections 1 to <paramref name="connections"/> - 1 (multi-conn).</summary>
    public virtual void StartMultiConn(int connections)
    {
    }

    /// <summary>Sizes a destination to <paramref name="size"/> when it is a regular file.</summary>
    /// <returns>Whether the destination now reads as zeroes throughout.</returns>
    public virtual bool Truncate(long size) => false;

    /// <summary>For the synchronous copy: reads up to the buffer's length, fewer only at the end.</summary>
    /// <returns>The bytes read; 0 at the end.</returns>
    public abstract int ReadSome(Span<byte> buffer, long offset);

    /// <summary>For the synchronous copy: writes <paramref name="buffer"/> at <paramref name="offset"/>.</summary>
    public abstract void Write(ReadOnlySpan<byte> buffer, long offset);

    /// <summary>For the synchronous copy: makes a range read as zeroes without sending data, if this end can.</summary>
    /// <param name="offset">Where the range starts.</param>
    /// <param name="length">How long it is.</param>
    /// <param name="allocate">Whether the range must stay allocated (--allocated).</param>
    /// <returns>False when this end cannot zero efficiently (the caller then writes zeroes).</returns>
    public virtual bool Zero(long offset, long length, bool allocate) => false;

    /// <summary>Replaces <paramref name="extents"/> with the extents of <c>[offset, offset + count)</c>, in order,
    /// covering it exactly. Ends that cannot tell report one data extent.</summary>
    public virtual void GetExtents(int connection, long offset, long count, ExtentList extents) =>
        DefaultExtents(offset, count, extents);

    public static void DefaultExtents(long offset, long count, ExtentList extents)
    {
        extents.Clear();
        extents.Add(new Extent(offset, count, false));
    }

    // The callback form used by the multi-connection copy (libnbd's aio with completion callbacks). NBD ends
    // complete on the thread that polls their connection; the others complete inline, before returning.

    /// <summary>The handle whose replies someone must poll for connection <paramref name="connection"/>, or null
    /// when this end completes everything inline.</summary>
    public virtual NbdHandle? PollHandle(int connection) => null;

    /// <summary>Starts reading exactly <paramref name="buffer"/>'s length at <paramref name="offset"/>;
    /// <paramref name="done"/> is called once with the errno (0 on success).</summary>
    public abstract void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done);

    /// <summary>Starts writing <paramref name="buffer"/> at <paramref name="offset"/>; <paramref name="done"/> is
    /// called once with the errno.</summary>
    public abstract void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done);

    /// <summary>Starts zeroing a range if this end can without data (as <see cref="Zero"/>).</summary>
    /// <returns>False (and <paramref name="done"/> is not called) when it cannot.</returns>
    public virtual bool StartZero(int connection, long offset, long length, bool allocate, CompletionCallback done) => false;

    /// <summary>Calls <paramref name="done"/> now with success.</summary>
    protected static void CompleteInline(CompletionCallback done)
    {
        int error = 0;
        done(ref error);
    }

    /// <summary>Makes the written data durable (--flush).</summary>
    public virtual void Flush()
    {
    }

    /// <summary>The orderly end: flushes buffers and closes connections politely.</summary>
    public virtual void Close()
    {
    }

    /// <summary>Releases everything at once (also after a failure).</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
    }
}
