using System;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;
using NbdSharp.Protocol;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests.Server;

/// <summary>
/// The server against clients that break the protocol, on purpose or by accident: an in-process
/// <see cref="NbdServer"/> on a Unix socket, driven by a scripted raw-socket client that encodes every message with
/// the library's wire structs. One test per class of misbehaviour; each asserts the exact reply (option reply type,
/// NBD error) or that the connection is closed, and that a well-behaved NbdSharp client connected before the
/// misbehaviour still reads and writes afterwards, and that the server logged no unexpected exception. Serial: one
/// test measures the process's memory.
/// </summary>
[Collection(nameof(SerialCollection))]
public sealed class HostileClientTests
{
    private const uint DiskSize = 1 << 20;

    // ------------------------------------------------------------------ handshake

    [Theory]
    [InlineData(4u)]
    [InlineData(0x80000000u)]
    [InlineData(0xFFFFFFFFu)]
    public async Task UnknownClientFlags_CloseTheConnection(uint flags)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync(flags);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Fact]
    public async Task BadOptionMagic_ClosesTheConnection()
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        byte[] option = RawClient.Option(NbdOption.List, []);
        option[7] ^= 1; // IHAVEOPT with one bit flipped
        await c.SendAsync(option);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(0u, 0)]
    [InlineData(4u, 0)] // NBD_OPT_PEEK_EXPORT, withdrawn from the protocol
    [InlineData(12u, 9)]
    [InlineData(0x1234u, 100)]
    [InlineData(0xFFFFFFFFu, 4096)]
    public async Task UnknownOption_GetsErrUnsup_AndTheSessionContinues(uint option, int length)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.SendOptionAsync((NbdOption)option, new byte[length]);
        await c.ExpectOptionReplyAsync((NbdOption)option, OptionReplyType.ErrUnsup);
        await c.GoAsync(Mode.Simple);
        await c.AssertReadWorksAsync(h.Disk, 4096, 512);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData((uint)NbdOption.Info)]
    [InlineData((uint)NbdOption.Go)]
    [InlineData((uint)NbdOption.List)]
    [InlineData(0x1234u)]
    public async Task OptionLongerThanMaxOptionLength_GetsErrTooBig_AndTheSessionContinues(uint option)
    {
        const int Max = 8192;
        await using var h = Harness.Start(new NbdServerOptions { MaxOptionLength = Max });
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        // The payload is sent: the server must read past it to stay in sync, as the reply after it shows.
        await c.SendOptionAsync((NbdOption)option, new byte[Max + 1]);
        await c.ExpectOptionReplyAsync((NbdOption)option, OptionReplyType.ErrTooBig);
        await c.SendOptionAsync((NbdOption)option, new byte[16 * 1024 * 1024]); // the largest skipped
        await c.ExpectOptionReplyAsync((NbdOption)option, OptionReplyType.ErrTooBig);
        await c.GoAsync(Mode.Structured);
        await c.AssertReadWorksAsync(h.Disk, 0, 4096);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData((uint)NbdOption.Info, 16u * 1024 * 1024 + 1)]
    [InlineData(0x1234u, 0xFFFFFFFFu)]
    [InlineData((uint)NbdOption.ExportName, 8193u)] // EXPORT_NAME has no error reply: too long is closed
    public async Task OptionPastTheSkipLimit_IsClosedWithoutReadingIt(uint option, uint length)
    {
        await using var h = Harness.Start(new NbdServerOptions { MaxOptionLength = 8192 });
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        // Only the header: a server waiting for the payload would never close.
        var header = new byte[OptionRequestHeader.Size];
        new OptionRequestHeader((NbdOption)option, length).Write(header);
        await c.SendAsync(header);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    public static TheoryData<string, uint, byte[]> MalformedPayloads()
    {
        var data = new TheoryData<string, uint, byte[]>();
        foreach (NbdOption o in new[] { NbdOption.Info, NbdOption.Go })
        {
            string n = o.ToString();
            data.Add(n + " empty", (uint)o, []);
            data.Add(n + " shorter than a name length and a count", (uint)o, [0, 0, 0, 0, 0]);
            data.Add(n + " name longer than 4096", (uint)o, [.. Be32(4097), .. new byte[4097], 0, 0]);
            data.Add(n + " name length past the end", (uint)o, [.. Be32(10), (byte)'a', (byte)'b', 0, 0]);
            data.Add(n + " name length 2^32-1", (uint)o, [.. Be32(uint.MaxValue), 0, 0]);
            data.Add(n + " fewer requests than counted", (uint)o, [.. Be32(0), 0, 2, 0, 3]);
            data.Add(n + " more bytes than counted", (uint)o, [.. Be32(0), 0, 1, 0, 3, 0]);
            data.Add(n + " odd trailing byte", (uint)o, [.. Be32(0), 0, 0, 7]);
            data.Add(n + " name not UTF-8", (uint)o, [.. Be32(2), 0xC3, 0x28, 0, 0]);
        }
        foreach (NbdOption o in new[] { NbdOption.ListMetaContext, NbdOption.SetMetaContext })
        {
            string n = o.ToString();
            data.Add(n + " empty", (uint)o, []);
            data.Add(n + " seven bytes", (uint)o, [0, 0, 0, 0, 0, 0, 0]);
            data.Add(n + " name longer than 4096", (uint)o, [.. Be32(4097), .. new byte[4097], .. Be32(0)]);
            data.Add(n + " name length past the end", (uint)o, [.. Be32(5), (byte)'a', .. Be32(0)]);
            data.Add(n + " name not UTF-8", (uint)o, [.. Be32(1), 0xFF, .. Be32(0)]);
            data.Add(n + " query count past the end", (uint)o, [.. Be32(0), .. Be32(1)]);
            data.Add(n + " query count 2^32-1", (uint)o, [.. Be32(0), .. Be32(uint.MaxValue), .. Query("base:allocation")]);
            data.Add(n + " query length past the end", (uint)o, [.. Be32(0), .. Be32(1), .. Be32(100), .. "base:"u8]);
            data.Add(n + " query longer than 4096", (uint)o, [.. Be32(0), .. Be32(1), .. Be32(4097), .. new byte[4097]]);
            data.Add(n + " query without a namespace", (uint)o, [.. Be32(0), .. Be32(1), .. Query("allocation")]);
            data.Add(n + " empty query", (uint)o, [.. Be32(0), .. Be32(1), .. Be32(0)]);
            data.Add(n + " bytes after the last query", (uint)o, [.. Be32(0), .. Be32(1), .. Query("base:allocation"), 0]);
        }
        foreach (NbdOption o in new[] { NbdOption.List, NbdOption.StructuredReply, NbdOption.ExtendedHeaders, NbdOption.StartTls })
            data.Add(o + " with a payload", (uint)o, [0]);
        return data;
    }

    [Theory]
    [MemberData(nameof(MalformedPayloads))]
    public async Task MalformedOptionPayload_GetsErrInvalid_AndTheSessionContinues(string name, uint option, byte[] payload)
    {
        Assert.NotNull(name);
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        if ((NbdOption)option is NbdOption.ListMetaContext or NbdOption.SetMetaContext)
        {
            await c.SendOptionAsync(NbdOption.StructuredReply, []);
            await c.ExpectOptionReplyAsync(NbdOption.StructuredReply, OptionReplyType.Ack);
        }
        await c.SendOptionAsync((NbdOption)option, payload);
        await c.ExpectOptionReplyAsync((NbdOption)option, OptionReplyType.ErrInvalid);
        await c.GoAsync(Mode.Structured, meta: true);
        await c.AssertReadWorksAsync(h.Disk, 8192, 100);
        await h.FinishAsync();
    }

    [Fact]
    public async Task MetaContextBeforeStructuredReplies_GetsErrInvalid()
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.SendOptionAsync(NbdOption.SetMetaContext, RawClient.MetaContextPayload("", "base:allocation"));
        await c.ExpectOptionReplyAsync(NbdOption.SetMetaContext, OptionReplyType.ErrInvalid);
        await c.SendOptionAsync(NbdOption.ListMetaContext, RawClient.MetaContextPayload("", "base:allocation"));
        await c.ExpectOptionReplyAsync(NbdOption.ListMetaContext, OptionReplyType.ErrInvalid);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData("nope")]
    [InlineData("\u00e9t\u00e9")]
    [InlineData(null)] // not UTF-8
    public async Task ExportNameOfAnUnknownExport_ClosesTheConnection(string? name)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.SendOptionAsync(NbdOption.ExportName, name == null ? [0xC3, 0x28] : Encoding.UTF8.GetBytes(name));
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Fact]
    public async Task InfoAndGoForAnUnknownExport_GetErrUnknown_AndTheSessionContinues()
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.SendOptionAsync(NbdOption.Info, RawClient.InfoPayload("nope"));
        await c.ExpectOptionReplyAsync(NbdOption.Info, OptionReplyType.ErrUnknown);
        await c.SendOptionAsync(NbdOption.Go, RawClient.InfoPayload("nope"));
        await c.ExpectOptionReplyAsync(NbdOption.Go, OptionReplyType.ErrUnknown);
        await c.GoAsync(Mode.Simple);
        await c.AssertReadWorksAsync(h.Disk, 0, 1);
        await h.FinishAsync();
    }

    [Fact]
    public async Task StartTlsFollowedByPlaintext_ClosesTheConnection_WithoutAnAck()
    {
        var options = new NbdServerOptions
        {
            Tls = ServerTlsMode.On,
            PskKeys = new Dictionary<string, byte[]> { ["alice"] = new byte[32] },
        };
        await using var h = Harness.Start(options);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        // One send: STARTTLS and, behind it, what a man in the middle would want read as if it came over TLS.
        await c.SendAsync([.. RawClient.Option(NbdOption.StartTls, []), .. RawClient.Option(NbdOption.StructuredReply, [])]);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Fact]
    public async Task TlsRequired_RefusesEveryOptionButStartTlsAndAbort_AndClosesOnExportName()
    {
        byte[] key = Pattern(32, 77);
        var options = new NbdServerOptions { Tls = ServerTlsMode.Require, PskKeys = new Dictionary<string, byte[]> { ["alice"] = key } };
        // The well-behaved client upgrades with the same key.
        await using var h = Harness.Start(options, configure: (good, dir) =>
        {
            string psk = dir.File("keys.psk");
            File.WriteAllText(psk, "alice:" + Convert.ToHexStringLower(key) + "\n");
            good.SetTls(TlsMode.Require);
            good.SetTlsPskFile(psk);
            good.SetTlsUsername("alice");
        });
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        foreach (NbdOption option in new[] { NbdOption.List, NbdOption.StructuredReply, NbdOption.Info, NbdOption.Go, NbdOption.SetMetaContext, (NbdOption)0x1234 })
        {
            await c.SendOptionAsync(option, option is NbdOption.Info or NbdOption.Go ? RawClient.InfoPayload("") : []);
            await c.ExpectOptionReplyAsync(option, OptionReplyType.ErrTlsReqd);
        }
        await c.SendOptionAsync(NbdOption.ExportName, []);
        await c.AssertClosedAsync();
        using RawClient aborting = h.Connect();
        await aborting.HandshakeAsync();
        await aborting.SendOptionAsync(NbdOption.Abort, []);
        await aborting.ExpectOptionReplyAsync(NbdOption.Abort, OptionReplyType.Ack);
        await aborting.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HandshakeTimeout_ClosesAClientThatStallsInTheHandshake(bool threadPerConnection)
    {
        var options = new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(500), ThreadPerConnection = threadPerConnection };
        await using var h = Harness.Start(options);
        using RawClient silent = h.Connect();
        await silent.ReadGreetingAsync();
        using RawClient halfway = h.Connect();
        await halfway.HandshakeAsync();
        await halfway.SendAsync(RawClient.Option(NbdOption.Go, RawClient.InfoPayload(""))[..20]); // a header and part of the payload
        await silent.AssertClosedAsync();
        await halfway.AssertClosedAsync();
        await h.FinishAsync(); // connected before the timeout, the well-behaved client is not cut
    }

    [Fact]
    public async Task MaxConnections_RefusesTheConnectionsOverTheLimit_AndServesOnceOneLeaves()
    {
        await using var h = Harness.Start(new NbdServerOptions { MaxConnections = 3 });
        using RawClient first = h.Connect();
        await first.HandshakeAsync();
        using RawClient second = h.Connect();
        await second.ReadGreetingAsync();
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 3, "three connections");
        for (int i = 0; i < 5; i++)
        {
            using RawClient refused = h.Connect();
            await refused.AssertClosedAsync(); // not even a greeting
        }
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 3, "the refused connections gone");
        first.Dispose();
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 2, "the first raw client gone");
        using RawClient later = h.Connect();
        await later.HandshakeAsync();
        await later.GoAsync(Mode.Extended);
        await later.AssertReadWorksAsync(h.Disk, 1000, 3000);
        await h.FinishAsync();
    }

    // ------------------------------------------------------------------ transmission

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Structured)]
    [InlineData(Mode.Extended)]
    public async Task BadRequestMagic_ClosesTheConnection(Mode mode)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode);
        byte[] request = RawClient.Request(NbdCommand.Read, 1, 0, 512, mode == Mode.Extended);
        request[0] ^= 0x80;
        await c.SendAsync(request);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Structured)]
    public async Task AnExtendedHeaderWhereCompactOnesWereNegotiated_ClosesTheConnection(Mode mode)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode);
        await c.SendAsync(RawClient.Request(NbdCommand.Read, 1, 0, 512, extended: true));
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Structured)]
    [InlineData(Mode.Extended)]
    public async Task RequestsPastTheEnd_GetEinval_AndWritesPastTheEndEnospc(Mode mode)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode, meta: mode != Mode.Simple);
        var cases = new (NbdCommand Command, ulong Offset, ulong Length, uint Error)[]
        {
            (NbdCommand.Read, DiskSize - 10, 20, NbdErrors.Einval),
            (NbdCommand.Read, DiskSize, 1, NbdErrors.Einval),
            (NbdCommand.Read, DiskSize + 1, 1, NbdErrors.Einval),
            (NbdCommand.Read, ulong.MaxValue - 1, 4, NbdErrors.Einval), // offset + length wraps
            (NbdCommand.Read, 1UL << 63, 512, NbdErrors.Einval),
            (NbdCommand.Write, DiskSize - 10, 20, NbdErrors.Enospc),
            (NbdCommand.Write, ulong.MaxValue - 1, 4, NbdErrors.Enospc),
            (NbdCommand.WriteZeroes, DiskSize - 4096, 8192, NbdErrors.Enospc),
            (NbdCommand.WriteZeroes, ulong.MaxValue, 1, NbdErrors.Enospc),
            (NbdCommand.Trim, DiskSize - 4096, 8192, NbdErrors.Einval),
            (NbdCommand.Cache, DiskSize, 1, NbdErrors.Einval),
            (NbdCommand.BlockStatus, DiskSize - 1, 2, NbdErrors.Einval),
            (NbdCommand.BlockStatus, ulong.MaxValue, ulong.MaxValue, NbdErrors.Einval),
        };
        ulong cookie = 100;
        foreach ((NbdCommand command, ulong offset, ulong length, uint error) in cases)
        {
            if (mode != Mode.Extended && length > uint.MaxValue)
                continue;
            cookie++;
            bool write = command == NbdCommand.Write;
            await c.SendRequestAsync(command, cookie, offset, length, write ? new byte[length] : null);
            await c.ExpectErrorAsync(cookie, offset, error);
        }
        byte[] before = h.Disk.Snapshot();
        await c.AssertReadWorksAsync(h.Disk, DiskSize - 20, 20);
        Assert.Equal(before, h.Disk.Snapshot()); // nothing was written
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Extended)]
    public async Task UnknownCommandsAndFlags_GetEinval_AndTheSessionContinues(Mode mode)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode);
        var cases = new (NbdCommand Command, ushort Flags)[]
        {
            ((NbdCommand)8, 0), // NBD_CMD_RESIZE, not advertised
            ((NbdCommand)9, 0),
            ((NbdCommand)0x7FFF, 0),
            ((NbdCommand)0xFFFF, 0),
            (NbdCommand.Read, 1 << 6),
            (NbdCommand.Read, 0x8000),
            (NbdCommand.Flush, 1 << 7),
            (NbdCommand.Read, (ushort)CommandFlags.ReqOne), // a known flag on the wrong command
            (NbdCommand.Trim, (ushort)CommandFlags.NoHole),
            (NbdCommand.Disconnect, 0x4000), // not even a disconnect with unknown flags is obeyed
        };
        ulong cookie = 0;
        foreach ((NbdCommand command, ushort flags) in cases)
        {
            cookie++;
            ulong length = command == NbdCommand.Flush || command == NbdCommand.Disconnect ? 0UL : 512;
            await c.SendRequestAsync(command, cookie, 0, length, null, flags);
            await c.ExpectErrorAsync(cookie, 0, NbdErrors.Einval);
        }
        // A write with an unknown flag: its payload is still read, so the next request is understood.
        cookie++;
        ushort unknown = 1 << 8;
        await c.SendRequestAsync(NbdCommand.Write, cookie, 0, 512, Pattern(512, 9), unknown);
        await c.ExpectErrorAsync(cookie, 0, NbdErrors.Einval);
        Assert.NotEqual(Pattern(512, 9), h.Disk.Snapshot()[..512]);
        await c.AssertReadWorksAsync(h.Disk, 0, 512);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Structured)]
    [InlineData(Mode.Extended)]
    public async Task ZeroLengthRequests_GetEinval_AndTheSessionContinues(Mode mode)
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode, meta: mode != Mode.Simple);
        ulong cookie = 0;
        foreach (NbdCommand command in new[] { NbdCommand.Read, NbdCommand.Write, NbdCommand.Trim, NbdCommand.WriteZeroes, NbdCommand.Cache, NbdCommand.BlockStatus })
        {
            cookie++;
            await c.SendRequestAsync(command, cookie, 4096, 0, command == NbdCommand.Write ? [] : null);
            await c.ExpectErrorAsync(cookie, 4096, NbdErrors.Einval);
        }
        await c.AssertReadWorksAsync(h.Disk, 4096, 4096);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple)]
    [InlineData(Mode.Extended)]
    public async Task WriteLongerThanTheMaximum_UpTo32MiB_IsReadAndFailsWithEinval(Mode mode)
    {
        var disk = new DiskExport(DiskSize, new ExportBlockSize(1, 4096, 64 * 1024));
        await using var h = Harness.Start(disk: disk);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode);
        await c.SendRequestAsync(NbdCommand.Write, 1, 0, 64 * 1024 + 1, Pattern(64 * 1024 + 1, 1));
        await c.ExpectErrorAsync(1, 0, NbdErrors.Einval);
        // The protocol's limit on what is still no attack: 32 MiB, past the export's end too.
        await c.SendRequestAsync(NbdCommand.Write, 2, 0, 32 * 1024 * 1024, Pattern(32 * 1024 * 1024, 2));
        await c.ExpectErrorAsync(2, 0, NbdErrors.Einval);
        // A read longer than the maximum: nothing follows it, and it fails the same way.
        await c.SendRequestAsync(NbdCommand.Read, 3, 0, 64 * 1024 + 1);
        await c.ExpectErrorAsync(3, 0, NbdErrors.Einval);
        await c.AssertReadWorksAsync(h.Disk, 0, 64 * 1024);
        Assert.Equal(0, h.Disk.Writes);
        await h.FinishAsync();
    }

    [Theory]
    [InlineData(Mode.Simple, 32UL * 1024 * 1024 + 1)]
    [InlineData(Mode.Simple, 0xFFFFFFFFUL)]
    [InlineData(Mode.Extended, 32UL * 1024 * 1024 + 1)]
    [InlineData(Mode.Extended, 1UL << 40)]
    public async Task WriteLongerThan32MiB_ClosesTheConnection_WithoutReadingIt(Mode mode, ulong length)
    {
        var disk = new DiskExport(DiskSize, new ExportBlockSize(1, 4096, 64 * 1024));
        await using var h = Harness.Start(disk: disk);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(mode);
        // Only the header: a server that tried to read the payload would wait forever.
        await c.SendAsync(RawClient.Request(NbdCommand.Write, 1, 0, length, mode == Mode.Extended,
            mode == Mode.Extended ? (ushort)CommandFlags.PayloadLen : (ushort)0));
        await c.AssertClosedAsync();
        Assert.Equal(0, h.Disk.Writes);
        await h.FinishAsync();
    }

    [Fact]
    public async Task ExtendedWriteWithoutPayloadLen_ClosesTheConnection()
    {
        await using var h = Harness.Start();
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Extended);
        // Whether 512 bytes follow cannot be known: the server must not guess.
        await c.SendAsync([.. RawClient.Request(NbdCommand.Write, 1, 0, 512, extended: true), .. new byte[512]]);
        await c.AssertClosedAsync();
        Assert.Equal(0, h.Disk.Writes);
        await h.FinishAsync();
    }

    [Fact]
    public async Task ExtendedPayloadLenOnACommandWithoutPayload_IsReadAndEinval_OrClosedPastTheMaximum()
    {
        var disk = new DiskExport(DiskSize, new ExportBlockSize(1, 4096, 64 * 1024));
        await using var h = Harness.Start(disk: disk);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Extended);
        await c.SendRequestAsync(NbdCommand.Read, 1, 0, 512, new byte[512], (ushort)CommandFlags.PayloadLen);
        await c.ExpectErrorAsync(1, 0, NbdErrors.Einval);
        await c.AssertReadWorksAsync(h.Disk, 0, 512);
        await c.SendAsync(RawClient.Request(NbdCommand.Trim, 2, 0, 64 * 1024 + 1, extended: true, (ushort)CommandFlags.PayloadLen));
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    /// <summary>
    /// A client that sends 10,000 reads of 64 KiB (625 MiB of replies) and reads no reply: the server must stop reading
    /// once MaxRequestsInFlight or MaxBytesInFlight is reached and unread replies fill the socket, not queue the replies
    /// in memory. Then every reply must arrive exactly once, with its cookie and the right data.
    /// </summary>
    [Theory]
    [InlineData(64, 64L * 1024 * 1024, true, true)] // the request limit binds (64 x 64 KiB)
    [InlineData(1 << 20, 1L * 1024 * 1024, true, true)] // the byte limit binds (16 x 64 KiB)
    [InlineData(64, 64L * 1024 * 1024, false, true)] // an export that completes at once: replies go through the reader's cork
    [InlineData(64, 64L * 1024 * 1024, true, false)] // asynchronous sockets on the thread pool
    public async Task ThousandsOfRequestsWithoutReadingReplies_StayBounded_AndEveryReplyArrivesOnce(int maxRequests, long maxBytes,
        bool asyncReads, bool threadPerConnection)
    {
        const int Count = 10_000;
        const int Length = 64 * 1024;
        const int Regions = (int)(DiskSize / Length);
        var disk = new DiskExport(DiskSize) { AsyncReads = asyncReads };
        var options = new NbdServerOptions
        {
            MaxRequestsInFlight = maxRequests,
            MaxBytesInFlight = maxBytes,
            ThreadPerConnection = threadPerConnection,
        };
        await using var h = Harness.Start(options, disk);
        int limit = (int)Math.Min(maxRequests, Math.Max(1, maxBytes / Length));
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Simple);
        byte[] contents = h.Disk.Snapshot();
        var requests = new byte[Count * RequestHeader.CompactSize];
        for (int i = 0; i < Count; i++)
        {
            new RequestHeader(0, NbdCommand.Read, (ulong)i + 1, (ulong)(i % Regions) * Length, Length)
                .Write(requests.AsSpan(i * RequestHeader.CompactSize), extended: false);
        }

        (long heapBefore, long workingSetBefore) = Memory();
        Task sending = c.SendAsync(requests, TimeSpan.FromMinutes(2));
        // The server carries out requests until its unread replies fill the socket and the limits are reached; then
        // nothing moves until the client reads.
        await Harness.WaitUntilQuiescentAsync(() => disk.Reads, TimeSpan.FromMilliseconds(500));
        int executed = disk.Reads;
        (long heapStalled, long workingSetStalled) = Memory();
        long heapGrowth = heapStalled - heapBefore, workingSetGrowth = workingSetStalled - workingSetBefore;
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"limits {maxRequests} requests / {maxBytes} bytes, async reads {asyncReads}, thread per connection {threadPerConnection}: " +
            $"{executed} of {Count} reads carried out " +
            $"before the server stopped; managed heap +{heapGrowth / 1024} KiB, working set +{workingSetGrowth / 1024} KiB");
        // What the limits let the server hold, plus the replies the socket's buffer takes (Linux reports and allows
        // twice the 1 MiB the server asks for a Unix connection); with an export that completes at once, the reader
        // itself blocks sending its corked replies long before the limit.
        int socketTakes = 2 * NbdSharp.Transport.SocketTransport.UnixSendBuffer / Length;
        Assert.InRange(executed, asyncReads ? limit : 1, limit + socketTakes + 16);
        // The requests held (at most MaxBytesInFlight of reply buffers) and some slack for the thread pool and the
        // array pool's caches: 625 MiB of replies must not be queued.
        long bound = Math.Min(maxBytes, (long)limit * Length) + (24L * 1024 * 1024);
        Assert.True(heapGrowth < bound, $"the managed heap grew by {heapGrowth} bytes while replies were unread");
        Assert.True(workingSetGrowth < bound + (40L * 1024 * 1024), $"the working set grew by {workingSetGrowth} bytes while replies were unread");

        var seen = new bool[Count];
        var header = new byte[SimpleReplyHeader.Size];
        var data = new byte[Length];
        for (int n = 0; n < Count; n++)
        {
            await c.ReadExactlyAsync(header);
            Assert.True(SimpleReplyHeader.TryRead(header, out SimpleReplyHeader reply), "not a simple reply");
            Assert.Equal(NbdErrors.Success, reply.Error);
            Assert.InRange(reply.Cookie, 1UL, (ulong)Count);
            int i = (int)reply.Cookie - 1;
            Assert.False(seen[i], $"a second reply to cookie {reply.Cookie}");
            seen[i] = true;
            await c.ReadExactlyAsync(data);
            Assert.True(data.AsSpan().SequenceEqual(contents.AsSpan(i % Regions * Length, Length)), $"wrong data for cookie {reply.Cookie}");
        }
        await sending.WaitAsync(Harness.Deadline, TestContext.Current.CancellationToken);
        Assert.Equal(Count, disk.Reads);
        await c.SendRequestAsync(NbdCommand.Disconnect, 0, 0, 0);
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    /// <summary>
    /// For every prefix of a well-formed session's client bytes (handshake with structured replies or extended
    /// headers, a context, GO, a write, reads, block status, flush, trim, zero, disconnect), a client sends that prefix
    /// and goes: half-closed (the server sees end of stream at that byte and must close) or closed outright. The server
    /// must stay up, leak no connection, log no unexpected exception, and keep serving the well-behaved client.
    /// </summary>
    [Theory]
    [InlineData(Mode.Structured, true)]
    [InlineData(Mode.Extended, true)]
    [InlineData(Mode.Structured, false)]
    public async Task DisconnectAtEveryByte_OfAScriptedSession_LeavesTheServerServing(Mode mode, bool threadPerConnection)
    {
        await using var h = Harness.Start(new NbdServerOptions { ThreadPerConnection = threadPerConnection });
        byte[] script = RawClient.Session(mode);
        TestContext.Current.TestOutputHelper?.WriteLine($"{mode}: {script.Length} bytes, {2 * (script.Length + 1)} connections");
        for (int prefix = 0; prefix <= script.Length; prefix++)
        {
            foreach (bool halfClose in new[] { true, false })
            {
                using RawClient c = h.Connect();
                if (prefix > 0)
                    await c.SendAsync(script.AsMemory(0, prefix));
                if (halfClose)
                {
                    c.Socket.Shutdown(SocketShutdown.Send);
                    await c.DrainUntilClosedAsync();
                }
            }
        }
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 1, "every scripted connection gone");
        // The whole script, as a check that it is a well-formed session that the server serves to the end.
        using (RawClient whole = h.Connect())
        {
            await whole.SendAsync(script);
            await whole.DrainUntilClosedAsync();
        }
        Assert.Equal(Pattern(64, 5), h.Disk.Snapshot()[4096..(4096 + 64)]);
        await h.FinishAsync();
        h.CloseGoodClient();
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 0, "no connection left");
    }

    /// <summary>
    /// What an idle client costs the server: 200 clients that negotiate and then send nothing. Each holds its input
    /// buffer and its reply cork (and a thread, by default); the figure goes to the test output.
    /// </summary>
    [Fact]
    public async Task IdleClientsInTransmission_CostABoundedAmountEach()
    {
        const int Clients = 200;
        await using var h = Harness.Start();
        (long heapBefore, _) = Memory();
        var clients = new List<RawClient>();
        try
        {
            for (int i = 0; i < Clients; i++)
            {
                RawClient c = h.Connect();
                clients.Add(c);
                await c.HandshakeAsync();
                await c.GoAsync(Mode.Structured);
            }
            (long heapAfter, _) = Memory();
            long each = (heapAfter - heapBefore) / Clients;
            TestContext.Current.TestOutputHelper?.WriteLine($"{Clients} idle clients in transmission: {each / 1024} KiB of managed heap each");
            Assert.True(each < 512 * 1024, $"{each} bytes per idle client");
            await clients[^1].AssertReadWorksAsync(h.Disk, 0, 4096);
        }
        finally
        {
            foreach (RawClient c in clients)
                c.Dispose();
        }
        await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 1, "the idle clients gone");
        await h.FinishAsync();
    }

    // ------------------------------------------------------------------ found bugs
    // Each reproduces a server bug reported to the server's authors; the skipped rows fail until it is fixed.

    /// <summary>
    /// A client that floods options and never reads their replies: once the server's replies fill the socket its
    /// handshake blocks in send(), where HandshakeTimeout (which only shuts the receive side of a thread-per-connection
    /// socket) never reaches it. The connection should be cut at the timeout; it is held until the client goes.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HandshakeTimeout_CutsAClientThatNeverReadsItsOptionReplies(bool threadPerConnection)
    {
        var options = new NbdServerOptions { HandshakeTimeout = TimeSpan.FromSeconds(1), ThreadPerConnection = threadPerConnection };
        await using var h = Harness.Start(options);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        const int Options = 100_000; // 1.6 MB of options, 3.4 MB of unread ERR_UNSUP replies
        var flood = new byte[Options * OptionRequestHeader.Size];
        for (int i = 0; i < Options; i++)
            new OptionRequestHeader((NbdOption)0x1234, 0).Write(flood.AsSpan(i * OptionRequestHeader.Size));
        Task sending = c.SendAsync(flood, TimeSpan.FromMinutes(2));
        try
        {
            await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 1, "the handshake timeout to cut the flooding client");
        }
        finally
        {
            c.Dispose();
            await Harness.WaitUntilAsync(() => h.Server.ConnectionCount == 1, "the flooding client gone");
            await Task.WhenAny(sending);
        }
        await h.FinishAsync();
    }

    /// <summary>
    /// StopAsync with a cancellation token promises to cut the connections still open when the token fires. A client
    /// that stops reading replies leaves requests in flight whose replies cannot be sent; with a thread per connection
    /// the reply's blocking send() ignores the abort token, so the stop never completes.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task StopWithAnAbortToken_CutsAClientThatNeverReadsReplies(bool threadPerConnection)
    {
        var options = new NbdServerOptions { ThreadPerConnection = threadPerConnection };
        var disk = new DiskExport(DiskSize) { AsyncReads = true };
        await using var h = Harness.Start(options, disk);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Simple);
        const int Count = 1000;
        var requests = new byte[Count * RequestHeader.CompactSize];
        for (int i = 0; i < Count; i++)
            new RequestHeader(0, NbdCommand.Read, (ulong)i + 1, 0, 64 * 1024).Write(requests.AsSpan(i * RequestHeader.CompactSize), false);
        Task sending = c.SendAsync(requests, TimeSpan.FromMinutes(2));
        await Harness.WaitUntilQuiescentAsync(() => disk.Reads, TimeSpan.FromMilliseconds(300));
        h.CloseGoodClient();
        using var abort = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        Task stop = h.Server.StopAsync(abort.Token);
        try
        {
            await stop.WaitAsync(TimeSpan.FromSeconds(15), TestContext.Current.CancellationToken);
        }
        finally
        {
            c.Dispose();
            await Task.WhenAny(sending);
        }
    }

    /// <summary>
    /// proto.md lets a server advertise a maximum payload of 0xffffffff ("no fixed limit"), and ExportBlockSize accepts
    /// it. The server then trusts a client's write length up to 4 GiB: a 2 GiB write header makes the reader rent
    /// <c>(int)payload</c> bytes, a negative size, and the ArgumentOutOfRangeException escapes the transmission loop
    /// (logged as an unexpected failure, the budget and the in-flight count leaked); a read just under 2 GiB makes it
    /// allocate 2 GiB for one request. Such lengths should get an error (or a hard disconnect) before any allocation.
    /// </summary>
    [Fact]
    public async Task AnExportWithoutAMaximumPayload_DoesNotLetAClientSizeTheServersBuffers()
    {
        await using var h = Harness.Start();
        using var huge = new HugeExport();
        h.Server.AddExport("huge", huge);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Simple, name: "huge", size: (ulong)HugeExport.TheSize);
        // A valid write by the advertised limits; only the header is sent: past 32 MiB the answer is a hard disconnect.
        await c.SendAsync(RawClient.Request(NbdCommand.Write, 1, 0, 0x80000000UL, extended: false));
        await c.AssertClosedAsync();
        await h.FinishAsync();
    }

    /// <summary>
    /// Block status replies are not counted in MaxBytesInFlight (a request carries no payload), but each can be up to
    /// MaxExtentsPerReply descriptors (1 MiB with extended headers) plus the extent list behind it. A client that sends
    /// block status requests over a fragmented export and reads no reply makes the server hold MaxRequestsInFlight of
    /// them, whatever MaxBytesInFlight says.
    /// </summary>
    [Fact]
    public async Task UnreadBlockStatusReplies_AreBoundedByMaxBytesInFlight()
    {
        const int Count = 1000;
        const long MaxBytes = 1024 * 1024;
        await using var h = Harness.Start(new NbdServerOptions { MaxBytesInFlight = MaxBytes });
        using var fragmented = new FragmentedExport();
        h.Server.AddExport("fragmented", fragmented);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Extended, meta: true, name: "fragmented", size: (ulong)FragmentedExport.TheSize);
        var requests = new byte[Count * RequestHeader.ExtendedSize];
        for (int i = 0; i < Count; i++)
        {
            new RequestHeader(0, NbdCommand.BlockStatus, (ulong)i + 1, 0, 32 * 1024 * 1024)
                .Write(requests.AsSpan(i * RequestHeader.ExtendedSize), extended: true);
        }
        (long heapBefore, _) = Memory();
        Task sending = c.SendAsync(requests, TimeSpan.FromMinutes(2));
        await Harness.WaitUntilQuiescentAsync(() => fragmented.Calls, TimeSpan.FromMilliseconds(500));
        (long heapStalled, _) = Memory();
        long growth = heapStalled - heapBefore;
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"{fragmented.Calls} block status requests carried out before the server stopped; managed heap +{growth / 1024} KiB");
        try
        {
            Assert.True(growth < MaxBytes + (24L * 1024 * 1024), $"the heap grew by {growth} bytes with MaxBytesInFlight {MaxBytes}");
        }
        finally
        {
            c.Dispose();
            await Task.WhenAny(sending);
        }
    }

    /// <summary>
    /// An export without ZeroAsync gets write-zeroes as writes of zero bytes; those should respect the maximum payload
    /// the export advertised, as the clients' writes must. A client's 1 MiB write-zeroes (an effect length, allowed past
    /// the maximum) reaches an export with a 64 KiB maximum as one 1 MiB WriteAsync.
    /// </summary>
    [Fact]
    public async Task WriteZeroesOnAnExportWithoutZero_WritesNoMoreThanTheMaximumPayloadAtOnce()
    {
        var disk = new DiskExport(DiskSize, new ExportBlockSize(1, 4096, 64 * 1024)) { ZeroByWriting = true };
        await using var h = Harness.Start(disk: disk);
        using RawClient c = h.Connect();
        await c.HandshakeAsync();
        await c.GoAsync(Mode.Simple);
        await c.SendRequestAsync(NbdCommand.WriteZeroes, 1, 0, DiskSize);
        byte[] reply = await c.ReadAsync(SimpleReplyHeader.Size);
        Assert.True(SimpleReplyHeader.TryRead(reply, out SimpleReplyHeader header) && header.Error == 0);
        Assert.True(disk.Snapshot().AsSpan().IndexOfAnyExcept((byte)0) < 0);
        Assert.True(disk.LongestWrite <= 64 * 1024, $"a write of {disk.LongestWrite} bytes reached the export");
        await h.FinishAsync();
    }

    /// <summary>A 1 GiB disk of zeroes whose allocation alternates every 512 bytes; extents are computed on the thread pool.</summary>
    private sealed class FragmentedExport : NbdExport
    {
        public const long TheSize = 1L << 30;
        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        public override long Size => TheSize;

        public override bool CanExtents => true;

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            buffer.Span.Clear();
            return ValueTask.CompletedTask;
        }

        public override async ValueTask GetExtentsAsync(long offset, long length, ExtentList extents, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(extents);
            Interlocked.Increment(ref _calls);
            await Task.Yield();
            for (long at = offset; extents.Add(512, (at / 512 % 2) == 0 ? ExtentFlags.None : ExtentFlags.Hole | ExtentFlags.Zero); at += 512)
            {
            }
        }
    }

    // ------------------------------------------------------------------ helpers

    private static (long Heap, long WorkingSet) Memory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using Process self = Process.GetCurrentProcess();
        self.Refresh();
        return (GC.GetTotalMemory(forceFullCollection: true), self.WorkingSet64);
    }

    internal static byte[] Be32(uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        return bytes;
    }

    private static byte[] Query(string query) => [.. Be32((uint)Encoding.UTF8.GetByteCount(query)), .. Encoding.UTF8.GetBytes(query)];

    internal static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>How replies are framed after the handshake.</summary>
    public enum Mode
    {
        /// <summary>Simple replies.</summary>
        Simple,

        /// <summary>Structured replies.</summary>
        Structured,

        /// <summary>Extended headers.</summary>
        Extended,
    }

    /// <summary>
    /// An NbdServer serving one <see cref="DiskExport"/> as the default export on a Unix socket in a private folder, with
    /// an NbdSharp client connected before the test misbehaves.
    /// </summary>
    private sealed class Harness : IAsyncDisposable
    {
        public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

        private readonly TempDirectory _dir = new();
        private NbdHandle? _good;
        private int _goodRound;

        private Harness(NbdServerOptions? options, DiskExport? disk)
        {
            Disk = disk ?? new DiskExport(DiskSize);
            Server = new NbdServer(options, Log);
            Socket = _dir.File("nbd.sock");
        }

        public NbdServer Server { get; }

        public DiskExport Disk { get; }

        public string Socket { get; }

        public RecordingLogger Log { get; } = new();

        public static Harness Start(NbdServerOptions? options = null, DiskExport? disk = null,
            Action<NbdHandle, TempDirectory>? configure = null)
        {
            var h = new Harness(options, disk);
            try
            {
                h.Server.AddExport("", h.Disk, "the disk");
                h.Server.ListenUnix(h.Socket);
                var good = new NbdHandle();
                h._good = good;
                configure?.Invoke(good, h._dir);
                Within(() => good.ConnectUnix(h.Socket));
            }
            catch
            {
                h.DisposeAsync().AsTask().GetAwaiter().GetResult();
                throw;
            }
            return h;
        }

        public RawClient Connect() => new(Socket);

        /// <summary>The well-behaved client still writes and reads back; the server logged no unexpected exception.</summary>
        public async Task FinishAsync()
        {
            NbdHandle good = _good ?? throw new InvalidOperationException("the good client was closed");
            byte[] data = Pattern(4096, 1000 + _goodRound);
            ulong offset = DiskSize - 4096 - (ulong)(_goodRound++ * 4096);
            var back = new byte[data.Length];
            await Task.Factory.StartNew(() =>
            {
                good.Pwrite(data, offset);
                good.Pread(back, offset);
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).WaitAsync(Deadline, TestContext.Current.CancellationToken);
            Assert.Equal(data, back);
            Assert.Equal(data, Disk.Snapshot()[(int)offset..((int)offset + 4096)]);
            Assert.Empty(Log.Failures);
        }

        public void CloseGoodClient()
        {
            _good?.Dispose();
            _good = null;
        }

        public async ValueTask DisposeAsync()
        {
            CloseGoodClient();
            using var abort = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await Server.StopAsync(abort.Token).WaitAsync(Deadline, CancellationToken.None);
            }
            finally
            {
                _dir.Dispose();
            }
        }

        private static void Within(Action action)
        {
            Task task = Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            if (!task.Wait(Deadline))
                throw new TimeoutException("the call did not complete within " + Deadline);
            task.GetAwaiter().GetResult();
        }

        /// <summary>Waits for <paramref name="condition"/>, failing the test after <see cref="Deadline"/>.</summary>
        public static async Task WaitUntilAsync(Func<bool> condition, string what)
        {
            var clock = Stopwatch.StartNew();
            while (!condition())
            {
                if (clock.Elapsed > Deadline)
                    throw new TimeoutException("waited " + Deadline + " for " + what);
                await Task.Delay(5, TestContext.Current.CancellationToken);
            }
        }

        /// <summary>
        /// Waits until <paramref name="progress"/> has stopped changing for <paramref name="still"/>: the server has
        /// stopped making progress for a client that does not read. Fails after <see cref="Deadline"/>.
        /// </summary>
        public static async Task WaitUntilQuiescentAsync(Func<int> progress, TimeSpan still)
        {
            var clock = Stopwatch.StartNew();
            int last = progress();
            TimeSpan changed = clock.Elapsed;
            while (clock.Elapsed - changed < still)
            {
                if (clock.Elapsed > Deadline)
                    throw new TimeoutException("the server was still making progress after " + Deadline);
                await Task.Delay(20, TestContext.Current.CancellationToken);
                int now = progress();
                if (now != last)
                {
                    last = now;
                    changed = clock.Elapsed;
                }
            }
        }
    }

    /// <summary>The server's log; a warning with an exception is an unexpected failure (ServerLog.Failed).</summary>
    private sealed class RecordingLogger : ILogger
    {
        public ConcurrentQueue<string> Lines { get; } = new();

        public ConcurrentQueue<string> Failures { get; } = new();

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            string line = formatter(state, exception);
            Lines.Enqueue(line);
            if (exception != null)
                Failures.Enqueue(line + ": " + exception);
        }
    }

    /// <summary>
    /// A byte array as a disk: every capability on, optional asynchronous reads (completed on the thread pool, so that
    /// requests stay in flight), counters of the calls.
    /// </summary>
    private sealed class DiskExport : NbdExport
    {
        private readonly byte[] _data;
        private readonly ExportBlockSize _blockSize;
        private int _reads;
        private int _writes;
        private int _longestWrite;

        public DiskExport(uint size, ExportBlockSize? blockSize = null)
        {
            _data = Pattern((int)size, 42);
            _blockSize = blockSize ?? ExportBlockSize.Default;
        }

        public bool AsyncReads { get; init; }

        /// <summary>No ZeroAsync: the server writes zero bytes instead.</summary>
        public bool ZeroByWriting { get; init; }

        public int LongestWrite => Volatile.Read(ref _longestWrite);

        public int Reads => Volatile.Read(ref _reads);

        public int Writes => Volatile.Read(ref _writes);

        public override long Size => _data.Length;

        public override bool CanFlush => true;

        public override bool CanFua => true;

        public override bool CanTrim => true;

        public override bool CanZero => !ZeroByWriting;

        public override bool CanCache => true;

        public override bool CanMultiConn => true;

        public override ExportBlockSize BlockSize => _blockSize;

        public byte[] Snapshot()
        {
            lock (_data)
                return (byte[])_data.Clone();
        }

        public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _reads);
            if (AsyncReads)
                await Task.Yield();
            lock (_data)
                _data.AsSpan((int)offset, buffer.Length).CopyTo(buffer.Span);
        }

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _writes);
            lock (_data)
            {
                _longestWrite = Math.Max(_longestWrite, data.Length);
                data.Span.CopyTo(_data.AsSpan((int)offset));
            }
            return ValueTask.CompletedTask;
        }

        public override ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) =>
            ZeroAsync(offset, length, true, false, fua, cancellationToken);

        public override ValueTask ZeroAsync(long offset, long length, bool mayTrim, bool fast, bool fua, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _writes);
            lock (_data)
                _data.AsSpan((int)offset, (int)length).Clear();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A 4 GiB disk of zeroes that swallows writes and advertises no maximum payload (0xffffffff).</summary>
    private sealed class HugeExport : NbdExport
    {
        public const long TheSize = 1L << 32;

        public override long Size => TheSize;

        public override ExportBlockSize BlockSize => new(1, 4096, uint.MaxValue);

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            buffer.Span.Clear();
            return ValueTask.CompletedTask;
        }

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;
    }

    /// <summary>A client that sends exactly the bytes a test scripts, and checks exactly the bytes that come back.</summary>
    private sealed class RawClient : IDisposable
    {
        private readonly byte[] _one = new byte[4096];

        public RawClient(string path)
        {
            Socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Socket.Connect(new UnixDomainSocketEndPoint(path));
        }

        public Socket Socket { get; }

        public Mode Mode { get; private set; }

        private bool Extended => Mode == Mode.Extended;

        public void Dispose() => Socket.Dispose();

        public Task SendAsync(ReadOnlyMemory<byte> data) => SendAsync(data, Harness.Deadline);

        public Task SendAsync(byte[] data) => SendAsync(data.AsMemory(), Harness.Deadline);

        public async Task SendAsync(ReadOnlyMemory<byte> data, TimeSpan deadline)
        {
            using var timeout = new CancellationTokenSource(deadline);
            while (!data.IsEmpty)
            {
                int n = await Socket.SendAsync(data, SocketFlags.None, timeout.Token);
                data = data[n..];
            }
        }

        public async Task ReadExactlyAsync(Memory<byte> buffer)
        {
            using var timeout = new CancellationTokenSource(Harness.Deadline);
            int done = 0;
            while (done < buffer.Length)
            {
                int n;
                try
                {
                    n = await Socket.ReceiveAsync(buffer[done..], SocketFlags.None, timeout.Token);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException($"no reply within {Harness.Deadline} ({done} of {buffer.Length} bytes)");
                }
                if (n == 0)
                    throw new EndOfStreamException($"the server closed the connection ({done} of {buffer.Length} bytes)");
                done += n;
            }
        }

        public async Task<byte[]> ReadAsync(int count)
        {
            var buffer = new byte[count];
            await ReadExactlyAsync(buffer);
            return buffer;
        }

        /// <summary>The server closes the connection without sending another byte.</summary>
        public async Task AssertClosedAsync()
        {
            using var timeout = new CancellationTokenSource(Harness.Deadline);
            int n;
            try
            {
                n = await Socket.ReceiveAsync(_one, SocketFlags.None, timeout.Token);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                return; // closed with bytes of ours unread
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException("the server did not close the connection within " + Harness.Deadline);
            }
            Assert.True(n == 0, $"the server sent {n} more bytes instead of closing: {Convert.ToHexString(_one, 0, Math.Min(n, 64))}");
        }

        /// <summary>Reads and drops whatever comes until the server closes the connection.</summary>
        public async Task DrainUntilClosedAsync()
        {
            using var timeout = new CancellationTokenSource(Harness.Deadline);
            try
            {
                while (await Socket.ReceiveAsync(_one, SocketFlags.None, timeout.Token) > 0)
                {
                }
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException("the server did not close the connection within " + Harness.Deadline);
            }
        }

        public async Task ReadGreetingAsync()
        {
            byte[] greeting = await ReadAsync(18);
            var expected = new byte[18];
            new Greeting(NbdMagic.Greeting, NbdMagic.IHaveOpt).Write(expected);
            BinaryPrimitives.WriteUInt16BigEndian(expected.AsSpan(16), (ushort)(GlobalFlags.FixedNewstyle | GlobalFlags.NoZeroes));
            Assert.Equal(expected, greeting);
        }

        /// <summary>Reads the greeting and answers with <paramref name="flags"/> (FIXED_NEWSTYLE | NO_ZEROES by default).</summary>
        public async Task HandshakeAsync(uint flags = 3)
        {
            await ReadGreetingAsync();
            await SendAsync(Be32(flags));
        }

        public static byte[] Option(NbdOption option, ReadOnlySpan<byte> payload)
        {
            var bytes = new byte[OptionRequestHeader.Size + payload.Length];
            new OptionRequestHeader(option, (uint)payload.Length).Write(bytes);
            payload.CopyTo(bytes.AsSpan(OptionRequestHeader.Size));
            return bytes;
        }

        public Task SendOptionAsync(NbdOption option, ReadOnlySpan<byte> payload) => SendAsync(Option(option, payload));

        public static byte[] InfoPayload(string name, params NbdInfoType[] requests)
        {
            byte[] n = Encoding.UTF8.GetBytes(name);
            var bytes = new byte[4 + n.Length + 2 + (2 * requests.Length)];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)n.Length);
            n.CopyTo(bytes, 4);
            BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(4 + n.Length), (ushort)requests.Length);
            for (int i = 0; i < requests.Length; i++)
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(6 + n.Length + (2 * i)), (ushort)requests[i]);
            return bytes;
        }

        public static byte[] MetaContextPayload(string name, params string[] queries)
        {
            var bytes = new List<byte>();
            bytes.AddRange(Be32((uint)Encoding.UTF8.GetByteCount(name)));
            bytes.AddRange(Encoding.UTF8.GetBytes(name));
            bytes.AddRange(Be32((uint)queries.Length));
            foreach (string query in queries)
                bytes.AddRange(Query(query));
            return [.. bytes];
        }

        /// <summary>
        /// Reads one option reply and checks its header byte for byte: the reply magic, <paramref name="option"/>
        /// echoed, <paramref name="type"/>; returns the payload (an error's message must be UTF-8).
        /// </summary>
        public async Task<byte[]> ExpectOptionReplyAsync(NbdOption option, OptionReplyType type)
        {
            byte[] header = await ReadAsync(OptionReplyHeader.Size);
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
            var expected = new byte[OptionReplyHeader.Size];
            new OptionReplyHeader(option, type, length).Write(expected);
            Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(header));
            Assert.True(length <= 64 * 1024, $"option reply of {length} bytes");
            byte[] payload = await ReadAsync((int)length);
            if (((uint)type & NbdProtocol.OptionReplyErrorBit) != 0)
                _ = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(payload);
            return payload;
        }

        /// <summary>Negotiates <paramref name="mode"/> (and base:allocation), then GO on export <paramref name="name"/>.</summary>
        public async Task GoAsync(Mode mode, bool meta = false, string name = "", ulong size = DiskSize)
        {
            if (mode == Mode.Extended)
            {
                await SendOptionAsync(NbdOption.ExtendedHeaders, []);
                await ExpectOptionReplyAsync(NbdOption.ExtendedHeaders, OptionReplyType.Ack);
            }
            else if (mode == Mode.Structured)
            {
                await SendOptionAsync(NbdOption.StructuredReply, []);
                await ExpectOptionReplyAsync(NbdOption.StructuredReply, OptionReplyType.Ack);
            }
            if (meta)
            {
                await SendOptionAsync(NbdOption.SetMetaContext, MetaContextPayload(name, "base:allocation"));
                byte[] context = await ExpectOptionReplyAsync(NbdOption.SetMetaContext, OptionReplyType.MetaContext);
                Assert.Equal([.. Be32(1), .. "base:allocation"u8], context);
                await ExpectOptionReplyAsync(NbdOption.SetMetaContext, OptionReplyType.Ack);
            }
            await SendOptionAsync(NbdOption.Go, InfoPayload(name, NbdInfoType.BlockSize));
            byte[] info = await ExpectOptionReplyAsync(NbdOption.Go, OptionReplyType.Info);
            Assert.Equal(NbdInfoExport.Size, info.Length);
            Assert.Equal(size, NbdInfoExport.Read(info).ExportSize);
            while (true)
            {
                byte[] header = await ReadAsync(OptionReplyHeader.Size);
                Assert.True(OptionReplyHeader.TryRead(header, out OptionReplyHeader reply));
                Assert.Equal(NbdOption.Go, reply.Option);
                _ = await ReadAsync((int)reply.Length);
                if (reply.Type == OptionReplyType.Ack)
                    break;
                Assert.Equal(OptionReplyType.Info, reply.Type);
            }
            Mode = mode;
        }

        public static byte[] Request(NbdCommand command, ulong cookie, ulong offset, ulong length, bool extended, ushort flags = 0)
        {
            var bytes = new byte[extended ? RequestHeader.ExtendedSize : RequestHeader.CompactSize];
            new RequestHeader(flags, command, cookie, offset, extended ? length : length & uint.MaxValue).Write(bytes, extended);
            return bytes;
        }

        /// <summary>
        /// Sends a request in the negotiated framing; with <paramref name="payload"/>, its bytes follow (and in
        /// extended mode a write carries PAYLOAD_LEN).
        /// </summary>
        public Task SendRequestAsync(NbdCommand command, ulong cookie, ulong offset, ulong length, byte[]? payload = null, ushort flags = 0)
        {
            if (Extended && command == NbdCommand.Write)
                flags |= (ushort)CommandFlags.PayloadLen;
            return SendAsync([.. Request(command, cookie, offset, length, Extended, flags), .. payload ?? []]);
        }

        /// <summary>The reply to <paramref name="cookie"/> is the error <paramref name="error"/>, in the negotiated framing.</summary>
        public async Task ExpectErrorAsync(ulong cookie, ulong offset, uint error)
        {
            if (Mode == Mode.Simple)
            {
                byte[] reply = await ReadAsync(SimpleReplyHeader.Size);
                var expected = new byte[SimpleReplyHeader.Size];
                new SimpleReplyHeader(error, cookie).Write(expected);
                Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(reply));
                return;
            }
            int size = Extended ? ExtendedReplyHeader.Size : StructuredReplyHeader.Size;
            byte[] header = await ReadAsync(size);
            ulong length = Extended ? BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(24)) : BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
            Assert.InRange(length, (ulong)ErrorChunkPrefix.Size, 4096UL);
            byte[] payload = await ReadAsync((int)length);
            var expectedHeader = new byte[size];
            if (Extended)
                new ExtendedReplyHeader(NbdProtocol.ReplyFlagDone, (ushort)ChunkType.Error, cookie, offset, length).Write(expectedHeader);
            else
                new StructuredReplyHeader(NbdProtocol.ReplyFlagDone, (ushort)ChunkType.Error, cookie, (uint)length).Write(expectedHeader);
            Assert.Equal(Convert.ToHexString(expectedHeader), Convert.ToHexString(header));
            var prefix = new byte[ErrorChunkPrefix.Size];
            new ErrorChunkPrefix(error, (ushort)(length - ErrorChunkPrefix.Size)).Write(prefix);
            Assert.Equal(Convert.ToHexString(prefix), Convert.ToHexString(payload, 0, ErrorChunkPrefix.Size));
            _ = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(payload, ErrorChunkPrefix.Size, payload.Length - ErrorChunkPrefix.Size);
        }

        /// <summary>A read of the disk's bytes succeeds (one data chunk under structured replies), with the exact framing.</summary>
        public async Task AssertReadWorksAsync(DiskExport disk, ulong offset, int length)
        {
            ulong cookie = 0xC0FFEE + (ulong)length;
            await SendRequestAsync(NbdCommand.Read, cookie, offset, (ulong)length);
            byte[] expectedData = disk.Snapshot()[(int)offset..((int)offset + length)];
            if (Mode == Mode.Simple)
            {
                byte[] reply = await ReadAsync(SimpleReplyHeader.Size);
                var expected = new byte[SimpleReplyHeader.Size];
                new SimpleReplyHeader(0, cookie).Write(expected);
                Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(reply));
                Assert.Equal(expectedData, await ReadAsync(length));
                return;
            }
            int size = Extended ? ExtendedReplyHeader.Size : StructuredReplyHeader.Size;
            byte[] header = await ReadAsync(size);
            var expectedHeader = new byte[size];
            ulong chunk = (ulong)length + OffsetDataChunk.PrefixSize;
            if (Extended)
                new ExtendedReplyHeader(NbdProtocol.ReplyFlagDone, (ushort)ChunkType.OffsetData, cookie, offset, chunk).Write(expectedHeader);
            else
                new StructuredReplyHeader(NbdProtocol.ReplyFlagDone, (ushort)ChunkType.OffsetData, cookie, (uint)chunk).Write(expectedHeader);
            Assert.Equal(Convert.ToHexString(expectedHeader), Convert.ToHexString(header));
            byte[] payload = await ReadAsync((int)chunk);
            Assert.Equal(offset, BinaryPrimitives.ReadUInt64BigEndian(payload));
            Assert.Equal(expectedData, payload[OffsetDataChunk.PrefixSize..]);
        }

        /// <summary>
        /// The client's bytes of a whole well-formed session: flags, structured replies or extended headers,
        /// base:allocation, GO, then a 64-byte write at 4096, a read, block status, flush, trim, write-zeroes, cache
        /// and a disconnect.
        /// </summary>
        public static byte[] Session(Mode mode)
        {
            bool extended = mode == Mode.Extended;
            var s = new List<byte>();
            s.AddRange(Be32(3));
            s.AddRange(Option(extended ? NbdOption.ExtendedHeaders : NbdOption.StructuredReply, []));
            s.AddRange(Option(NbdOption.SetMetaContext, MetaContextPayload("", "base:allocation")));
            s.AddRange(Option(NbdOption.Go, InfoPayload("", NbdInfoType.BlockSize)));
            ushort payloadLen = extended ? (ushort)CommandFlags.PayloadLen : (ushort)0;
            s.AddRange(Request(NbdCommand.Write, 1, 4096, 64, extended, payloadLen));
            s.AddRange(Pattern(64, 5));
            s.AddRange(Request(NbdCommand.Read, 2, 4096, 64, extended));
            s.AddRange(Request(NbdCommand.BlockStatus, 3, 0, 65536, extended));
            s.AddRange(Request(NbdCommand.Flush, 4, 0, 0, extended));
            s.AddRange(Request(NbdCommand.Trim, 5, 65536, 4096, extended));
            s.AddRange(Request(NbdCommand.WriteZeroes, 6, 131072, 4096, extended, (ushort)CommandFlags.NoHole));
            s.AddRange(Request(NbdCommand.Cache, 7, 0, 4096, extended));
            s.AddRange(Request(NbdCommand.Disconnect, 8, 0, 0, extended));
            return [.. s];
        }
    }
}
