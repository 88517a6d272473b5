using System;
using NbdSharp.Fuzzing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// H2 of the hostile-server matrix: the server closes the connection after k bytes, for every k of a whole
/// transcript (fixed-newstyle handshake in each reply mode, then the replies to every command type; an opt-mode
/// session; a STARTTLS exchange). Every cut must end in an error, never a hang, a crash or a success it did
/// not earn: below the end of the handshake the connect fails, after it the commands without their whole reply
/// fail, each exactly once (the fuzzing harness checks that), and only the whole transcript succeeds.
/// </summary>
[Trait("Tier", "Unit")]
public class HandshakeTruncationTests
{
    [Theory]
    [InlineData(ReplyMode.Simple)]
    [InlineData(ReplyMode.Structured)]
    [InlineData(ReplyMode.Extended)]
    public void EveryCut_OfAHandshakeAndItsReplies_FailsCleanly(ReplyMode mode)
    {
        byte[] handshake = Seeds.Handshake(mode);
        byte[] whole = Seeds.ClientInput(mode, 0, Seeds.Replies(mode));
        FuzzOutcome full = FuzzTargets.Client(whole);
        Assert.Equal(mode == ReplyMode.Simple ? 2 : 0, full.Failed); // block status fails without contexts
        for (int k = 1; k < whole.Length; k++)
        {
            FuzzOutcome outcome = FuzzTargets.Client(whole.AsSpan(0, k));
            int serverBytes = k - 1;
            if (serverBytes < handshake.Length)
                Assert.False(outcome.Connected, $"connected with only {serverBytes} of {handshake.Length} handshake bytes");
            else
                Assert.True(outcome.Failed > 0 && outcome.Succeeded < full.Succeeded, $"cut at {serverBytes}: {outcome}");
        }
    }

    [Fact]
    public void EveryCut_OfAnOptModeSession_FailsCleanly()
    {
        byte[] whole = [0, .. Seeds.OptSession(extended: true)];
        for (int k = 1; k <= whole.Length; k++)
        {
            FuzzOutcome outcome = FuzzTargets.Handshake(whole.AsSpan(0, k));
            if (k < whole.Length)
                Assert.True(!outcome.Connected || outcome.Failed > 0, $"cut at {k - 1}: {outcome}");
            else
                Assert.Equal(0, outcome.Failed);
        }
    }

    /// <summary>TLS required: a cut anywhere in the greeting and the STARTTLS reply, or right after it, is a failed connect.</summary>
    [Fact]
    public void EveryCut_OfAStartTlsExchange_FailsTheConnect()
    {
        byte[] whole = new ServerScript().NewstyleGreeting().OptionReply(5, ServerScript.RepAck).ToArray();
        for (int k = 0; k <= whole.Length; k++)
        {
            using var h = new NbdHandle();
            h.SetTls(TlsMode.Require);
            using var transport = new ScriptTransport(whole.AsMemory(0, k), 0);
            var e = Assert.ThrowsAny<NbdException>(() => h.ConnectTransport(transport));
            Assert.True(h.AioIsDead(), $"cut at {k}: {e.Message}");
        }
    }
}
