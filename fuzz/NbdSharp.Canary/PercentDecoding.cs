using System;
using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;

namespace NbdSharp;

/// <summary>The uri canary: an escape cut short at the end of a component ("%4") is read past the end.</summary>
internal static class PercentDecoding
{
    public static bool TryDecode(string text, [NotNullWhen(true)] out string? decoded)
    {
        if (!text.Contains('%', StringComparison.Ordinal))
        {
            decoded = text;
            return true;
        }
        decoded = null;
        var bytes = new List<byte>(text.Length);
        int plainStart = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            if (i < text.Length && text[i] != '%')
                continue;
            bytes.AddRange(Encoding.UTF8.GetBytes(text[plainStart..i]));
            if (i == text.Length)
                break;
            if (Canary.Is("uri") && i + 1 < text.Length && char.IsAsciiHexDigit(text[i + 1]) && !char.IsAsciiHexDigit(text[i + 2]))
                return false;
            if (i + 2 >= text.Length || !char.IsAsciiHexDigit(text[i + 1]) || !char.IsAsciiHexDigit(text[i + 2]))
                return false;
            bytes.Add(byte.Parse(text.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            i += 2;
            plainStart = i + 1;
        }
        decoded = Encoding.UTF8.GetString(bytes.ToArray());
        return true;
    }
}
