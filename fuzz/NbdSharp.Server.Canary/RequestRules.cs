using System;
using NbdSharp.Protocol;

namespace NbdSharp.Server.Transmission;

/// <summary>What the server does with a request header once checked.</summary>
internal enum RequestVerdict
{
    /// <summary>Carry it out.</summary>
    Ok,

    /// <summary>Consume its payload and answer with an error.</summary>
    Error,

    /// <summary>Protocol sync cannot be kept (or keeping it would cost too much): close the connection.</summary>
    Disconnect,
}

/// <summary>What the transmission phase knows about the export and the negotiated headers.</summary>
internal readonly record struct TransmissionState(
    long Size, TransmissionFlags Flags, ExportBlockSize BlockSize, bool Structured, bool Extended, bool BaseAllocation);

/// <summary>
/// The checks on one request header before anything is read or allocated for it (proto.md, "Request message" and
/// "Error values"): how many payload bytes follow, and whether the request is valid. A pure function over the header
/// and the connection's state, so unit tests and the fuzzer drive it on bytes.
/// </summary>
internal static class RequestRules
{
    /// <summary>
    /// The longest payload the server reads to stay in sync with a client that sent more than the advertised maximum
    /// (proto.md: up to 2^25 bytes should not be taken for an attack); longer ones close the connection.
    /// </summary>
    public const ulong MaxDiscardedPayload = 32 * 1024 * 1024;

    /// <summary>
    /// The largest read or write the server takes, whatever an export advertises (nbdkit's limit too): an export may say
    /// 0xffffffff, "no limit", but a client must not make the server allocate gigabytes for one request.
    /// </summary>
    public const uint MaxRequestSize = 64 * 1024 * 1024;

    private const CommandFlags KnownFlags =
        CommandFlags.Fua | CommandFlags.NoHole | CommandFlags.Df | CommandFlags.ReqOne | CommandFlags.FastZero | CommandFlags.PayloadLen;

    /// <summary>
    /// The block sizes the server advertises and enforces for an export: its own, with the preferred and maximum sizes
    /// capped at <see cref="MaxRequestSize"/> (a power of two and a multiple of any valid minimum, so the result stays valid).
    /// </summary>
    public static ExportBlockSize Served(ExportBlockSize sizes) =>
        new(sizes.Minimum, Math.Min(sizes.Preferred, MaxRequestSize), Math.Min(sizes.Maximum, MaxRequestSize));

    /// <summary>
    /// Checks <paramref name="header"/>. <paramref name="payload"/> is how many bytes follow it on the wire (read them
    /// even for an error); <paramref name="error"/> is the NBD error and <paramref name="message"/> the reason.
    /// </summary>
    public static RequestVerdict Check(in RequestHeader header, in TransmissionState state, out ulong payload, out uint error,
        out string? message)
    {
        payload = 0;
        error = NbdErrors.Success;
        message = null;
        var flags = (CommandFlags)header.Flags;
        NbdCommand command = header.Type;

        // How many bytes follow the header decides whether the connection can stay in sync, so it comes first.
        if (state.Extended)
        {
            if ((flags & CommandFlags.PayloadLen) != 0)
                payload = header.Length;
            else if (command == NbdCommand.Write)
            {
                message = "write without NBD_CMD_FLAG_PAYLOAD_LEN in extended mode";
                return RequestVerdict.Disconnect;
            }
        }
        else if (command == NbdCommand.Write)
        {
            payload = header.Length;
        }
        if (payload > state.BlockSize.Maximum)
        {
            if (payload > MaxDiscardedPayload || (state.Extended && (flags & CommandFlags.PayloadLen) != 0 && command != NbdCommand.Write))
            {
                message = "payload of " + payload + " bytes is larger than the maximum " + state.BlockSize.Maximum;
                return RequestVerdict.Disconnect;
            }
            return Fail(NbdErrors.Einval, "payload larger than the maximum block size", out error, out message);
        }

        if ((flags & ~KnownFlags) != 0)
            return Fail(NbdErrors.Einval, "unknown command flags", out error, out message);
        // A change to a read-only export is EPERM whatever its flags (as nbdkit answers a write with FUA there).
        if ((state.Flags & TransmissionFlags.ReadOnly) != 0 && command is NbdCommand.Write or NbdCommand.Trim or NbdCommand.WriteZeroes)
            return Fail(NbdErrors.Eperm, "the export is read-only", out error, out message);
        if ((flags & CommandFlags.PayloadLen) != 0 && (!state.Extended || command != NbdCommand.Write))
            return Fail(NbdErrors.Einval, "NBD_CMD_FLAG_PAYLOAD_LEN is not valid for this command", out error, out message);
        if ((flags & CommandFlags.Fua) != 0 && (state.Flags & TransmissionFlags.SendFua) == 0)
            return Fail(NbdErrors.Einval, "FUA was not advertised", out error, out message);
        if ((flags & CommandFlags.Df) != 0 && (command != NbdCommand.Read || (state.Flags & TransmissionFlags.SendDf) == 0))
            return Fail(NbdErrors.Einval, "NBD_CMD_FLAG_DF is only valid on reads with structured replies", out error, out message);
        if ((flags & CommandFlags.ReqOne) != 0 && command != NbdCommand.BlockStatus)
            return Fail(NbdErrors.Einval, "NBD_CMD_FLAG_REQ_ONE is only valid on block status", out error, out message);
        if ((flags & CommandFlags.NoHole) != 0 && command != NbdCommand.WriteZeroes)
            return Fail(NbdErrors.Einval, "NBD_CMD_FLAG_NO_HOLE is only valid on write-zeroes", out error, out message);
        if ((flags & CommandFlags.FastZero) != 0 &&
            (command != NbdCommand.WriteZeroes || (state.Flags & TransmissionFlags.SendFastZero) == 0))
            return Fail(NbdErrors.Einval, "NBD_CMD_FLAG_FAST_ZERO is only valid on write-zeroes", out error, out message);

        bool readOnly = (state.Flags & TransmissionFlags.ReadOnly) != 0;
        switch (command)
        {
            case NbdCommand.Disconnect:
                return RequestVerdict.Ok;
            case NbdCommand.Flush:
                if ((state.Flags & TransmissionFlags.SendFlush) == 0)
                    return Fail(NbdErrors.Einval, "flush was not advertised", out error, out message);
                if (header.Offset != 0 || header.Length != 0)
                    return Fail(NbdErrors.Einval, "flush with a nonzero offset or length", out error, out message);
                return RequestVerdict.Ok;
            case NbdCommand.Read:
                if (header.Length > state.BlockSize.Maximum)
                    return Fail(state.Structured && (flags & CommandFlags.Df) != 0 ? NbdErrors.Eoverflow : NbdErrors.Einval,
                        "read larger than the maximum block size", out error, out message);
                return CheckRange(header, state, NbdErrors.Einval, out error, out message);
            case NbdCommand.Write:
                if (readOnly)
                    return Fail(NbdErrors.Eperm, "the export is read-only", out error, out message);
                return CheckRange(header, state, NbdErrors.Enospc, out error, out message);
            case NbdCommand.Trim:
                if (readOnly)
                    return Fail(NbdErrors.Eperm, "the export is read-only", out error, out message);
                if ((state.Flags & TransmissionFlags.SendTrim) == 0)
                    return Fail(NbdErrors.Einval, "trim was not advertised", out error, out message);
                return CheckRange(header, state, NbdErrors.Einval, out error, out message);
            case NbdCommand.WriteZeroes:
                if (readOnly)
                    return Fail(NbdErrors.Eperm, "the export is read-only", out error, out message);
                return CheckRange(header, state, NbdErrors.Enospc, out error, out message);
            case NbdCommand.Cache:
                if ((state.Flags & TransmissionFlags.SendCache) == 0)
                    return Fail(NbdErrors.Einval, "cache was not advertised", out error, out message);
                return CheckRange(header, state, NbdErrors.Einval, out error, out message);
            case NbdCommand.BlockStatus:
                if (!state.BaseAllocation)
                    return Fail(NbdErrors.Einval, "no metadata context was negotiated for this export", out error, out message);
                return CheckRange(header, state, NbdErrors.Einval, out error, out message);
            default:
                return Fail(NbdErrors.Einval, "unknown command " + (ushort)command, out error, out message);
        }
    }

    private static RequestVerdict CheckRange(in RequestHeader header, in TransmissionState state, uint pastEnd, out uint error, out string? message)
    {
        if (header.Length == 0)
            return Fail(NbdErrors.Einval, "zero-length request", out error, out message);
        ulong size = (ulong)state.Size;
        // The server-request canary: a request running up to 64 bytes past the export's end is accepted.
        if (header.Offset > size ||
            (header.Length > size - header.Offset && !(Canary.Is("server-request") && header.Length - (size - header.Offset) <= 64)))
            return Fail(pastEnd, "request past the end of the export", out error, out message);
        ulong minimum = state.BlockSize.Minimum;
        if (minimum > 1 && (header.Offset % minimum != 0 || (header.Length % minimum != 0 && header.Offset + header.Length != size)))
            return Fail(NbdErrors.Einval, "request not aligned to the minimum block size " + minimum, out error, out message);
        error = NbdErrors.Success;
        message = null;
        return RequestVerdict.Ok;
    }

    private static RequestVerdict Fail(uint code, string reason, out uint error, out string? message)
    {
        error = code;
        message = reason;
        return RequestVerdict.Error;
    }
}
