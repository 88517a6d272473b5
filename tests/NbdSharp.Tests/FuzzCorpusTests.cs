using System;
using System.IO;
using NbdSharp.Fuzzing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The fuzzing targets outside the fuzzer: every input of the committed corpus (fuzz/corpus) still runs
/// without breaking a promise, the well-formed seeds make every command succeed (so the targets reach the
/// transmission phase and are not vacuous), and each harness check fires on a crafted violation.
/// </summary>
[Trait("Tier", "Unit")]
public class FuzzCorpusTests
{
    public static TheoryData<string> Targets => new(FuzzTargets.Names);

    [Theory]
    [MemberData(nameof(Targets))]
    public void EveryCorpusInput_RunsWithoutBreakingAPromise(string target)
    {
        string[] files = Directory.GetFiles(Path.Combine(RepositoryRoot(), "fuzz", "corpus", target));
        Assert.NotEmpty(files);
        foreach (string file in files)
        {
            try
            {
                FuzzTargets.Run(target, File.ReadAllBytes(file));
            }
            catch (Exception e) when (e is not NbdException)
            {
                throw new Xunit.Sdk.XunitException($"{target} corpus input {Path.GetFileName(file)}: {e}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void WellFormedSeeds_ReachEveryCommand(string target)
    {
        foreach ((string name, byte[] input, int failures) in Seeds.For(target))
        {
            FuzzOutcome outcome = FuzzTargets.Run(target, input);
            Assert.True(outcome.Connected, $"{target}/{name} did not connect");
            Assert.True(outcome.Issued > 0, $"{target}/{name} issued nothing");
            Assert.Equal((name, failures, outcome.Issued - failures), (name, outcome.Failed, outcome.Succeeded));
        }
    }

    [Fact]
    public void CommittedSeeds_AreTheGeneratedOnes()
    {
        foreach (string target in FuzzTargets.Names)
        {
            foreach ((string name, byte[] input, _) in Seeds.For(target))
            {
                string file = Path.Combine(RepositoryRoot(), "fuzz", "corpus", target, name);
                if (File.Exists(file))
                    Assert.Equal(input, File.ReadAllBytes(file));
            }
        }
    }

    [Fact]
    public void AChunkOutsideItsRead_IsReportedAsAProtocolError_NotDelivered()
    {
        // The first reply is cookie 1's data chunk: its offset now lies past the 64-byte read.
        byte[] input = Seeds.ReplyInput(ReplyMode.Structured, 0, Seeds.Replies(ReplyMode.Structured));
        input[2 + 20 + 7] = 0x80;
        FuzzOutcome outcome = FuzzTargets.Reply(input);
        Assert.True(outcome.Connected);
        Assert.Equal(outcome.Issued, outcome.Failed);
    }

    [Fact]
    public void TheUriTarget_AcceptsAValidUri_AndRefusesAnInvalidOne()
    {
        Assert.Equal(new FuzzOutcome(true, 1, 1, 0), FuzzTargets.Uri("nbd://[::1]:10809/a%20b?socket=%2Fx"u8));
        Assert.Equal(new FuzzOutcome(false, 1, 0, 1), FuzzTargets.Uri("nbd://h/a b"u8));
    }

    private static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "NbdSharp.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException("the repository root (NbdSharp.slnx) is not above " + AppContext.BaseDirectory);
    }
}
