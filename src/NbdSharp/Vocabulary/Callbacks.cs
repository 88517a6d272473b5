using System;
using System.Runtime.InteropServices;

namespace NbdSharp;

/// <summary>
/// Called exactly once when an asynchronous command completes. <paramref name="error"/> is 0 on success or
/// the command's errno. Return 1 to retire the command at once (its cookie is then unknown); return 0 to
/// leave it for <see cref="NbdHandle.AioCommandCompleted"/>; return -1 after storing a non-zero value in
/// <paramref name="error"/> to replace the command's error.
/// </summary>
/// <param name="error">The command's errno, 0 on success.</param>
/// <returns>1 to auto-retire, 0 otherwise.</returns>
public delegate int CompletionCallback(ref int error);

/// <summary>
/// Called for each chunk of a structured read: data, a hole (which reads as zeroes) or an error at an offset.
/// Return -1 (after optionally storing an errno in <paramref name="error"/>) to fail the read.
/// </summary>
/// <param name="subbuf">The part of the read buffer this chunk filled.</param>
/// <param name="offset">The export offset of the chunk.</param>
/// <param name="status">One of <see cref="ReadStatus"/>.</param>
/// <param name="error">The error so far (for <see cref="ReadStatus.Error"/>, the server's error).</param>
/// <returns>0 to continue, -1 to fail the command.</returns>
public delegate int ChunkCallback(ReadOnlySpan<byte> subbuf, ulong offset, uint status, ref int error);

/// <summary>
/// Called once per metadata context of a block status reply with (length, flags) pairs flattened into
/// <paramref name="entries"/>, as libnbd's 32-bit extent callback.
/// </summary>
/// <param name="metacontext">The context name, e.g. <c>base:allocation</c>.</param>
/// <param name="offset">The offset the extents start at (the request's offset).</param>
/// <param name="entries">Pairs of extent length and status flags.</param>
/// <param name="error">The error so far.</param>
/// <returns>0 to continue, -1 to fail the command.</returns>
public delegate int ExtentCallback(string metacontext, ulong offset, ReadOnlySpan<uint> entries, ref int error);

/// <summary>Called once per metadata context of a block status reply with 64-bit extents, as libnbd's extent64 callback.</summary>
/// <param name="metacontext">The context name, e.g. <c>base:allocation</c>.</param>
/// <param name="offset">The offset the extents start at (the request's offset).</param>
/// <param name="entries">The extents.</param>
/// <param name="error">The error so far.</param>
/// <returns>0 to continue, -1 to fail the command.</returns>
public delegate int Extent64Callback(string metacontext, ulong offset, ReadOnlySpan<NbdExtent> entries, ref int error);

/// <summary>Called for each export a server lists (<c>OptList</c>); <paramref name="description"/> is empty when none.</summary>
/// <param name="name">The export name.</param>
/// <param name="description">The export description, or "".</param>
/// <returns>Ignored; return 0.</returns>
public delegate int ListCallback(string name, string description);

/// <summary>Called for each metadata context a server lists or selects.</summary>
/// <param name="name">The context name.</param>
/// <returns>Ignored; return 0.</returns>
public delegate int ContextCallback(string name);

/// <summary>Receives libnbd-style debug messages when debugging is on.</summary>
/// <param name="context">The call that emitted the message, e.g. <c>nbd_connect_uri</c>.</param>
/// <param name="message">The message.</param>
/// <returns>Ignored; return 0.</returns>
public delegate int DebugCallback(string context, string message);

/// <summary>An extent of a 64-bit block status reply, libnbd's <c>nbd_extent</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct NbdExtent(ulong Length, ulong Flags);
