using System;
using System.Globalization;
using System.IO;
using System.Text;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// libnbd's progress display: with -p a bar with a spinner on stderr, redrawn in place; with --progress=FD one
/// "N/100" line per update on that descriptor (for programs that watch the copy).
/// </summary>
internal sealed class ProgressBar
{
    private static readonly string[] Spinner = ["▝", "▐", "▗", "▃", "▖", "▍", "▘", "▀"];
    private const int Width = 40;

    private readonly object _lock = new();
    private readonly int _fd;
    private readonly bool _lines;
    private bool _enabled;
    private int _spin;

    public ProgressBar(bool enabled, int fd)
    {
        _enabled = enabled;
        if (!enabled)
            return;
        _lines = fd >= 0;
        _fd = _lines ? fd : 2;
    }

    /// <summary>Shows <paramref name="position"/> of <paramref name="size"/>; a size of 0 shows nothing.</summary>
    public void Update(long position, long size)
    {
        if (!_enabled || size <= 0)
            return;
        lock (_lock)
        {
            if (!_enabled)
                return;
            double fraction = Math.Clamp((double)position / size, 0, 1);
            string text;
            if (_lines)
            {
                text = fraction == 1 ? "100/100\n" : ((int)(100 * fraction)).ToString(CultureInfo.InvariantCulture) + "/100\n";
            }
            else if (fraction == 1)
            {
                text = "█ 100% [" + new string('*', Width) + "]\n";
            }
            else
            {
                int stars = (int)Math.Ceiling(Width * fraction);
                text = Spinner[_spin] + " " + ((int)(100 * fraction)).ToString(CultureInfo.InvariantCulture).PadLeft(3) + "% [" +
                    new string('*', stars) + new string('-', Width - stars) + "]\r";
                _spin = (_spin + 1) % Spinner.Length;
            }
            if (fraction == 1)
                _enabled = false; // nothing after 100%
            WriteAll(Encoding.UTF8.GetBytes(text));
        }
    }

    /// <summary>write(2) at the descriptor's own position (the descriptor may be a shared file or a pipe); a
    /// reader that went away does not stop the copy, as libnbd ignores the result too.</summary>
    private unsafe void WriteAll(byte[] bytes)
    {
        if (!OperatingSystem.IsLinux())
        {
            // Elsewhere only the standard streams (--progress=FD names a descriptor, which is Linux's).
            using Stream stream = _fd == 1 ? Console.OpenStandardOutput() : Console.OpenStandardError();
            try
            {
                stream.Write(bytes);
            }
            catch (IOException)
            {
                // A reader that went away does not stop the copy.
            }
            return;
        }
        fixed (byte* start = bytes)
        {
            int done = 0;
            while (done < bytes.Length)
            {
                nint n = LibC.Write(_fd, start + done, (nuint)(bytes.Length - done));
                if (n <= 0)
                    return;
                done += (int)n;
            }
        }
    }
}
