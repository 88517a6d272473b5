using System;
using System.Buffers.Binary;
using System.Text;
using NbdSharp.Protocol;
using NbdSharp.Server;
using NbdSharp.Server.Negotiation;
using NbdSharp.Server.Transmission;
using Xunit;

namespace NbdSharp.Tests.Server;

/// <summary>The server's pure checks: request headers against the export and the negotiated mode, and option payloads.</summary>
public class RequestRulesTests
{
    private const TransmissionFlags AllFlags = TransmissionFlags.HasFlags | TransmissionFlags.SendFlush | TransmissionFlags.SendFua |
        TransmissionFlags.SendTrim | TransmissionFlags.SendWriteZeroes | TransmissionFlags.SendDf | TransmissionFlags.SendCache |
        TransmissionFlags.SendFastZero | TransmissionFlags.CanMultiConn;

    private static TransmissionState State(bool structured = true, bool extended = false, bool readOnly = false, uint minimum = 1,
        bool meta = true, TransmissionFlags flags = AllFlags) =>
        new(1 << 20, readOnly ? flags | TransmissionFlags.ReadOnly : flags, new ExportBlockSize(minimum, 4096, 64 * 1024), structured,
            extended, meta);

    private static RequestVerdict Check(NbdCommand command, ulong offset, ulong length, TransmissionState state, out ulong payload,
        out uint error, CommandFlags flags = CommandFlags.None) =>
        RequestRules.Check(new RequestHeader((ushort)flags, command, 1, offset, length), state, out payload, out error, out _);

    [Fact]
    public void ValidRequests_AreOk()
    {
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Read, 0, 4096, State(), out ulong payload, out _));
        Assert.Equal(0UL, payload);
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Write, 4096, 512, State(), out payload, out _, CommandFlags.Fua));
        Assert.Equal(512UL, payload);
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Flush, 0, 0, State(), out _, out _));
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.WriteZeroes, 0, 1 << 20, State(), out _, out _, CommandFlags.NoHole | CommandFlags.FastZero));
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.BlockStatus, 0, 1 << 20, State(), out _, out _, CommandFlags.ReqOne));
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Read, 0, 4096, State(), out _, out _, CommandFlags.Df));
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Disconnect, 0, 0, State(), out _, out _));
        // Trim, cache and write-zeroes take effect lengths beyond the maximum payload.
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Trim, 0, 1 << 20, State(), out _, out _));
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Cache, 0, 1 << 20, State(), out _, out _));
    }

    [Theory]
    [InlineData(0, 0UL, 0UL, NbdErrors.Einval)] // read
    [InlineData(0, 1UL << 20, 1UL, NbdErrors.Einval)]
    [InlineData(0, ulong.MaxValue, 2UL, NbdErrors.Einval)]
    [InlineData(1, (1UL << 20) - 1, 2UL, NbdErrors.Enospc)] // write
    [InlineData(6, (1UL << 20) - 1, 2UL, NbdErrors.Enospc)] // write-zeroes
    [InlineData(4, (1UL << 20) - 1, 2UL, NbdErrors.Einval)] // trim
    [InlineData(0, 0UL, 128UL * 1024, NbdErrors.Einval)]
    [InlineData(3, 1UL, 0UL, NbdErrors.Einval)] // flush
    [InlineData(42, 0UL, 1UL, NbdErrors.Einval)]
    [InlineData(8, 0UL, 1UL, NbdErrors.Einval)] // resize
    public void BadRanges_AndCommands_GetTheSpecsError(ushort command, ulong offset, ulong length, uint expected)
    {
        Assert.Equal(RequestVerdict.Error, Check((NbdCommand)command, offset, length, State(), out _, out uint error));
        Assert.Equal(expected, error);
    }

    [Fact]
    public void Flags_NotValidForTheCommand_OrNotAdvertised_AreEinval()
    {
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Read, 0, 512, State(), out _, out uint error, (CommandFlags)0x100));
        Assert.Equal(NbdErrors.Einval, error);
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 512, State(), out ulong payload, out _, CommandFlags.Df));
        Assert.Equal(512UL, payload); // the payload is still read to stay in sync
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Read, 0, 512, State(), out _, out _, CommandFlags.ReqOne));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 512, State(), out _, out _, CommandFlags.NoHole));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Trim, 0, 512, State(), out _, out _, CommandFlags.FastZero));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Read, 0, 512, State(structured: false, flags: AllFlags & ~TransmissionFlags.SendDf),
            out _, out _, CommandFlags.Df));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 512, State(flags: AllFlags & ~TransmissionFlags.SendFua), out _, out _,
            CommandFlags.Fua));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Trim, 0, 512, State(flags: AllFlags & ~TransmissionFlags.SendTrim), out _, out _));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Cache, 0, 512, State(flags: AllFlags & ~TransmissionFlags.SendCache), out _, out _));
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.BlockStatus, 0, 512, State(meta: false), out _, out _));
    }

    [Fact]
    public void ReadOnly_RefusesChangesWithEperm()
    {
        foreach (NbdCommand command in new[] { NbdCommand.Write, NbdCommand.Trim, NbdCommand.WriteZeroes })
        {
            Assert.Equal(RequestVerdict.Error, Check(command, 0, 512, State(readOnly: true), out _, out uint error));
            Assert.Equal(NbdErrors.Eperm, error);
        }
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Read, 0, 512, State(readOnly: true), out _, out _));
    }

    [Fact]
    public void Alignment_ToTheMinimumBlockSize()
    {
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Read, 1, 512, State(minimum: 512), out _, out uint error));
        Assert.Equal(NbdErrors.Einval, error);
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 100, State(minimum: 512), out ulong payload, out _));
        Assert.Equal(100UL, payload);
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Read, 512, 1024, State(minimum: 512), out _, out _));
    }

    [Fact]
    public void Payloads_PastTheMaximum_AreSkippedUpTo32MiB_ThenDisconnect()
    {
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 128 * 1024, State(), out ulong payload, out uint error));
        Assert.Equal(128UL * 1024, payload);
        Assert.Equal(NbdErrors.Einval, error);
        Assert.Equal(RequestVerdict.Disconnect, Check(NbdCommand.Write, 0, RequestRules.MaxDiscardedPayload + 1, State(), out _, out _));
    }

    [Fact]
    public void ExtendedHeaders_PayloadLenRules()
    {
        TransmissionState extended = State(extended: true);
        Assert.Equal(RequestVerdict.Ok, Check(NbdCommand.Write, 0, 512, extended, out ulong payload, out _, CommandFlags.PayloadLen));
        Assert.Equal(512UL, payload);
        // A write without the flag leaves no way to know how much follows.
        Assert.Equal(RequestVerdict.Disconnect, Check(NbdCommand.Write, 0, 512, extended, out _, out _));
        // Another command with a payload: read it, then EINVAL; a huge one closes the connection.
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Read, 0, 16, extended, out payload, out uint error, CommandFlags.PayloadLen));
        Assert.Equal(16UL, payload);
        Assert.Equal(NbdErrors.Einval, error);
        Assert.Equal(RequestVerdict.Disconnect, Check(NbdCommand.BlockStatus, 0, 1UL << 40, extended, out _, out _, CommandFlags.PayloadLen));
        // Compact headers never carry the flag.
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.Write, 0, 512, State(), out _, out _, CommandFlags.PayloadLen));
        // Effect lengths are 64-bit in extended mode.
        Assert.Equal(RequestVerdict.Error, Check(NbdCommand.BlockStatus, 0, 1UL << 40, extended, out _, out error));
        Assert.Equal(NbdErrors.Einval, error);
    }

    private static byte[] InfoPayload(string name, params ushort[] infos)
    {
        byte[] n = Encoding.UTF8.GetBytes(name);
        byte[] p = new byte[4 + n.Length + 2 + infos.Length * 2];
        BinaryPrimitives.WriteUInt32BigEndian(p, (uint)n.Length);
        n.CopyTo(p, 4);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++)
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6 + n.Length + i * 2), infos[i]);
        return p;
    }

    [Fact]
    public void InfoRequest_Decodes_AndRejectsBadLengths()
    {
        Assert.Null(OptionPayloads.TryReadInfoRequest(InfoPayload("disk", 3, 1, 99), out string name, out bool wantsName, out bool wantsDescription,
            out bool wantsBlockSize));
        Assert.Equal("disk", name);
        Assert.True(wantsName);
        Assert.False(wantsDescription);
        Assert.True(wantsBlockSize);

        byte[] good = InfoPayload("disk", 2);
        Assert.NotNull(OptionPayloads.TryReadInfoRequest(good.AsSpan(0, good.Length - 1), out _, out _, out _, out _));
        byte[] longer = new byte[good.Length + 1];
        good.CopyTo(longer, 0);
        Assert.NotNull(OptionPayloads.TryReadInfoRequest(longer, out _, out _, out _, out _));
        byte[] lying = InfoPayload("disk");
        BinaryPrimitives.WriteUInt32BigEndian(lying, uint.MaxValue);
        Assert.NotNull(OptionPayloads.TryReadInfoRequest(lying, out _, out _, out _, out _));
        Assert.NotNull(OptionPayloads.TryReadInfoRequest(new byte[5], out _, out _, out _, out _));
        byte[] notUtf8 = InfoPayload("ab");
        notUtf8[4] = 0xff;
        Assert.Equal("export name is not valid UTF-8", OptionPayloads.TryReadInfoRequest(notUtf8, out _, out _, out _, out _));
    }

    private static byte[] MetaPayload(string name, params string[] queries)
    {
        var buffer = new System.IO.MemoryStream();
        void U32(uint v)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(b, v);
            buffer.Write(b);
        }
        byte[] n = Encoding.UTF8.GetBytes(name);
        U32((uint)n.Length);
        buffer.Write(n);
        U32((uint)queries.Length);
        foreach (string q in queries)
        {
            byte[] b = Encoding.UTF8.GetBytes(q);
            U32((uint)b.Length);
            buffer.Write(b);
        }
        return buffer.ToArray();
    }

    [Fact]
    public void MetaContextRequest_Decodes_AndRejectsBadLengths()
    {
        Assert.Null(OptionPayloads.TryReadMetaContextRequest(MetaPayload("", "qemu:dirty-bitmap:x", "base:allocation"), out string name,
            out uint queries, out bool exact, out bool wildcard));
        Assert.Equal("", name);
        Assert.Equal(2u, queries);
        Assert.True(exact);
        Assert.False(wildcard);
        Assert.Null(OptionPayloads.TryReadMetaContextRequest(MetaPayload("d", "base:"), out _, out _, out exact, out wildcard));
        Assert.False(exact);
        Assert.True(wildcard);

        byte[] good = MetaPayload("d", "base:allocation");
        Assert.NotNull(OptionPayloads.TryReadMetaContextRequest(good.AsSpan(0, good.Length - 1), out _, out _, out _, out _));
        byte[] extra = new byte[good.Length + 3];
        good.CopyTo(extra, 0);
        Assert.NotNull(OptionPayloads.TryReadMetaContextRequest(extra, out _, out _, out _, out _));
        byte[] count = MetaPayload("d");
        BinaryPrimitives.WriteUInt32BigEndian(count.AsSpan(5), uint.MaxValue);
        Assert.Equal("query count past the end of the option", OptionPayloads.TryReadMetaContextRequest(count, out _, out _, out _, out _));
        Assert.Equal("query without a namespace",
            OptionPayloads.TryReadMetaContextRequest(MetaPayload("d", "allocation"), out _, out _, out _, out _));
    }

    [Fact]
    public void ExtentList_MergesCutsAndCaps()
    {
        var list = new ExtentList(2);
        list.Reset(100, 3);
        Assert.True(list.Add(10, ExtentFlags.None));
        Assert.True(list.Add(10, ExtentFlags.None));
        Assert.True(list.Add(10, ExtentFlags.Hole | ExtentFlags.Zero));
        Assert.Equal(2, list.Count);
        Assert.Equal(20, list.LengthAt(0));
        Assert.True(list.Add(10, ExtentFlags.Zero));
        Assert.False(list.Add(10, ExtentFlags.None)); // a fourth distinct extent does not fit
        Assert.Equal(3, list.Count);
        list.Reset(15, 10);
        Assert.False(list.Add(1000, ExtentFlags.None));
        Assert.Equal(15, list.Covered);
        Assert.Throws<ArgumentOutOfRangeException>(() => list.Add(0, ExtentFlags.None));
    }
}
