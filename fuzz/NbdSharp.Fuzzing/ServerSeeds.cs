using System.Collections.Generic;
using NbdSharp.Protocol;

namespace NbdSharp.Fuzzing;

/// <summary>
/// Well-formed client sessions for the server targets, written from the protocol: every command type and flag after
/// each canned handshake (server-request), every option (server-option), and one session of refusals each, with how
/// many of the requests or options the server must refuse.
/// </summary>
internal static class ServerSeeds
{
    private const long Size = ServerTargets.ExportSize;

    public static IEnumerable<(string Name, byte[] Input, int Failures)> Requests()
    {
        (string Name, byte Setup, byte Split)[] sessions =
        [
            ("simple", 0, 0),
            ("structured", 1, 0),
            ("extended", 2, 0),
            ("extended-aligned", 2 | 4, 0),
            ("structured-readonly", 1 | 8, 0),
            ("structured-dense", 1 | 0x10, 0),
            ("extended-aligned-few-extents", 2 | 4 | 0x20, 0),
            ("simple-split7", 0, 7),
        ];
        foreach ((string name, byte setup, byte split) in sessions)
        {
            byte[] workload = Workload(new ServerTargets.RequestSetup(setup), out int failures);
            yield return (name, [setup, split, .. workload], failures);
        }
        yield return ("simple-refusals", [0, 0, .. Refusals(out int refused)], refused);
    }

    /// <summary>Every command, with each flag it may carry, on a freshly negotiated connection; the writes fail when read-only.</summary>
    public static byte[] Workload(ServerTargets.RequestSetup setup, out int failures)
    {
        bool extended = setup.Mode == ReplyMode.Extended, structured = setup.Mode != ReplyMode.Simple;
        var s = new ClientScript();
        int writes = 0;
        ulong cookie = 1;
        void Write(ulong offset, int length, CommandFlags flags = CommandFlags.None)
        {
            s.Request(extended, NbdCommand.Write, offset, (ulong)length, flags, Pattern(offset, length), cookie++);
            writes++;
        }
        Write(0, 4096);
        s.Request(extended, NbdCommand.Read, 0, 4096, cookie: cookie++);
        s.Request(extended, NbdCommand.Read, (ulong)Size - 512, 512, cookie: cookie++);
        Write((ulong)Size - 512, 512);
        // Across the end of a written page into an unwritten one: a data chunk and a hole chunk.
        s.Request(extended, NbdCommand.Read, 65536 - 4096, 8192, cookie: cookie++);
        if (structured)
            s.Request(extended, NbdCommand.Read, 0, 1024, CommandFlags.Df, cookie: cookie++);
        s.Request(extended, NbdCommand.Trim, (ulong)Size - 4096, 4096, cookie: cookie++);
        writes++;
        s.Request(extended, NbdCommand.WriteZeroes, 8192, 4096, CommandFlags.NoHole, cookie: cookie++);
        writes++;
        s.Request(extended, NbdCommand.WriteZeroes, 12288, 4096, CommandFlags.FastZero | CommandFlags.Fua, cookie: cookie++);
        writes++;
        Write(4096, 512, CommandFlags.Fua);
        s.Request(extended, NbdCommand.Flush, 0, 0, cookie: cookie++);
        s.Request(extended, NbdCommand.Cache, 0, 65536, cookie: cookie++);
        if (structured)
        {
            s.Request(extended, NbdCommand.BlockStatus, 0, 131072, cookie: cookie++);
            s.Request(extended, NbdCommand.BlockStatus, (ulong)Size - 4096, 4096, CommandFlags.ReqOne, cookie: cookie++);
        }
        s.Request(extended, NbdCommand.Disconnect, 0, 0, cookie: cookie);
        failures = setup.ReadOnly ? writes : 0;
        return s.ToArray();
    }

    /// <summary>Simple replies: requests the server must refuse (each class once), then one it must serve.</summary>
    public static byte[] Refusals(out int refused)
    {
        var s = new ClientScript();
        s.Request(false, NbdCommand.Read, (ulong)Size - 10, 20, cookie: 1); // past the end
        s.Request(false, NbdCommand.Write, (ulong)Size - 10, 20, payload: new byte[20], cookie: 2); // ENOSPC
        s.Request(false, (NbdCommand)9, 0, 512, cookie: 3); // unknown command
        s.Request(false, NbdCommand.Read, 0, 0, cookie: 4); // zero length
        s.Request(false, NbdCommand.Read, 0, 512, (CommandFlags)0x40, cookie: 5); // unknown flag
        s.Request(false, NbdCommand.Read, 0, 16 * 1024 + 1, cookie: 6); // over the maximum payload
        s.Request(false, NbdCommand.Flush, 0, 1, cookie: 7); // a flush with a length
        s.Request(false, NbdCommand.BlockStatus, 0, 512, cookie: 8); // no context negotiated
        s.Request(false, NbdCommand.Read, 512, 512, cookie: 9);
        s.Request(false, NbdCommand.Disconnect, 0, 0, cookie: 10);
        refused = 8;
        return s.ToArray();
    }

    public static IEnumerable<(string Name, byte[] Input, int Failures)> Options()
    {
        byte[] structured = Structured();
        yield return ("structured", [0, .. structured], 0);
        yield return ("structured-split5", [5, .. structured], 0);
        yield return ("extended", [0, .. Extended()], 0);
        yield return ("export-name", [0, .. new ClientScript().Flags(3).Option(NbdOption.StructuredReply)
            .Option(NbdOption.ExportName, "disk"u8).Request(false, NbdCommand.Read, 0, 512, cookie: 1)
            .Request(false, NbdCommand.Disconnect, 0, 0, cookie: 2).ToArray()], 0);
        yield return ("export-name-zeroes", [0, .. new ClientScript().Flags(1).Option(NbdOption.ExportName)
            .Request(false, NbdCommand.Disconnect, 0, 0).ToArray()], 0);
        yield return ("refusals", [0, .. OptionRefusals(out int refused)], refused);
    }

    /// <summary>Every option that succeeds, then a read: list, structured replies, contexts listed and set, info, GO.</summary>
    public static byte[] Structured() =>
        new ClientScript().Flags(3)
            .Option(NbdOption.List)
            .Option(NbdOption.StructuredReply)
            .MetaContext(NbdOption.ListMetaContext, "")
            .MetaContext(NbdOption.ListMetaContext, "disk", "base:")
            .MetaContext(NbdOption.SetMetaContext, "", "base:allocation")
            .Info(NbdOption.Info, "disk", NbdInfoType.Name, NbdInfoType.Description, NbdInfoType.BlockSize)
            .Info(NbdOption.Info, ServerTargets.OptionExports[2])
            .Info(NbdOption.Go, "", NbdInfoType.BlockSize)
            .Request(false, NbdCommand.Read, 0, 512, cookie: 1)
            .Request(false, NbdCommand.BlockStatus, 0, 4096, cookie: 2)
            .Request(false, NbdCommand.Disconnect, 0, 0, cookie: 3)
            .ToArray();

    private static byte[] Extended() =>
        new ClientScript().Flags(3)
            .Option(NbdOption.ExtendedHeaders)
            .MetaContext(NbdOption.SetMetaContext, "disk", "base:allocation", "qemu:dirty-bitmap:x")
            .Info(NbdOption.Go, "disk", NbdInfoType.BlockSize, NbdInfoType.Name)
            .Request(true, NbdCommand.Read, 0, 512, cookie: 1)
            .Request(true, NbdCommand.Disconnect, 0, 0, cookie: 2)
            .ToArray();

    /// <summary>Options the server must refuse (each class once), then a GO it must grant.</summary>
    public static byte[] OptionRefusals(out int refused)
    {
        byte[] script = new ClientScript().Flags(3)
            .Option((NbdOption)0x1234, "abc"u8) // unknown: ERR_UNSUP
            .Info(NbdOption.Info, "nope") // ERR_UNKNOWN
            .Info(NbdOption.Go, "disk") // 512-byte blocks without NBD_INFO_BLOCK_SIZE: ERR_BLOCK_SIZE_REQD
            .Option(NbdOption.StartTls) // TLS off: ERR_UNSUP
            .MetaContext(NbdOption.SetMetaContext, "", "base:allocation") // before structured replies: ERR_INVALID
            .Option(NbdOption.Info, new byte[ServerTargets.MaxOptionLength + 1]) // ERR_TOO_BIG
            .Option(NbdOption.List, "x"u8) // a payload where none belongs: ERR_INVALID
            .Info(NbdOption.Go, "")
            .ToArray();
        refused = 7;
        return script;
    }

    private static byte[] Pattern(ulong offset, int length)
    {
        var data = new byte[length];
        for (int i = 0; i < length; i++)
            data[i] = (byte)(((offset + (ulong)i) * 13) | 1);
        return data;
    }
}
