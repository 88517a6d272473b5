using System;
using System.Collections.Generic;
using System.Security.Cryptography;
using System.Text.Json;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Compares what NbdSharp sees with what libnbd sees on the same server.</summary>
internal static class Oracle
{
    public static void SameExport(NbdHandle h, JsonElement libnbd)
    {
        Assert.Equal(libnbd.GetProperty("size").GetInt64(), h.GetSize());
        Assert.Equal(libnbd.GetProperty("read_only").GetBoolean(), h.IsReadOnly());
        Assert.Equal(libnbd.GetProperty("can_flush").GetBoolean(), h.CanFlush());
        Assert.Equal(libnbd.GetProperty("can_fua").GetBoolean(), h.CanFua());
        Assert.Equal(libnbd.GetProperty("can_trim").GetBoolean(), h.CanTrim());
        Assert.Equal(libnbd.GetProperty("can_zero").GetBoolean(), h.CanZero());
        Assert.Equal(libnbd.GetProperty("can_fast_zero").GetBoolean(), h.CanFastZero());
        Assert.Equal(libnbd.GetProperty("can_cache").GetBoolean(), h.CanCache());
        Assert.Equal(libnbd.GetProperty("can_multi_conn").GetBoolean(), h.CanMultiConn());
        Assert.Equal(libnbd.GetProperty("can_df").GetBoolean(), h.CanDf());
        Assert.Equal(libnbd.GetProperty("is_rotational").GetBoolean(), h.IsRotational());
        Assert.Equal(libnbd.GetProperty("structured").GetBoolean(), h.GetStructuredRepliesNegotiated());
        Assert.Equal(libnbd.GetProperty("protocol").GetString(), h.GetProtocol());
        Assert.Equal(libnbd.GetProperty("block_minimum").GetInt64(), h.GetBlockSize(SizeKind.Minimum));
        Assert.Equal(libnbd.GetProperty("block_preferred").GetInt64(), h.GetBlockSize(SizeKind.Preferred));
        Assert.Equal(libnbd.GetProperty("block_maximum").GetInt64(), h.GetBlockSize(SizeKind.Maximum));
        // libnbd 1.14 predates SIZE_PAYLOAD (1.16).
        if (libnbd.GetProperty("block_payload").ValueKind == JsonValueKind.Number)
            Assert.Equal(libnbd.GetProperty("block_payload").GetInt64(), h.GetBlockSize(SizeKind.Payload));
    }

    /// <summary>SHA-256 (hex) of a range read through NbdSharp, 1 MiB at a time.</summary>
    public static string Sha256(NbdHandle h, ulong offset, ulong length)
    {
        using var digest = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[1 << 20];
        for (ulong at = offset; at < offset + length;)
        {
            int n = (int)Math.Min((ulong)buffer.Length, offset + length - at);
            h.Pread(buffer.AsSpan(0, n), at);
            digest.AppendData(buffer, 0, n);
            at += (ulong)n;
        }
        return Convert.ToHexStringLower(digest.GetHashAndReset());
    }

    /// <summary>The extents of the negotiated context over a range, as (length, flags) pairs, through NbdSharp.</summary>
    public static List<(uint Length, uint Flags)> Extents(NbdHandle h, ulong offset, ulong length)
    {
        var extents = new List<(uint, uint)>();
        ulong at = offset;
        while (at < offset + length)
        {
            h.BlockStatus(offset + length - at, at, (string _, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
            {
                for (int i = 0; i < entries.Length; i += 2)
                {
                    extents.Add((entries[i], entries[i + 1]));
                    at += entries[i];
                }
                return 0;
            });
        }
        return extents;
    }

    public static List<(uint Length, uint Flags)> Extents(JsonElement libnbd)
    {
        var extents = new List<(uint, uint)>();
        foreach (JsonElement pair in libnbd.GetProperty("extents").EnumerateArray())
            extents.Add((pair[0].GetUInt32(), pair[1].GetUInt32()));
        return extents;
    }
}
