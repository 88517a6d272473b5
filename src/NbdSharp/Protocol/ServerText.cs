using System;
using System.Globalization;
using System.Text;

namespace NbdSharp.Protocol;

/// <summary>
/// The one policy for showing text a server sent (option error messages, error chunk messages) in our messages:
/// printable ASCII as is, every other byte as <c>\xNN</c>, as libnbd quotes it, so that a hostile server cannot
/// put escape sequences on a user's terminal.
/// </summary>
internal static class ServerText
{
    public static string Quote(ReadOnlySpan<byte> raw)
    {
        var text = new StringBuilder(raw.Length);
        foreach (byte b in raw)
        {
            if (b >= 0x20 && b < 0x7f)
                text.Append((char)b);
            else
                text.Append("\\x").Append(b.ToString("x2", CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }
}
