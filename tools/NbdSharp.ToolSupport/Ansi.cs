namespace NbdSharp.Tools;

/// <summary>The ANSI colour codes libnbd's tools use, written only when colour is on.</summary>
public sealed class Ansi(bool enabled)
{
    /// <summary>Bold black (dark grey on most terminals).</summary>
    public const string BoldBlack = "1;30";
    /// <summary>Blue.</summary>
    public const string Blue = "22;34";
    /// <summary>Bright blue.</summary>
    public const string BrightBlue = "1;34";
    /// <summary>Bright cyan.</summary>
    public const string BrightCyan = "1;36";
    /// <summary>Bright green.</summary>
    public const string BrightGreen = "1;32";
    /// <summary>Bright magenta.</summary>
    public const string BrightMagenta = "1;35";
    /// <summary>Bright red.</summary>
    public const string BrightRed = "1;31";
    /// <summary>Bright yellow.</summary>
    public const string BrightYellow = "1;33";
    /// <summary>Cyan.</summary>
    public const string Cyan = "22;36";
    /// <summary>Green.</summary>
    public const string Green = "22;32";
    /// <summary>Grey.</summary>
    public const string Grey = "22;90";
    /// <summary>Magenta.</summary>
    public const string Magenta = "22;35";
    /// <summary>Red.</summary>
    public const string Red = "22;31";
    /// <summary>Yellow.</summary>
    public const string Yellow = "22;33";

    /// <summary>Whether colour codes are written.</summary>
    public bool Enabled { get; } = enabled;

    /// <summary>The code that selects <paramref name="colour"/>, or "" when colour is off.</summary>
    /// <param name="colour">One of the constants.</param>
    /// <returns>The escape sequence.</returns>
    public string Colour(string colour) => Enabled ? "\u001b[" + colour + "m" : "";

    /// <summary>The code that restores the default colours, or "" when colour is off.</summary>
    /// <returns>The escape sequence.</returns>
    public string Restore() => Enabled ? "\u001b[0m" : "";
}
