using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Fuzzing;
using NbdSharp.Server;
using Xunit;

namespace NbdSharp.Tests.Server;

/// <summary>
/// The server's fuzzing targets outside the fuzzer (FuzzCorpusTests replays their corpus and seeds with the client's):
/// every prefix of every well-formed session, the client vanishing at that byte, keeps every promise the harness checks;
/// and the harness's export catches a call the server should never make.
/// </summary>
[Trait("Tier", "Unit")]
public class HostileClientFuzzTargetTests
{
    [Theory]
    [InlineData("server-request")]
    [InlineData("server-option")]
    public void EveryPrefixOfEverySeed_KeepsThePromises(string target)
    {
        int runs = 0;
        foreach ((string name, byte[] input, int failures) in Seeds.For(target))
        {
            // Every byte of the first 2 KiB (the handshake and the first requests), then strides through long payloads.
            for (int length = 0; length <= input.Length; length += length < 2048 ? 1 : 61)
            {
                try
                {
                    FuzzOutcome outcome = FuzzTargets.Run(target, input.AsSpan(0, length));
                    Assert.True(outcome.Succeeded + outcome.Failed <= outcome.Issued, $"{name}[..{length}]: {outcome}");
                }
                catch (FuzzInvariantException e)
                {
                    throw new Xunit.Sdk.XunitException($"{target} seed {name} cut at {length} of {input.Length} bytes: {e}");
                }
                runs++;
            }
            FuzzOutcome whole = FuzzTargets.Run(target, input);
            Assert.Equal(failures, whole.Failed);
        }
        Assert.True(runs > 1000, $"{runs} runs");
    }

    [Fact]
    public async Task TheCheckingExport_ReportsACallOutsideTheDisk_EvenThoughTheServerWouldTurnItIntoAnError()
    {
        using var export = new CheckingExport(1 << 20, new ExportBlockSize(512, 4096, 16384), readOnly: true, dense: false);
        await export.ReadAsync(512, new byte[512], CancellationToken.None);
        export.ThrowIfBroken();
        await Assert.ThrowsAsync<NbdException>(() => export.ReadAsync((1 << 20) - 512, new byte[1024], CancellationToken.None).AsTask());
        FuzzInvariantException e = Assert.Throws<FuzzInvariantException>(export.ThrowIfBroken);
        Assert.Contains("outside the disk", e.Message, StringComparison.Ordinal);

        using var unaligned = new CheckingExport(1 << 20, new ExportBlockSize(512, 4096, 16384), readOnly: false, dense: false);
        await Assert.ThrowsAsync<NbdException>(() => unaligned.WriteAsync(100, new byte[512], false, CancellationToken.None).AsTask());
        Assert.Contains("not aligned", Assert.Throws<FuzzInvariantException>(unaligned.ThrowIfBroken).Message, StringComparison.Ordinal);

        using var readOnly = new CheckingExport(1 << 20, ExportBlockSize.Default, readOnly: true, dense: false);
        await Assert.ThrowsAsync<NbdException>(() => readOnly.TrimAsync(0, 4096, false, CancellationToken.None).AsTask());
        Assert.Contains("read-only", Assert.Throws<FuzzInvariantException>(readOnly.ThrowIfBroken).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AnOptionTheServerRefuses_IsCountedAsFailed_AndTheSessionGoesOn()
    {
        byte[] input = [0, .. new ClientScript().Flags(3).Bytes(Option(0x1234, 5)).Bytes(Option(7, 0, [0, 0, 0, 0, 0, 0])).ToArray()];
        Assert.Equal(new FuzzOutcome(true, 2, 1, 1), ServerTargets.Option(input));
    }

    private static byte[] Option(uint option, int length, byte[]? payload = null)
    {
        payload ??= new byte[length];
        var bytes = new byte[16 + payload.Length];
        "IHAVEOPT"u8.CopyTo(bytes);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(8), option);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(12), (uint)payload.Length);
        payload.CopyTo(bytes, 16);
        return bytes;
    }
}
