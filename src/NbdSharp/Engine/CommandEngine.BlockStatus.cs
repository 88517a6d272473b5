using System;
using NbdSharp.Protocol;

namespace NbdSharp.Engine;

/// <summary>Block status chunks: checked against the request and the export, then shown to the extent callbacks.</summary>
internal sealed unsafe partial class CommandEngine
{
    private const int InitialStatusBufferSize = 4096;

    /// <summary>Scratch for one chunk's descriptors; grows only as bytes arrive, never by a length the server claims.</summary>
    private byte[] _statusBuffer = [];
    // Made on first use (an empty array of these is .NET generic code that precompiled code cannot hold).
    private uint[]? _narrowEntries;
    private NbdExtent[]? _wideEntries;

    private void HandleBlockStatus(Command cmd, bool wide, ulong length)
    {
        if (cmd.Type != NbdCommand.BlockStatus)
            throw Violation($"server sent a block status chunk in reply to a {Name(cmd)} command");
        if (wide != ExtendedHeaders)
            throw Violation(wide
                ? "server sent NBD_REPLY_TYPE_BLOCK_STATUS_EXT without extended headers"
                : "server sent NBD_REPLY_TYPE_BLOCK_STATUS although extended headers were negotiated");
        int count = BlockStatusLayout.DescriptorCount(wide, length);
        if (count < 0)
            throw Violation($"server sent a block status chunk of invalid length {length}");
        int prefix = wide ? BlockStatusChunk.WidePrefixSize : BlockStatusChunk.NarrowPrefixSize;
        ReadOnlySpan<byte> payload = ReceiveStatusPayload((int)length);
        uint contextId = BlockStatusChunk.ReadContextId(payload);
        if (wide && BlockStatusChunk.ReadDescriptorCount(payload) != (uint)count)
            throw Violation("server sent a block status chunk whose descriptor count does not match its length");
        string? context = ContextName(contextId);
        if (context == null)
            throw Violation($"server sent block status for metadata context id {contextId}, which was not negotiated");
        cmd.StatusChunks++;
        ReadOnlySpan<byte> descriptors = payload[prefix..];

        ulong room = cmd.Offset <= ExportSize ? ExportSize - cmd.Offset : 0;
        switch (ExtentChecks.Check(descriptors, count, wide, room, out int index))
        {
            case ExtentProblem.ZeroLength:
                throw Violation($"server sent a zero-length extent for {context} at index {index}");
            case ExtentProblem.PastEnd:
                throw Violation($"server sent extents for {context} past the end of the export (size {ExportSize})");
        }

        bool deliver = BeginPayload(cmd);
        try
        {
            if (deliver)
                DeliverExtents(cmd, context, descriptors, count, wide);
        }
        finally
        {
            EndPayload(cmd);
        }
    }

    private void DeliverExtents(Command cmd, string context, ReadOnlySpan<byte> descriptors, int count, bool wide)
    {
        int descriptorSize = wide ? BlockStatusChunk.WideDescriptorSize : BlockStatusChunk.NarrowDescriptorSize;
        int error = cmd.Error;
        int result = 0;
        if (cmd.Extent64 != null)
        {
            if (_wideEntries == null || _wideEntries.Length < count)
                _wideEntries = new NbdExtent[Math.Max(count, (_wideEntries?.Length ?? 0) * 2)];
            for (int i = 0; i < count; i++)
            {
                BlockStatusChunk.ReadDescriptor(descriptors[(i * descriptorSize)..], wide, out ulong length, out ulong flags);
                _wideEntries[i] = new NbdExtent(length, flags);
            }
            result = Callbacks.InvokeExtent64(cmd.Extent64, context, cmd.Offset, new ReadOnlySpan<NbdExtent>(_wideEntries, 0, count), ref error);
        }
        else if (cmd.Extent != null)
        {
            if (_narrowEntries == null || _narrowEntries.Length < count * 2)
                _narrowEntries = new uint[Math.Max(count * 2, (_narrowEntries?.Length ?? 0) * 2)];
            int delivered = 0;
            for (int i = 0; i < count; i++)
            {
                BlockStatusChunk.ReadDescriptor(descriptors[(i * descriptorSize)..], wide, out ulong length, out ulong flags);
                bool stop = false;
                if (length > uint.MaxValue)
                {
                    // libnbd: a 64-bit extent shown to a 32-bit callback is cut to an aligned 32-bit length.
                    length = uint.MaxValue + 1UL - NbdProtocol.MaxRequestSize;
                    stop = true;
                }
                if (flags > uint.MaxValue)
                {
                    if (i > 0)
                        break;
                    cmd.SetError(Errno.EOVERFLOW, FailureKind.Server, context + ": extent flags do not fit in 32 bits");
                    error = cmd.Error;
                    flags = (uint)flags;
                    stop = true;
                }
                _narrowEntries[delivered * 2] = (uint)length;
                _narrowEntries[(delivered * 2) + 1] = (uint)flags;
                delivered++;
                if (stop)
                    break;
            }
            result = Callbacks.InvokeExtent(cmd.Extent, context, cmd.Offset, new ReadOnlySpan<uint>(_narrowEntries, 0, delivered * 2), ref error);
        }
        if (result == -1 && cmd.Error == 0)
            cmd.SetError(error != 0 ? error : Errno.EPROTO, FailureKind.Callback, null);
    }

    /// <summary>
    /// Receives a block status payload into a scratch buffer that grows only as bytes actually arrive, so
    /// a length claim alone never sizes an allocation.
    /// </summary>
    private ReadOnlySpan<byte> ReceiveStatusPayload(int length)
    {
        int have = 0;
        while (have < length)
        {
            if (have == _statusBuffer.Length)
                Array.Resize(ref _statusBuffer, (int)Math.Min(length, Math.Max(InitialStatusBufferSize, (long)_statusBuffer.Length * 2)));
            int take = Math.Min(length - have, _statusBuffer.Length - have);
            _input.ReceiveInto(_statusBuffer.AsSpan(have, take));
            have += take;
        }
        ReadOnlySpan<byte> payload = _statusBuffer.AsSpan(0, length);
        if (_statusBuffer.Length > 1024 * 1024)
        {
            byte[] big = _statusBuffer;
            _statusBuffer = [];
            return big.AsSpan(0, length);
        }
        return payload;
    }

    /// <summary>The name of the negotiated context <paramref name="id"/>, or null when none has that id.</summary>
    private string? ContextName(uint id)
    {
        foreach (NegotiatedContext context in _metaContexts)
        {
            if (context.Id == id)
                return context.Name;
        }
        return null;
    }
}
