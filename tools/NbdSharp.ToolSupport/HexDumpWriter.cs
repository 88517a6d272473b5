using System;
using System.IO;
using System.Numerics;
using System.Text;
using System.Threading;

namespace NbdSharp.Tools;

/// <summary>
/// Formats the dump exactly as libnbd's nbddump: lines of 16 bytes (offset, two groups of 8 hex bytes, the bytes
/// as ASCII between bars), a line that repeats the line before it collapsed into one marker line for the whole
/// repeat, except the first line of the dump and the last line of the export. Output is UTF-8 built in one
/// reusable buffer and written in large writes.
/// </summary>
public sealed class HexDumpWriter
{
    private const int LineBytes = 16;

    /// <summary>More than the longest line: every byte with a colour code in the hex and in the ASCII column.</summary>
    private const int MaxLineLength = 512;

    private static readonly byte[] s_hexDigits = "0123456789abcdef"u8.ToArray();
    private static readonly byte[] s_zeroLine = new byte[LineBytes];

    private readonly Stream _output;
    private readonly byte[] _buffer = new byte[256 * 1024];
    private readonly byte[] _lastLine = new byte[LineBytes];
    private readonly ulong _start;
    private readonly ulong _exportSize;
    private int _used;
    private bool _printedMarker;

    // Escape codes are empty when colour is off, so one path formats both.
    private readonly byte[] _offsetColour;
    private readonly byte[] _plainColour;
    private readonly byte[] _byteColour;
    private readonly byte[] _letterColour;
    private readonly byte[] _symbolColour;
    private readonly byte[] _restore;

    // Without colour the output stays ASCII, as libnbd's.
    private readonly byte[] _marker;
    private readonly byte[] _bar;
    private readonly byte[] _dot;

    private readonly Lock _outputLock = new();
    private bool _stopped;

    /// <summary>Creates the writer.</summary>
    /// <param name="output">Where the dump goes (stdout).</param>
    /// <param name="ansi">Whether to colour.</param>
    /// <param name="start">The offset of the first line: it is never collapsed.</param>
    /// <param name="exportSize">The export size: the line holding its last byte is never collapsed.</param>
    public HexDumpWriter(Stream output, Ansi ansi, ulong start, ulong exportSize)
    {
        _output = output;
        _start = start;
        _exportSize = exportSize;
        _offsetColour = Encode(ansi.Colour(Ansi.Green));
        _plainColour = Encode(ansi.Colour(Ansi.Grey));
        _byteColour = Encode(ansi.Colour(Ansi.BrightBlue));
        _letterColour = Encode(ansi.Colour(Ansi.BrightRed));
        _symbolColour = Encode(ansi.Colour(Ansi.BrightMagenta));
        _restore = Encode(ansi.Restore());
        _marker = Encode(ansi.Enabled ? "☆\n" : "*\n");
        _bar = Encode(ansi.Enabled ? "│" : "|");
        _dot = Encode(ansi.Enabled ? "·" : ".");
    }

    /// <summary>Dumps <paramref name="data"/>, read at <paramref name="offset"/>; only the last piece may end inside a line.</summary>
    public void WriteData(ulong offset, ReadOnlySpan<byte> data)
    {
        int whole = data.Length & ~(LineBytes - 1);
        for (int i = 0; i < whole; i += LineBytes)
            WriteLine(offset + (ulong)i, data.Slice(i, LineBytes), LineBytes);
        if (whole < data.Length)
            WritePartialLine(offset + (ulong)whole, data[whole..]);
    }

    /// <summary>Dumps <paramref name="length"/> zero bytes at <paramref name="offset"/> without visiting each line.</summary>
    public void WriteZeroes(ulong offset, ulong length)
    {
        WriteLine(offset, s_zeroLine, (int)Math.Min(LineBytes, length));
        // The line before is now zeroes, so every following line that may collapse does, up to the export's last line.
        ulong i = LineBytes;
        ulong collapsible = _exportSize > offset + LineBytes ? _exportSize - offset - LineBytes : 0;
        ulong stop = Math.Min(length, collapsible);
        if (i < stop)
        {
            WriteMarker();
            i += (stop - i + LineBytes - 1) & ~(ulong)(LineBytes - 1);
        }
        for (; i < length; i += LineBytes)
            WriteLine(offset + i, s_zeroLine, (int)Math.Min(LineBytes, length - i));
    }

    /// <summary>Writes out what is buffered.</summary>
    /// <exception cref="OutputClosedException">stdout was closed by its reader.</exception>
    /// <exception cref="ToolException">Writing failed otherwise.</exception>
    public void Flush()
    {
        if (_used == 0)
            return;
        lock (_outputLock)
        {
            try
            {
                if (!_stopped)
                    _output.Write(_buffer, 0, _used);
            }
            catch (IOException e) when (OutputClosedException.IsBrokenPipe(e))
            {
                _stopped = true;
                throw new OutputClosedException(e);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A full disk (/dev/full), or a closed stdout whose descriptor the runtime reused for a read-only
                // file: libnbd's nbddump loses the output and exits 0; say so instead.
                _stopped = true;
                throw new ToolException("write to stdout: " + e.Message, e);
            }
            finally
            {
                _used = 0;
            }
        }
    }

    /// <summary>
    /// On a signal: ends the current line and restores the terminal's colours, as libnbd's nbddump does, and writes
    /// nothing more. Gives up if the dump is stuck writing (a full pipe).
    /// </summary>
    public void Interrupt()
    {
        if (!_outputLock.TryEnter(TimeSpan.FromSeconds(1)))
            return;
        try
        {
            if (!_stopped)
            {
                _stopped = true;
                _output.Write("\n"u8);
                _output.Write(_restore);
                _output.Flush();
            }
        }
        catch (IOException)
        {
            // Nobody is reading any more: nothing to restore.
        }
        finally
        {
            _outputLock.Exit();
        }
    }

    private void WritePartialLine(ulong offset, ReadOnlySpan<byte> data)
    {
        // Compared as libnbd compares it: padded with zeroes to a whole line.
        Span<byte> line = stackalloc byte[LineBytes];
        line.Clear();
        data.CopyTo(line);
        WriteLine(offset, line, data.Length);
    }

    private void WriteLine(ulong offset, ReadOnlySpan<byte> line, int count)
    {
        bool repeat = offset > _start && offset + LineBytes < _exportSize && line.SequenceEqual(_lastLine);
        if (repeat)
        {
            WriteMarker();
            return;
        }
        _printedMarker = false;
        line.CopyTo(_lastLine);
        FormatLine(offset, line, count);
    }

    private void WriteMarker()
    {
        if (_printedMarker)
            return;
        _printedMarker = true;
        Reserve();
        _used = Put(_buffer, _used, _marker);
    }

    private void FormatLine(ulong offset, ReadOnlySpan<byte> line, int count)
    {
        Reserve();
        Span<byte> b = _buffer;
        int p = _used;
        p = Put(b, p, _offsetColour);
        p = PutOffset(b, p, offset);
        p = Put(b, p, _plainColour);
        b[p++] = (byte)':';
        b[p++] = (byte)' ';

        int j;
        for (j = 0; j < count; j++)
        {
            byte value = line[j];
            p = Put(b, p, value != 0 ? _byteColour : _plainColour);
            b[p++] = s_hexDigits[value >> 4];
            b[p++] = s_hexDigits[value & 15];
            b[p++] = (byte)' ';
            if (j == 7)
                b[p++] = (byte)' ';
        }
        p = Put(b, p, _plainColour);
        for (; j < LineBytes; j++)
        {
            b[p++] = (byte)' ';
            b[p++] = (byte)' ';
            b[p++] = (byte)' ';
            if (j == 7)
                b[p++] = (byte)' ';
        }

        p = Put(b, p, _bar);
        for (j = 0; j < count; j++)
        {
            byte value = line[j];
            if (char.IsAsciiLetterOrDigit((char)value))
            {
                p = Put(b, p, _letterColour);
                b[p++] = value;
            }
            else if (value is >= 0x20 and < 0x7f)
            {
                p = Put(b, p, _symbolColour);
                b[p++] = value;
            }
            else
            {
                p = Put(b, p, _plainColour);
                p = Put(b, p, _dot);
            }
        }
        p = Put(b, p, _plainColour);
        for (; j < LineBytes; j++)
            b[p++] = (byte)' ';
        p = Put(b, p, _bar);
        b[p++] = (byte)'\n';
        _used = Put(b, p, _restore);
    }

    /// <summary>The offset in lower-case hex, at least 10 digits (<c>%010x</c>).</summary>
    private static int PutOffset(Span<byte> b, int p, ulong offset)
    {
        int digits = Math.Max(10, (64 - BitOperations.LeadingZeroCount(offset) + 3) / 4);
        for (int k = digits - 1; k >= 0; k--)
        {
            b[p + k] = s_hexDigits[(int)(offset & 15)];
            offset >>= 4;
        }
        return p + digits;
    }

    private static int Put(Span<byte> b, int p, ReadOnlySpan<byte> text)
    {
        text.CopyTo(b[p..]);
        return p + text.Length;
    }

    private void Reserve()
    {
        if (_buffer.Length - _used < MaxLineLength)
            Flush();
    }

    private static byte[] Encode(string text) => Encoding.UTF8.GetBytes(text);
}
