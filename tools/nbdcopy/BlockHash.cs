using System;
using System.Collections.Generic;
using System.Security.Cryptography;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// The blkhash of the copied disk (--blkhash, as libnbd 1.24 computes it, compatible with
/// https://gitlab.com/nirs/blkhash): the disk is cut into blocks of a fixed size (the last one may be shorter),
/// each block is hashed, and the result is the hash of all the block digests in order followed by the disk size as
/// a little-endian 64-bit number. Zero blocks use one precomputed digest. Blocks arrive in any order from the
/// workers, partly or whole; digests are folded into the final hash as soon as every earlier block is done, so
/// memory stays bounded by how far apart the workers are, not by the size of the disk.
/// </summary>
internal sealed class BlockHash
{
    private readonly HashAlgorithmName _algorithm;
    private readonly int _blockSize;
    private readonly object _lock = new();
    private readonly Dictionary<long, byte[]?> _done = []; // digest, or null for a zero block
    private readonly Dictionary<long, Partial> _partial = [];
    private readonly IncrementalHash _final;
    private readonly byte[] _zeroDigest;
    private long _next;

    private BlockHash(HashAlgorithmName algorithm, int blockSize)
    {
        _algorithm = algorithm;
        _blockSize = blockSize;
        _final = IncrementalHash.CreateHash(algorithm);
        _zeroDigest = Digest(new byte[blockSize]);
    }

    /// <summary>
    /// Reads --blkhash's value: <c>md5</c>, <c>sha1</c>, <c>sha256</c> or <c>sha512</c>, optionally followed by
    /// <c>/SIZE</c> (a power of two, with the usual suffixes; 64k when absent).
    /// </summary>
    public static BlockHash Parse(string text)
    {
        int slash = text.IndexOf('/', StringComparison.Ordinal);
        string name = slash < 0 ? text : text[..slash];
        HashAlgorithmName algorithm = name switch
        {
            "md5" => HashAlgorithmName.MD5,
            "sha1" => HashAlgorithmName.SHA1,
            "sha256" => HashAlgorithmName.SHA256,
            "sha512" => HashAlgorithmName.SHA512,
            _ => throw new ToolException("--blkhash: unknown digest (use md5, sha1, sha256 or sha512): " + name),
        };
        long size = 64 * 1024;
        if (slash >= 0)
        {
            if (!HumanSize.TryParse(text[(slash + 1)..], out size, out string error))
                throw new ToolException("--blkhash: " + error);
            if (!CopyOptions.IsPowerOfTwo(size) || size > 1 << 30)
                throw new ToolException("--blkhash: the block size must be a power of 2, at most 1G: " + text[(slash + 1)..]);
        }
        return new BlockHash(algorithm, (int)size);
    }

    /// <summary>Adds what <c>[offset, offset + length)</c> holds: <paramref name="data"/>, or zeroes when it is
    /// empty and <paramref name="zero"/> is set. Each byte of the disk must be added exactly once.</summary>
    public void Add(long offset, long length, ReadOnlySpan<byte> data, bool zero)
    {
        while (length > 0)
        {
            long block = offset / _blockSize;
            int within = (int)(offset % _blockSize);
            int n = (int)Math.Min(_blockSize - within, length);
            ReadOnlySpan<byte> piece = zero ? default : data[..n];
            if (within == 0 && n == _blockSize)
                Complete(block, zero ? null : Digest(piece));
            else
                AddPartial(block, within, n, piece, zero);
            offset += n;
            length -= n;
            if (!zero)
                data = data[n..];
        }
    }

    private void AddPartial(long block, int within, int n, ReadOnlySpan<byte> piece, bool zero)
    {
        byte[]? digest;
        bool isZero;
        lock (_lock)
        {
            if (!_partial.TryGetValue(block, out Partial? partial))
            {
                partial = new Partial(new byte[_blockSize]);
                _partial.Add(block, partial);
            }
            if (!zero)
                piece.CopyTo(partial.Data.AsSpan(within));
            partial.Filled += n;
            if (partial.Filled < _blockSize)
                return;
            _partial.Remove(block);
            isZero = !partial.Data.AsSpan().ContainsAnyExcept((byte)0);
            digest = isZero ? null : Digest(partial.Data);
        }
        Complete(block, digest);
    }

    private void Complete(long block, byte[]? digest)
    {
        lock (_lock)
        {
            _done[block] = digest;
            while (_done.Remove(_next, out byte[]? ready))
            {
                _final.AppendData(ready ?? _zeroDigest);
                _next++;
            }
        }
    }

    /// <summary>The final digest in lowercase hexadecimal, once the whole disk of <paramref name="size"/> bytes was
    /// added (a last block shorter than the block size is hashed as it is).</summary>
    public string Finish(long size)
    {
        lock (_lock)
        {
            long last = (size + _blockSize - 1) / _blockSize - 1;
            if (last >= 0 && _partial.Remove(last, out Partial? tail))
            {
                ReadOnlySpan<byte> bytes = tail.Data.AsSpan(0, tail.Filled);
                _done[last] = tail.Filled == _blockSize && !bytes.ContainsAnyExcept((byte)0) ? null : Digest(bytes);
                while (_done.Remove(_next, out byte[]? ready))
                {
                    _final.AppendData(ready ?? _zeroDigest);
                    _next++;
                }
            }
            if (_next != last + 1 || _partial.Count != 0)
                throw new InvalidOperationException("blkhash: blocks missing at the end of the copy");
            Span<byte> length = stackalloc byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(length, size);
            _final.AppendData(length);
            return Convert.ToHexStringLower(_final.GetHashAndReset());
        }
    }

    // MD5 and SHA-1 are offered because blkhash offers them (for matching digests made elsewhere), not for security.
#pragma warning disable CA5350, CA5351
    private byte[] Digest(ReadOnlySpan<byte> data)
    {
        if (_algorithm == HashAlgorithmName.MD5)
            return MD5.HashData(data);
        if (_algorithm == HashAlgorithmName.SHA1)
            return SHA1.HashData(data);
        if (_algorithm == HashAlgorithmName.SHA256)
            return SHA256.HashData(data);
        return SHA512.HashData(data);
    }
#pragma warning restore CA5350, CA5351

    private sealed class Partial(byte[] data)
    {
        public byte[] Data { get; } = data;

        public int Filled { get; set; }
    }
}
