using System;
using System.Collections.Generic;
using NbdSharp.Protocol;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>Structured read reassembly: a reply is accepted iff its chunks tile the request exactly once.</summary>
[Trait("Tier", "Unit")]
public class CoverageTests
{
    [Fact]
    public void InOrderChunks_MergeIntoOneRange()
    {
        var coverage = new Coverage();
        Assert.True(coverage.TryAdd(0, 100));
        Assert.True(coverage.TryAdd(100, 50));
        Assert.True(coverage.TryAdd(150, 50));
        Assert.Equal(1, coverage.RangeCount);
        Assert.True(coverage.Covers(200));
    }

    [Fact]
    public void OutOfOrderChunks_MergeWhenTheGapCloses()
    {
        var coverage = new Coverage();
        Assert.True(coverage.TryAdd(300, 100));
        Assert.True(coverage.TryAdd(0, 100));
        Assert.Equal(2, coverage.RangeCount);
        Assert.False(coverage.Covers(400));
        Assert.True(coverage.TryAdd(100, 200));
        Assert.True(coverage.Covers(400));
    }

    [Theory]
    [InlineData(0UL, 100UL, 50UL, 100UL)]
    [InlineData(50UL, 100UL, 0UL, 51UL)]
    [InlineData(0UL, 100UL, 0UL, 100UL)]
    [InlineData(10UL, 10UL, 0UL, 100UL)]
    public void OverlappingChunks_AreRefused(ulong firstStart, ulong firstLength, ulong secondStart, ulong secondLength)
    {
        var coverage = new Coverage();
        Assert.True(coverage.TryAdd(firstStart, firstLength));
        Assert.False(coverage.TryAdd(secondStart, secondLength));
    }

    [Fact]
    public void Fragmentation_IsBounded()
    {
        var coverage = new Coverage();
        for (int i = 0; i < Coverage.MaxRanges; i++)
            Assert.True(coverage.TryAdd((ulong)i * 2, 1));
        Assert.False(coverage.TryAdd((ulong)Coverage.MaxRanges * 2, 1));
    }

    [Fact]
    public void RandomChunkSequences_SucceedIffTheyTileTheRequest()
    {
        var random = new Random(20261126);
        for (int round = 0; round < 5000; round++)
        {
            ulong length = (ulong)random.Next(1, 200);
            var chunks = RandomTiling(random, length);
            bool tiles = true;
            switch (random.Next(4))
            {
                case 0:
                    break;
                case 1 when chunks.Count > 1:
                    chunks.RemoveAt(random.Next(chunks.Count)); // a gap
                    tiles = false;
                    break;
                case 2:
                    chunks.Add(chunks[random.Next(chunks.Count)]); // a duplicate
                    tiles = false;
                    break;
                case 3:
                    var (start, size) = chunks[random.Next(chunks.Count)];
                    if (size > 1)
                    {
                        chunks.Add((start + 1, size - 1)); // an overlap
                        tiles = false;
                    }
                    break;
            }
            Shuffle(random, chunks);
            var coverage = new Coverage();
            bool accepted = true;
            foreach (var (start, size) in chunks)
                accepted &= coverage.TryAdd(start, size);
            Assert.Equal(tiles, accepted && coverage.Covers(length));
        }
    }

    private static List<(ulong Start, ulong Length)> RandomTiling(Random random, ulong length)
    {
        var chunks = new List<(ulong, ulong)>();
        ulong at = 0;
        while (at < length)
        {
            ulong size = Math.Min(length - at, (ulong)random.Next(1, 40));
            chunks.Add((at, size));
            at += size;
        }
        return chunks;
    }

    private static void Shuffle<T>(Random random, List<T> items)
    {
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
