using System;
using System.Globalization;

namespace NbdSharp.Tools;

/// <summary>Sizes as libnbd's tools write and read them: "1M", "64K", "2G", "512s".</summary>
public static class HumanSize
{
    private const string Suffixes = "KMGTPE";

    /// <summary>
    /// Writes <paramref name="bytes"/> with the largest power-of-1024 suffix that divides it exactly ("1M", "1536K");
    /// plain bytes when none does.
    /// </summary>
    /// <param name="bytes">The size.</param>
    /// <param name="abbreviated">Whether a suffix was used.</param>
    /// <returns>The text.</returns>
    public static string Format(ulong bytes, out bool abbreviated)
    {
        int unit = -1;
        while (bytes != 0 && (bytes & 1023) == 0 && unit < Suffixes.Length - 1)
        {
            bytes >>= 10;
            unit++;
        }
        abbreviated = unit >= 0;
        string number = bytes.ToString(CultureInfo.InvariantCulture);
        return abbreviated ? number + Suffixes[unit] : number;
    }

    /// <summary>As <see cref="Format(ulong, out bool)"/>.</summary>
    /// <param name="bytes">The size.</param>
    /// <returns>The text.</returns>
    public static string Format(ulong bytes) => Format(bytes, out _);

    /// <summary>
    /// Reads a size: a decimal number with an optional suffix b (bytes), s (512-byte sectors), or k, m, g, t, p, e
    /// (powers of 1024), in either case. Negative sizes, other suffixes and overflows of a signed 64-bit size are
    /// refused.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="size">The size.</param>
    /// <param name="error">Why it was refused.</param>
    /// <returns>Whether <paramref name="text"/> is a size.</returns>
    public static bool TryParse(string text, out long size, out string error)
    {
        ArgumentNullException.ThrowIfNull(text);
        size = 0;
        string trimmed = text.TrimStart(' ', '\t', '\n', '\r', '\v', '\f');
        int end = 0;
        if (end < trimmed.Length && trimmed[end] is '+' or '-')
            end++;
        int digitsStart = end;
        while (end < trimmed.Length && char.IsAsciiDigit(trimmed[end]))
            end++;
        if (end == digitsStart)
        {
            error = "could not parse size string: " + text;
            return false;
        }
        bool negative = trimmed[0] == '-';
        string digits = trimmed[digitsStart..end].TrimStart('0');
        if (!long.TryParse(digits.Length == 0 ? "0" : digits, NumberStyles.None, CultureInfo.InvariantCulture, out long number))
        {
            error = negative ? "size cannot be negative: " + text : "size exceeds maximum value: " + text;
            return false;
        }
        if (negative && number != 0)
        {
            error = "size cannot be negative: " + text;
            return false;
        }
        string suffix = trimmed[end..];
        long scale = suffix.Length == 0 ? 1 : char.ToUpperInvariant(suffix[0]) switch
        {
            'B' => 1,
            'S' => 512,
            'K' => 1L << 10,
            'M' => 1L << 20,
            'G' => 1L << 30,
            'T' => 1L << 40,
            'P' => 1L << 50,
            'E' => 1L << 60,
            _ => 0,
        };
        if (scale == 0 || suffix.Length > 1)
        {
            error = "could not parse size: unknown suffix: " + suffix;
            return false;
        }
        if (number > long.MaxValue / scale)
        {
            error = "could not parse size: size * scale overflows: " + text;
            return false;
        }
        size = number * scale;
        error = "";
        return true;
    }
}
