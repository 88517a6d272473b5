using System;
using System.Text;

namespace NbdSharp.Fuzzing;

/// <summary>How the canned handshake of the reply target leaves the connection.</summary>
public enum ReplyMode : byte
{
    /// <summary>Simple replies only (the server refuses structured replies).</summary>
    Simple,
    /// <summary>Structured replies with base:allocation (id 1) and qemu:dirty-bitmap:b (id 2).</summary>
    Structured,
    /// <summary>Extended headers with the same two contexts.</summary>
    Extended,
}

/// <summary>
/// The fuzzing targets. Each takes the fuzzer's bytes, returns normally for any input the library handles (an
/// <see cref="NbdException"/> is handling it) and lets anything else escape: an unexpected exception, a
/// <see cref="FuzzInvariantException"/> from a harness check, or a crash. Input layouts:
/// <list type="bullet">
/// <item><c>reply</c>: [split][mode] then the transmission-phase bytes; a canned handshake for mode (% 3) comes first.</item>
/// <item><c>client</c>: [split] then everything the server sends, handshake included.</item>
/// <item><c>handshake</c>: [split] then everything the server sends to an opt-mode client.</item>
/// <item><c>uri</c>: the URI as UTF-8.</item>
/// <item><c>server-request</c>, <c>server-option</c>: the server's side, with the fuzzer as the client (see <see cref="ServerTargets"/>).</item>
/// </list>
/// split is the most bytes one receive returns (0 = no limit), so short reads are exercised too.
/// </summary>
public static class FuzzTargets
{
    /// <summary>The target names, as the fuzz host and fuzz.sh take them.</summary>
    public static readonly string[] Names = ["reply", "client", "handshake", "uri", "server-request", "server-option"];

    /// <summary>Runs the target called <paramref name="name"/> on <paramref name="input"/>.</summary>
    public static FuzzOutcome Run(string name, ReadOnlySpan<byte> input)
    {
        return name switch
        {
            "reply" => Reply(input),
            "client" => Client(input),
            "handshake" => Handshake(input),
            "uri" => Uri(input),
            "server-request" => ServerTargets.Request(input),
            "server-option" => ServerTargets.Option(input),
            _ => throw new ArgumentException("unknown fuzz target " + name, nameof(name)),
        };
    }

    /// <summary>The reply parser: simple, structured and extended replies to every command type in flight.</summary>
    public static FuzzOutcome Reply(ReadOnlySpan<byte> input)
    {
        if (input.Length < 2)
            return new FuzzOutcome(false, 0, 0, 0);
        var mode = (ReplyMode)(input[1] % 3);
        byte[] handshake = Seeds.Handshake(mode);
        var script = new byte[handshake.Length + input.Length - 2];
        handshake.CopyTo(script, 0);
        input[2..].CopyTo(script.AsSpan(handshake.Length));
        return RunClient(script, input[0]);
    }

    /// <summary>The whole client: handshake, then the workload, from one stream of server bytes.</summary>
    public static FuzzOutcome Client(ReadOnlySpan<byte> input) =>
        input.Length < 1 ? new FuzzOutcome(false, 0, 0, 0) : RunClient(input[1..].ToArray(), input[0]);

    private static FuzzOutcome RunClient(byte[] script, int split)
    {
        using var h = NewClient();
        using var transport = new ScriptTransport(script, split);
        if (!Scenario.Try(() => h.ConnectTransport(transport)))
            return new FuzzOutcome(false, 0, 0, 0);
        Scenario.Inspect(h);
        return NoInternalError(h, Scenario.Run(h));
    }

    /// <summary>
    /// The reader turns any exception into a dead connection, so that users never see a crash; here it is one: the
    /// handle's engine keeps the first such exception.
    /// </summary>
    private static FuzzOutcome NoInternalError(NbdHandle h, FuzzOutcome outcome)
    {
        if (h.InternalError is { } error)
            throw new FuzzInvariantException("internal error while reading a reply", error);
        return outcome;
    }

    /// <summary>A handle as the client targets use it: strict checks off, two contexts requested.</summary>
    internal static NbdHandle NewClient()
    {
        var h = new NbdHandle();
        h.SetStrictMode(StrictFlag.None);
        h.AddMetaContext("base:allocation");
        h.AddMetaContext("qemu:dirty-bitmap:b");
        return h;
    }

    /// <summary>The option-reply parser: an opt-mode client lists, queries, selects and goes.</summary>
    public static FuzzOutcome Handshake(ReadOnlySpan<byte> input)
    {
        if (input.Length < 1)
            return new FuzzOutcome(false, 0, 0, 0);
        using NbdHandle h = NewOptClient();
        using var transport = new ScriptTransport(input[1..].ToArray(), input[0]);
        return OptScenario(h, transport);
    }

    /// <summary>A handle as the handshake target uses it.</summary>
    internal static NbdHandle NewOptClient()
    {
        NbdHandle h = NewClient();
        h.SetOptMode(true);
        h.SetFullInfo(true);
        return h;
    }

    /// <summary>The opt-mode workload: every option once, then one read if the export was entered.</summary>
    internal static FuzzOutcome OptScenario(NbdHandle h, NbdSharp.Transport.Transport transport)
    {
        if (!Scenario.Try(() => h.ConnectTransport(transport)))
            return new FuzzOutcome(false, 0, 0, 0);
        int issued = 0, succeeded = 0;
        void Step(Action call)
        {
            issued++;
            if (Scenario.Try(call))
                succeeded++;
        }
        int exports = 0, contexts = 0;
        Step(() => h.OptList((name, description) =>
        {
            exports++;
            return 0;
        }));
        Step(() => h.OptListMetaContext(name =>
        {
            contexts++;
            return 0;
        }));
        Step(h.OptInfo);
        Scenario.Inspect(h);
        Step(() => h.OptSetMetaContext(name => 0));
        Step(h.OptGo);
        Scenario.Inspect(h);
        Step(() => h.Pread(new byte[64], 0));
        return NoInternalError(h, new FuzzOutcome(true, issued, succeeded, issued - succeeded));
    }

    /// <summary>The URI parser: whatever parses must print as a URI that parses to the same thing.</summary>
    public static FuzzOutcome Uri(ReadOnlySpan<byte> input)
    {
        string text = Encoding.UTF8.GetString(input);
        if (!NbdUri.TryParse(text, out NbdUri? uri))
            return new FuzzOutcome(false, 1, 0, 1);
        string printed = uri.ToString();
        if (!NbdUri.TryParse(printed, out NbdUri? again))
            throw new FuzzInvariantException($"'{text}' parsed, but its printed form '{printed}' does not");
        if (again.ToString() != printed || again.Transport != uri.Transport || again.Tls != uri.Tls ||
            again.ExportName != uri.ExportName || again.Host != uri.Host || again.Port != uri.Port || again.User != uri.User ||
            again.Query.Count != uri.Query.Count)
            throw new FuzzInvariantException($"'{text}' printed as '{printed}', which parses to '{again}'");
        for (int i = 0; i < uri.Query.Count; i++)
        {
            if (again.Query[i].Key != uri.Query[i].Key || again.Query[i].Value != uri.Query[i].Value)
                throw new FuzzInvariantException($"'{text}' printed as '{printed}' loses query parameter {uri.Query[i].Key}");
        }
        return new FuzzOutcome(true, 1, 1, 0);
    }
}
