using System.Globalization;
using System.Text;

namespace NbdSharp.Tools.Info;

/// <summary>
/// nbdinfo's output, spooled and written at the end in one piece, so that a failure prints nothing on stdout
/// (as libnbd's nbdinfo does).
/// </summary>
internal sealed class Output(Ansi ansi)
{
    private readonly StringBuilder _text = new();

    public Ansi Ansi { get; } = ansi;

    public Output Write(string text)
    {
        _text.Append(text);
        return this;
    }

    public Output Write(long value)
    {
        _text.Append(value.ToString(CultureInfo.InvariantCulture));
        return this;
    }

    public Output Colour(string colour) => Write(Ansi.Colour(colour));

    public Output Restore() => Write(Ansi.Restore());

    /// <summary>A JSON string: quotes, backslashes and control characters escaped, everything else as it is.</summary>
    public Output JsonString(string value)
    {
        _text.Append('"');
        foreach (char c in value)
        {
            if (c is '\\' or '"')
                _text.Append('\\').Append(c);
            else if (c < ' ')
                _text.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else
                _text.Append(c);
        }
        _text.Append('"');
        return this;
    }

    public override string ToString() => _text.ToString();
}
