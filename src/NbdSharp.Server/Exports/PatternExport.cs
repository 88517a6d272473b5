using System;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Server;

/// <summary>
/// nbdkit's pattern plugin, byte for byte: a read-only disk of 64-bit big-endian words where the word at each 8-byte
/// aligned offset holds that offset. Every byte is predictable, so a client can check what it read, at any offset.
/// </summary>
public sealed class PatternExport : NbdExport
{
    /// <summary>Words made per pass: 4 KiB, which stays in the first-level cache.</summary>
    private const int WordsPerPass = 512;

    private readonly long _size;

    /// <summary>A disk of <paramref name="size"/> bytes.</summary>
    /// <param name="size">The size in bytes, from 0 to <see cref="long.MaxValue"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    public PatternExport(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        _size = size;
    }

    /// <inheritdoc/>
    public override long Size => _size;

    /// <inheritdoc/>
    public override bool IsReadOnly => true;

    /// <inheritdoc/>
    public override bool CanCache => true;

    /// <inheritdoc/>
    public override bool CanMultiConn => true;

    /// <inheritdoc/>
    public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Fill(offset, buffer.Span);
        return ValueTask.CompletedTask;
    }

    /// <summary>Writes the pattern's bytes from <paramref name="offset"/> into <paramref name="destination"/>, for any offset and length.</summary>
    /// <param name="offset">The disk offset of the first byte.</param>
    /// <param name="destination">Where the bytes go; its length is how many.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range does not fit below 2^63.</exception>
    public static void Fill(long offset, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(destination.Length, long.MaxValue - offset, nameof(destination));
        // Whole words from the aligned word holding the first byte, a pass at a time in a buffer on the stack (always
        // aligned), then copied from the first byte asked for: an unaligned start or end needs no special case.
        Span<long> words = stackalloc long[WordsPerPass];
        long word = offset & ~7L;
        int skip = (int)(offset & 7);
        while (!destination.IsEmpty)
        {
            int count = (int)Math.Min(WordsPerPass, ((long)destination.Length + skip + 7) >> 3);
            Span<long> pass = words[..count];
            Ascending(pass, word);
            if (BitConverter.IsLittleEndian)
                BinaryPrimitives.ReverseEndianness(pass, pass);
            int n = Math.Min(destination.Length, count * 8 - skip);
            MemoryMarshal.AsBytes(pass).Slice(skip, n).CopyTo(destination);
            destination = destination[n..];
            word += (long)count * 8;
            skip = 0;
        }
    }

    /// <summary>Fills <paramref name="words"/> with <paramref name="first"/>, first + 8, first + 16, ...</summary>
    private static void Ascending(Span<long> words, long first)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && words.Length >= Vector<long>.Count)
        {
            var step = new Vector<long>(8L * Vector<long>.Count);
            Vector<long> value = new Vector<long>(first) + Vector<long>.Indices * 8;
            for (; i <= words.Length - Vector<long>.Count; i += Vector<long>.Count)
            {
                value.CopyTo(words[i..]);
                value += step;
            }
        }
        for (; i < words.Length; i++)
            words[i] = first + 8L * i;
    }
}
