using System;
using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;
using System.IO;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// What every nbdsh script sees besides <c>using NbdSharp;</c>: the handle <c>h</c>, the script's arguments and the
/// shell's helpers. Its members are reachable without qualification (Roslyn's script globals).
/// </summary>
[SuppressMessage("Performance", "CA1822:Mark members as static", Justification = "Scripts reach the members of their globals object, not static ones.")]
public sealed class ShellGlobals
{
    /// <summary>Creates the globals of a session.</summary>
    /// <param name="handle">The implicit handle, or null with <c>-n</c>.</param>
    /// <param name="args">The words after the script file.</param>
    public ShellGlobals(NbdHandle? handle, IReadOnlyList<string> args)
    {
        h = handle;
        Args = args;
    }

    /// <summary>The implicit handle (null with <c>-n</c>; a script may assign its own).</summary>
    [SuppressMessage("Style", "IDE1006:Naming Styles", Justification = "libnbd's nbdsh calls its handle h, and so do its users' habits.")]
    [SuppressMessage("Naming", "CA1707", Justification = "libnbd's name.")]
    public NbdHandle? h { get; set; }

    /// <summary>The words after the script file on the command line (as <c>csi</c> gives them).</summary>
    public IReadOnlyList<string> Args { get; }

    /// <summary>Lists the calls of <see cref="NbdHandle"/>, grouped as libnbd's manual groups them.</summary>
    [SuppressMessage("Style", "IDE1006:Naming Styles", Justification = "A shell helper, typed as in libnbd's nbdsh (help()).")]
    public void help() => Console.Out.Write(HandleHelp.Overview());

    /// <summary>Shows the signatures and summary of the handle's calls named <paramref name="name"/> (e.g. "Pread").</summary>
    /// <param name="name">A member of <see cref="NbdHandle"/>.</param>
    [SuppressMessage("Style", "IDE1006:Naming Styles", Justification = "A shell helper.")]
    public void help(string name) => Console.Out.Write(HandleHelp.Describe(name));

    /// <summary>
    /// Prints <paramref name="data"/> as nbddump does: the offset, 16 bytes in hex, and the printable ones as text; a
    /// line repeating the one before it is shown as one <c>*</c> line.
    /// </summary>
    /// <param name="data">The bytes, e.g. a sector read with <c>h.Pread</c>.</param>
    /// <param name="offset">The offset the first byte has on the disk, for the left column.</param>
    [SuppressMessage("Style", "IDE1006:Naming Styles", Justification = "A shell helper.")]
    public void hexdump(ReadOnlySpan<byte> data, ulong offset = 0)
    {
        // nbddump's layout (and its colours on a terminal), through its writer.
        Console.Out.Flush();
        using Stream stdout = Console.OpenStandardOutput();
        var writer = new HexDumpWriter(stdout, new Ansi(!Console.IsOutputRedirected), offset, offset + (ulong)data.Length);
        writer.WriteData(offset, data);
        writer.Flush();
    }

    /// <summary>Prints the bytes of <paramref name="data"/> as <see cref="hexdump(ReadOnlySpan{byte}, ulong)"/> does.</summary>
    /// <param name="data">The bytes.</param>
    /// <param name="offset">The offset of the first byte.</param>
    [SuppressMessage("Style", "IDE1006:Naming Styles", Justification = "A shell helper.")]
    public void hexdump(byte[] data, ulong offset = 0) => hexdump(data.AsSpan(), offset);
}
