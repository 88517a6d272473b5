using System;
using System.Globalization;

namespace NbdSharp.Tools;

/// <summary>C printf conversions that .NET has no exact format string for.</summary>
public static class CFormat
{
    /// <summary>
    /// printf's <c>%g</c>: six significant digits, trailing zeros removed, and exponent notation (<c>1e-05</c>,
    /// <c>1.5e+07</c>) when the exponent is below -4 or at least 6.
    /// </summary>
    /// <param name="value">The number.</param>
    /// <returns>The text printf would write.</returns>
    public static string G(double value)
    {
        if (double.IsNaN(value))
            return "nan";
        if (double.IsInfinity(value))
            return value > 0 ? "inf" : "-inf";
        if (value == 0)
            return double.IsNegative(value) ? "-0" : "0";
        // Round to six significant digits first: that decides the exponent, as in C.
        string scientific = value.ToString("E5", CultureInfo.InvariantCulture);
        int e = scientific.IndexOf('E', StringComparison.Ordinal);
        int exponent = int.Parse(scientific.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        if (exponent < -4 || exponent >= 6)
        {
            string mantissa = TrimZeros(scientific[..e]);
            return mantissa + "e" + (exponent < 0 ? "-" : "+") + Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture);
        }
        return TrimZeros(value.ToString("F" + (5 - exponent).ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture));
    }

    private static string TrimZeros(string number) =>
        number.Contains('.', StringComparison.Ordinal) ? number.TrimEnd('0').TrimEnd('.') : number;
}
