using System;
using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using NbdSharp.Engine;
using NbdSharp.Negotiation;
using NbdSharp.Protocol;

namespace NbdSharp;

/// <summary>
/// The data commands: the checks libnbd makes before anything is sent (state, flags, strict mode), shared by
/// the three forms, and the synchronous form of each command.
/// </summary>
public sealed unsafe partial class NbdHandle
{
    private const CmdFlag PreadStructuredFlags = CmdFlag.Df;
    private const CmdFlag PwriteFlags = CmdFlag.Fua | CmdFlag.PayloadLen;
    private const CmdFlag TrimFlags = CmdFlag.Fua;
    private const CmdFlag ZeroFlags = CmdFlag.Fua | CmdFlag.NoHole | CmdFlag.FastZero;
    private const CmdFlag BlockStatusFlags = CmdFlag.ReqOne;

    /// <summary>Reads <paramref name="buf"/>.Length bytes at <paramref name="offset"/> (<c>nbd_pread</c>).</summary>
    /// <param name="buf">Receives the data; zeroed first when <see cref="GetPreadInitialize"/> is true.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags">No flag is valid.</param>
    /// <exception cref="NbdException">EINVAL for bad flags or an out-of-bounds read, ENOTCONN before connecting,
    /// the server's error, or the connection's failure.</exception>
    public void Pread(Span<byte> buf, ulong offset, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_pread";
        ZeroIfInitializing(buf);
        CommandEngine engine = SyncEngine(call);
        fixed (byte* data = buf)
        {
            Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, CmdFlag.None, data);
            RunSync(engine, cmd, call);
        }
    }

    /// <summary>
    /// Reads with a callback for each chunk of the reply: data, holes and errors at an offset
    /// (<c>nbd_pread_structured</c>). Without structured replies the callback sees the whole buffer once.
    /// </summary>
    /// <param name="buf">Receives the data.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="chunk">Called for each chunk, on the thread reading the reply.</param>
    /// <param name="flags"><see cref="CmdFlag.Df"/> asks for one chunk.</param>
    public void PreadStructured(Span<byte> buf, ulong offset, ChunkCallback chunk, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_pread_structured";
        ArgumentNullException.ThrowIfNull(chunk);
        ZeroIfInitializing(buf);
        CommandEngine engine = SyncEngine(call);
        fixed (byte* data = buf)
        {
            Command cmd = PrepareRead(engine, call, (ulong)buf.Length, offset, flags, PreadStructuredFlags, data);
            cmd.Chunk = chunk;
            RunSync(engine, cmd, call);
        }
    }

    /// <summary>Writes <paramref name="buf"/> at <paramref name="offset"/> (<c>nbd_pwrite</c>).</summary>
    /// <param name="buf">The data.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>; <see cref="CmdFlag.PayloadLen"/> is managed automatically in strict mode.</param>
    /// <exception cref="NbdException">EPERM on a read-only export, ENOSPC past the end, ERANGE over the payload
    /// maximum, the server's error, or the connection's failure.</exception>
    public void Pwrite(ReadOnlySpan<byte> buf, ulong offset, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_pwrite";
        CommandEngine engine = SyncEngine(call);
        fixed (byte* data = buf)
        {
            Command cmd = PrepareWrite(engine, call, (ulong)buf.Length, offset, flags, data);
            RunSync(engine, cmd, call);
        }
    }

    /// <summary>Makes every write the server has acknowledged durable (<c>nbd_flush</c>).</summary>
    /// <param name="flags">No flag is valid.</param>
    /// <exception cref="NbdException">EINVAL if the server cannot flush, the server's error, or the connection's failure.</exception>
    public void Flush(CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_flush";
        CommandEngine engine = SyncEngine(call);
        RunSync(engine, PrepareFlush(engine, call, flags), call);
    }

    /// <summary>Discards (punches a hole in) a range (<c>nbd_trim</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>.</param>
    public void Trim(ulong count, ulong offset, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_trim";
        CommandEngine engine = SyncEngine(call);
        RunSync(engine, PrepareTrim(engine, call, count, offset, flags), call);
    }

    /// <summary>Asks the server to prefetch a range (<c>nbd_cache</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags">No flag is valid.</param>
    public void Cache(ulong count, ulong offset, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_cache";
        CommandEngine engine = SyncEngine(call);
        RunSync(engine, PrepareCache(engine, call, count, offset, flags), call);
    }

    /// <summary>Writes zeroes to a range (<c>nbd_zero</c>).</summary>
    /// <param name="count">The length.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="flags"><see cref="CmdFlag.Fua"/>, <see cref="CmdFlag.NoHole"/>, <see cref="CmdFlag.FastZero"/>.</param>
    public void Zero(ulong count, ulong offset, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_zero";
        CommandEngine engine = SyncEngine(call);
        RunSync(engine, PrepareZero(engine, call, count, offset, flags), call);
    }

    /// <summary>
    /// Asks which parts of a range are allocated, zero, dirty... for each negotiated metadata context, with
    /// libnbd's 32-bit extent callback (<c>nbd_block_status</c>).
    /// </summary>
    /// <param name="count">The length of interest (the server may answer less or, for the last extent, more).</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent">Called once per context with (length, flags) pairs.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    /// <exception cref="NbdException">ENOTSUP without structured replies or negotiated contexts.</exception>
    public void BlockStatus(ulong count, ulong offset, ExtentCallback extent, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_block_status";
        ArgumentNullException.ThrowIfNull(extent);
        CommandEngine engine = SyncEngine(call);
        Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
        cmd.Extent = extent;
        RunSync(engine, cmd, call);
    }

    /// <summary>As <see cref="BlockStatus"/>, with 64-bit extents (<c>nbd_block_status_64</c>).</summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="extent64">Called once per context with the extents.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>.</param>
    public void BlockStatus64(ulong count, ulong offset, Extent64Callback extent64, CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_block_status_64";
        ArgumentNullException.ThrowIfNull(extent64);
        CommandEngine engine = SyncEngine(call);
        Command cmd = PrepareBlockStatus(engine, call, count, offset, flags);
        cmd.Extent64 = extent64;
        RunSync(engine, cmd, call);
    }

    /// <summary>
    /// Block status limited to some of the negotiated contexts (<c>nbd_block_status_filter</c>): the request carries
    /// the contexts' ids as its payload, which needs extended headers and a server that accepts such payloads
    /// (<see cref="CanBlockStatusPayload"/>).
    /// </summary>
    /// <param name="count">The length of interest.</param>
    /// <param name="offset">The export offset.</param>
    /// <param name="contexts">Negotiated context names to report (see <see cref="CanMetaContext"/>).</param>
    /// <param name="extent64">Called once per reported context with the extents.</param>
    /// <param name="flags"><see cref="CmdFlag.ReqOne"/>; <see cref="CmdFlag.PayloadLen"/> is managed automatically
    /// unless <see cref="StrictFlag.AutoFlag"/> is cleared.</param>
    public void BlockStatusFilter(ulong count, ulong offset, IReadOnlyList<string> contexts, Extent64Callback extent64,
        CmdFlag flags = CmdFlag.None)
    {
        const string call = "nbd_block_status_filter";
        ArgumentNullException.ThrowIfNull(contexts);
        ArgumentNullException.ThrowIfNull(extent64);
        CommandEngine engine = SyncEngine(call);
        Command cmd = PrepareBlockStatusFilter(engine, call, count, offset, contexts, flags);
        cmd.Extent64 = extent64;
        RunSync(engine, cmd, call);
    }

    private void ZeroIfInitializing(Span<byte> buf)
    {
        if (_preadInitialize)
            buf.Clear();
    }

    /// <summary>The engine, for a synchronous call; refused inside this handle's own callbacks, where waiting would deadlock.</summary>
    private CommandEngine SyncEngine(string call)
    {
        CommandEngine engine = Connected(call);
        if (engine.IsReadingOnCurrentThread)
            Throw(call, Errno.EDEADLK, "cannot make a blocking call on a handle from inside one of its own callbacks");
        return engine;
    }

    /// <summary>Issues a command and waits for it; its error, if any, is thrown naming <paramref name="call"/>.</summary>
    private static void RunSync(CommandEngine engine, Command cmd, string call)
    {
        cmd.Kind = CommandKind.Sync;
        cmd.CallName = call;
        try
        {
            engine.Issue(cmd, call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
        catch
        {
            cmd.Release();
            throw;
        }
        engine.WaitSync(cmd);
        try
        {
            if (cmd.Error != 0)
                throw cmd.ToException(call);
        }
        catch (NbdException e) when (Recorded(e))
        {
            throw;
        }
        finally
        {
            cmd.Release();
        }
    }

    private void CheckFlags(string call, CmdFlag flags, CmdFlag allowed)
    {
        if ((flags & ~allowed) != 0 && ((_strict & StrictFlag.Flags) != 0 || (uint)flags > ushort.MaxValue))
            Throw(call, Errno.EINVAL, "flags: invalid value for flag: 0x" + ((uint)flags).ToString("x", CultureInfo.InvariantCulture));
    }

    private bool StrictCommands => (_strict & StrictFlag.Commands) != 0;

    private TransmissionFlags ExportFlags => (TransmissionFlags)(_export?.TransmissionFlags ?? 0);

    private void RequireFlag(string call, TransmissionFlags flag, string what)
    {
        if ((ExportFlags & flag) == 0)
            Throw(call, Errno.EINVAL, "server does not support " + what);
    }

    private void RequireWritable(string call)
    {
        if ((ExportFlags & TransmissionFlags.ReadOnly) != 0)
            Throw(call, Errno.EPERM, "server does not support write operations");
    }

    private void RequireFuaIfAsked(string call, CmdFlag flags)
    {
        if ((flags & CmdFlag.Fua) != 0)
            RequireFlag(call, TransmissionFlags.SendFua, "the FUA flag");
    }

    private Command PrepareRead(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags, CmdFlag allowed, byte* data)
    {
        CheckFlags(call, flags, allowed);
        if (StrictCommands && (flags & CmdFlag.Df) != 0)
            RequireFlag(call, TransmissionFlags.SendDf, "the DF flag");
        Command cmd = Prepare(engine, call, NbdCommand.Read, flags, offset, count, Errno.EINVAL);
        cmd.Data = data;
        cmd.Initialized = _preadInitialize;
        return cmd;
    }

    private Command PrepareWrite(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags, byte* data)
    {
        CheckFlags(call, flags, PwriteFlags);
        bool extended = engine.ExtendedHeaders;
        if ((_strict & StrictFlag.AutoFlag) != 0)
            flags = extended ? flags | CmdFlag.PayloadLen : flags & ~CmdFlag.PayloadLen;
        if (StrictCommands)
        {
            RequireWritable(call);
            RequireFuaIfAsked(call, flags);
            if (((flags & CmdFlag.PayloadLen) != 0) != extended)
                Throw(call, Errno.EINVAL, "incorrect setting for PAYLOAD_LEN flag");
        }
        Command cmd = Prepare(engine, call, NbdCommand.Write, flags, offset, count, Errno.ENOSPC);
        cmd.Data = data;
        return cmd;
    }

    private Command PrepareFlush(CommandEngine engine, string call, CmdFlag flags)
    {
        CheckFlags(call, flags, CmdFlag.None);
        if (StrictCommands)
            RequireFlag(call, TransmissionFlags.SendFlush, "flush operations");
        return Prepare(engine, call, NbdCommand.Flush, flags, 0, 0, 0);
    }

    private Command PrepareTrim(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags)
    {
        CheckFlags(call, flags, TrimFlags);
        if (StrictCommands)
        {
            RequireFlag(call, TransmissionFlags.SendTrim, "trim operations");
            RequireWritable(call);
            RequireFuaIfAsked(call, flags);
        }
        return Prepare(engine, call, NbdCommand.Trim, flags, offset, count, Errno.ENOSPC);
    }

    private Command PrepareCache(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags)
    {
        CheckFlags(call, flags, CmdFlag.None);
        // proto.md: some servers accept NBD_CMD_CACHE without advertising it; strict mode, as libnbd, does not.
        if (StrictCommands)
            RequireFlag(call, TransmissionFlags.SendCache, "cache operations");
        return Prepare(engine, call, NbdCommand.Cache, flags, offset, count, Errno.EINVAL);
    }

    private Command PrepareZero(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags)
    {
        CheckFlags(call, flags, ZeroFlags);
        if (StrictCommands)
        {
            RequireFlag(call, TransmissionFlags.SendWriteZeroes, "zero operations");
            RequireWritable(call);
            RequireFuaIfAsked(call, flags);
            if ((flags & CmdFlag.FastZero) != 0)
                RequireFlag(call, TransmissionFlags.SendFastZero, "the fast zero flag");
        }
        return Prepare(engine, call, NbdCommand.WriteZeroes, flags, offset, count, Errno.ENOSPC);
    }

    private Command PrepareBlockStatus(CommandEngine engine, string call, ulong count, ulong offset, CmdFlag flags)
    {
        CheckFlags(call, flags, BlockStatusFlags);
        if (StrictCommands)
        {
            NegotiatedExport export = _export!;
            if (!export.StructuredReplies)
                Throw(call, Errno.ENOTSUP, "server does not support structured replies");
            if (!export.MetaValid || export.MetaContexts.Count == 0)
            {
                Throw(call, Errno.ENOTSUP, "did not negotiate any metadata contexts, either you did not call " +
                                           "nbd_add_meta_context before connecting or the server does not support it");
            }
        }
        return Prepare(engine, call, NbdCommand.BlockStatus, flags, offset, count, Errno.EINVAL);
    }

    /// <summary>A block status whose payload names the negotiated contexts to report (libnbd's checks and wire rules).</summary>
    private Command PrepareBlockStatusFilter(CommandEngine engine, string call, ulong count, ulong offset,
        IReadOnlyList<string> contexts, CmdFlag flags)
    {
        CheckFlags(call, flags, BlockStatusFlags | CmdFlag.PayloadLen);
        if ((_strict & StrictFlag.AutoFlag) != 0)
        {
            // The flag changes the wire format: follow what was negotiated rather than the caller.
            if (!engine.ExtendedHeaders)
                Throw(call, Errno.ENOTSUP, "server does not support extended headers");
            flags |= CmdFlag.PayloadLen;
        }
        if (StrictCommands)
        {
            RequireFlag(call, TransmissionFlags.BlockStatusPayload, "the block status payload flag");
            if ((flags & CmdFlag.PayloadLen) == 0)
                Throw(call, Errno.EINVAL, "incorrect setting for PAYLOAD_LEN flag");
        }

        NegotiatedExport export = _export!;
        int length = checked(8 + (4 * contexts.Count));
        if (length > NbdProtocol.MaxRequestSize ||
            ((_strict & StrictFlag.Payload) != 0 && (uint)length > export.PayloadMaximum))
        {
            Throw(call, Errno.ERANGE, "filter set too large");
        }
        byte[] payload = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            BinaryPrimitives.WriteUInt64BigEndian(payload, count);
            for (int i = 0; i < contexts.Count; i++)
            {
                string name = contexts[i] ?? throw new ArgumentException("a context name is null", nameof(contexts));
                uint? id = null;
                if (export.MetaValid)
                {
                    foreach (NegotiatedContext negotiated in export.MetaContexts)
                    {
                        if (string.Equals(negotiated.Name, name, StringComparison.Ordinal))
                        {
                            id = negotiated.Id;
                            break;
                        }
                    }
                }
                if (id == null)
                    Throw(call, Errno.EINVAL, "context " + name + " not negotiated");
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + (4 * i)), id.Value);
            }
            Command cmd = PrepareBlockStatus(engine, call, count, offset, flags & ~CmdFlag.PayloadLen);
            cmd.WireFlags = (CommandFlags)(ushort)flags;
            cmd.RequestPayload = payload;
            cmd.RequestPayloadLength = length;
            return cmd;
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(payload);
            throw;
        }
    }

    /// <summary>
    /// libnbd's checks common to every command (nbd_internal_command_common), then a pooled command.
    /// <paramref name="boundsErrno"/> is the errno for an out-of-bounds range (EINVAL for reads, ENOSPC for
    /// writes), or 0 for commands without a range.
    /// </summary>
    private Command Prepare(CommandEngine engine, string call, NbdCommand type, CmdFlag flags, ulong offset, ulong count, int boundsErrno)
    {
        StrictFlag strict = _strict;
        if (engine.DisconnectRequested)
            Throw(call, Errno.EINVAL, "cannot request more commands after NBD_CMD_DISC");
        if (boundsErrno != 0)
        {
            NegotiatedExport export = _export!;
            if ((strict & StrictFlag.ZeroSize) != 0 && count == 0)
                Throw(call, Errno.EINVAL, "count cannot be 0");
            if ((strict & StrictFlag.Bounds) != 0 && (offset > export.ExportSize || count > export.ExportSize - offset))
                Throw(call, boundsErrno, "request out of bounds");
            uint minimum = export.BlockMinimum;
            if (minimum != 0 && (strict & StrictFlag.Align) != 0 && ((offset | count) & (minimum - 1)) != 0)
                Throw(call, Errno.EINVAL, "request is unaligned");
        }
        switch (type)
        {
            case NbdCommand.Write:
            case NbdCommand.Read:
                uint payloadMaximum = _export!.PayloadMaximum;
                if (type == NbdCommand.Write && (strict & StrictFlag.Payload) != 0 && count > payloadMaximum)
                    Throw(call, Errno.ERANGE, "request too large: maximum payload size is " + payloadMaximum.ToString(CultureInfo.InvariantCulture));
                if (count > NbdProtocol.MaxRequestSize)
                    Throw(call, Errno.ERANGE, "request too large: maximum request size is " + NbdProtocol.MaxRequestSize.ToString(CultureInfo.InvariantCulture));
                break;
            default:
                // Without extended headers the length field on the wire has 32 bits.
                if (!engine.ExtendedHeaders && count > uint.MaxValue)
                    Throw(call, Errno.ERANGE, "request too large: maximum request size is " + uint.MaxValue.ToString(CultureInfo.InvariantCulture));
                break;
        }
        Command cmd = engine.Rent();
        cmd.Type = type;
        cmd.WireFlags = (CommandFlags)(ushort)flags;
        cmd.Offset = offset;
        cmd.Count = count;
        cmd.CallName = call;
        return cmd;
    }
}
