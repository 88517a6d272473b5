using System;
using System.Collections.Generic;
using System.Text;

namespace NbdSharp.Fuzzing;

/// <summary>
/// Well-formed inputs for each target, written from the protocol: the starting corpus, and the proof that a
/// target is not vacuous (a well-formed transcript must make every command succeed).
/// </summary>
public static class Seeds
{
    private const uint MinimumBlock = 1;
    private const uint PreferredBlock = 4096;
    private const uint MaximumBlock = 32 * 1024 * 1024;

    /// <summary>What the server sends for the client's default handshake, ending in the transmission phase.</summary>
    public static byte[] Handshake(ReplyMode mode)
    {
        var s = new ServerScript().NewstyleGreeting();
        s.OptionReply(ServerScript.OptExtendedHeaders, mode == ReplyMode.Extended ? ServerScript.RepAck : ServerScript.RepErrUnsup);
        if (mode != ReplyMode.Extended)
            s.OptionReply(ServerScript.OptStructuredReply, mode == ReplyMode.Structured ? ServerScript.RepAck : ServerScript.RepErrUnsup);
        if (mode != ReplyMode.Simple)
            MetaContexts(s, ServerScript.OptSetMetaContext);
        s.InfoExport(ServerScript.OptGo, Scenario.ExportSize, ServerScript.AllFlags)
            .InfoBlockSize(ServerScript.OptGo, MinimumBlock, PreferredBlock, MaximumBlock)
            .OptionReply(ServerScript.OptGo, ServerScript.RepAck);
        return s.ToArray();
    }

    private static void MetaContexts(ServerScript s, uint option) =>
        s.MetaContext(option, 1, "base:allocation").MetaContext(option, 2, "qemu:dirty-bitmap:b").OptionReply(option, ServerScript.RepAck);

    /// <summary>
    /// Correct replies to the whole workload of <see cref="Scenario"/> in <paramref name="mode"/> (in simple mode
    /// the two block status commands fail with ENOTSUP, as a server without contexts answers them); with
    /// <paramref name="failTrim"/> the trim fails with EIO; with <paramref name="reversed"/> the aio
    /// commands are answered last to first.
    /// </summary>
    public static byte[] Replies(ReplyMode mode, bool failTrim = false, bool reversed = false)
    {
        var s = new ServerScript();
        bool extended = mode == ReplyMode.Extended;
        ulong cookie = 1;
        Read(s, mode, cookie++, Scenario.FirstReadOffset, Scenario.SyncReadLength, split: false);
        var aio = new List<(Scenario.Kind Kind, ulong Offset, uint Count, ulong Cookie)>();
        foreach ((Scenario.Kind kind, ulong offset, uint count) in Scenario.AioCommands)
        {
            aio.Add((kind, offset, count, cookie++));
        }
        if (reversed)
            aio.Reverse();
        foreach ((Scenario.Kind kind, ulong offset, uint count, ulong c) in aio)
        {
            switch (kind)
            {
                case Scenario.Kind.Pread:
                case Scenario.Kind.PreadDf:
                    Read(s, mode, c, offset, count, split: false);
                    break;
                case Scenario.Kind.PreadStructured:
                    Read(s, mode, c, offset, count, split: true);
                    break;
                case Scenario.Kind.BlockStatus or Scenario.Kind.BlockStatus64 when mode == ReplyMode.Simple:
                    s.SimpleReply(c, 95); // strict mode is off, so it was sent; without contexts it fails
                    break;
                case Scenario.Kind.BlockStatus:
                case Scenario.Kind.BlockStatus64:
                    s.BlockStatus(extended, c, false, offset, 1, [(count / 2, 0), (count / 2, 3)]);
                    s.BlockStatus(extended, c, true, offset, 2, [(count, 1)]);
                    break;
                case Scenario.Kind.Trim when failTrim:
                    if (mode == ReplyMode.Simple)
                        s.SimpleReply(c, 5);
                    else
                        s.ErrorChunk(extended, c, true, offset, 5, "injected trim failure");
                    break;
                default:
                    if (mode == ReplyMode.Simple)
                        s.SimpleReply(c, 0);
                    else
                        s.NoneChunk(extended, c, offset);
                    break;
            }
        }
        return s.ToArray();
    }

    private static void Read(ServerScript s, ReplyMode mode, ulong cookie, ulong offset, uint count, bool split)
    {
        byte[] data = Pattern(offset, (int)count);
        bool extended = mode == ReplyMode.Extended;
        if (mode == ReplyMode.Simple)
            s.SimpleReply(cookie, 0, data);
        else if (!split)
            s.DataChunk(extended, cookie, true, offset, offset, data);
        else
        {
            uint half = count / 2;
            s.HoleChunk(extended, cookie, false, offset, offset + half, count - half);
            s.DataChunk(extended, cookie, true, offset, offset, data.AsSpan(0, (int)half));
        }
    }

    private static byte[] Pattern(ulong offset, int count)
    {
        var data = new byte[count];
        for (int i = 0; i < count; i++)
            data[i] = (byte)((offset + (ulong)i) * 7);
        return data;
    }

    /// <summary>An input of the reply target.</summary>
    public static byte[] ReplyInput(ReplyMode mode, byte split, byte[] replies) => [split, (byte)mode, .. replies];

    /// <summary>An input of the client target.</summary>
    public static byte[] ClientInput(ReplyMode mode, byte split, byte[] replies) => [split, .. Handshake(mode), .. replies];

    /// <summary>
    /// What a server sends an opt-mode client running <see cref="FuzzTargets.Handshake"/>: extended headers,
    /// a list of two exports, two contexts, full info, the contexts again, GO, and the reply to one read.
    /// </summary>
    public static byte[] OptSession(bool extended)
    {
        var s = new ServerScript().NewstyleGreeting();
        s.OptionReply(ServerScript.OptExtendedHeaders, extended ? ServerScript.RepAck : ServerScript.RepErrUnsup);
        if (!extended)
            s.OptionReply(ServerScript.OptStructuredReply, ServerScript.RepAck);
        s.Server("", "the default export").Server("disk", "a disk").OptionReply(ServerScript.OptList, ServerScript.RepAck);
        MetaContexts(s, ServerScript.OptListMetaContext);
        MetaContexts(s, ServerScript.OptSetMetaContext);
        s.InfoExport(ServerScript.OptInfo, Scenario.ExportSize, ServerScript.AllFlags)
            .InfoText(ServerScript.OptInfo, 1, "disk")
            .InfoText(ServerScript.OptInfo, 2, "a disk")
            .InfoBlockSize(ServerScript.OptInfo, MinimumBlock, PreferredBlock, MaximumBlock)
            .OptionReply(ServerScript.OptInfo, ServerScript.RepAck);
        MetaContexts(s, ServerScript.OptSetMetaContext);
        MetaContexts(s, ServerScript.OptSetMetaContext);
        s.InfoExport(ServerScript.OptGo, Scenario.ExportSize, ServerScript.AllFlags)
            .InfoText(ServerScript.OptGo, 1, "disk")
            .OptionReply(ServerScript.OptGo, ServerScript.RepAck);
        s.DataChunk(extended, 1, true, 0, 0, Pattern(0, 64));
        return s.ToArray();
    }

    /// <summary>URIs of every form libnbd documents.</summary>
    public static readonly string[] Uris =
    [
        "nbd://example.com",
        "nbd://example.com:10809/disk",
        "nbds://user@example.com/disk?tls-certificates=/etc/pki&tls-verify-peer=false",
        "nbd+unix:///disk?socket=/tmp/nbd.sock",
        "nbd+unix://?socket=/tmp/nbd.sock",
        "nbds+unix://alice@/?socket=/run/s&tls-psk-file=/k.psk",
        "nbd+vsock://2:10809/e%20x",
        "nbd://[::1]:10809/a%2Fb",
        "nbd://127.0.0.1/%e2%82%ac",
    ];

    /// <summary>Every seed of <paramref name="target"/>, with a file name for each.</summary>
    public static IEnumerable<(string Name, byte[] Input, int Failures)> For(string target)
    {
        switch (target)
        {
            case "reply":
            case "client":
                foreach (ReplyMode mode in Enum.GetValues<ReplyMode>())
                {
                    string m = mode.ToString().ToLowerInvariant();
                    Func<ReplyMode, byte, byte[], byte[]> input = target == "reply" ? ReplyInput : ClientInput;
                    int failures = mode == ReplyMode.Simple ? 2 : 0;
                    yield return ($"{m}", input(mode, 0, Replies(mode)), failures);
                    yield return ($"{m}-split7", input(mode, 7, Replies(mode)), failures);
                    yield return ($"{m}-reversed", input(mode, 0, Replies(mode, reversed: true)), failures);
                    yield return ($"{m}-trim-error", input(mode, 0, Replies(mode, failTrim: true)), failures + 1);
                }
                break;
            case "handshake":
                yield return ("opt-extended", [0, .. OptSession(true)], 0);
                yield return ("opt-structured", [0, .. OptSession(false)], 0);
                yield return ("opt-split5", [5, .. OptSession(true)], 0);
                // An oldstyle server cannot take options: all but the read fail, and the read finds no reply.
                yield return ("oldstyle", [0, .. new ServerScript().OldstyleGreeting(Scenario.ExportSize, 3).ToArray()], 6);
                break;
            case "uri":
                for (int i = 0; i < Uris.Length; i++)
                    yield return ($"uri{i}", Encoding.UTF8.GetBytes(Uris[i]), 0);
                break;
            case "server-request":
                foreach ((string Name, byte[] Input, int Failures) seed in ServerSeeds.Requests())
                    yield return seed;
                break;
            case "server-option":
                foreach ((string Name, byte[] Input, int Failures) seed in ServerSeeds.Options())
                    yield return seed;
                break;
            default:
                throw new ArgumentException("unknown fuzz target " + target, nameof(target));
        }
    }
}
