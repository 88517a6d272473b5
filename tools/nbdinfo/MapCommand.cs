using System;
using System.Collections.Generic;
using System.Globalization;

namespace NbdSharp.Tools.Info;

/// <summary>
/// --map[=CONTEXT] and --map --totals: the export's extents for one metadata context, neighbours of the same type
/// merged, or the bytes and share of each type.
/// </summary>
internal sealed class MapCommand(NbdHandle h, InfoOptions options, Output output)
{
    /// <summary>
    /// The largest block status request sent. Replies cover what the server chooses, so the cap changes nothing in
    /// the output; it keeps clear of nbdkit 1.32.5, which dies on a request of 4 GiB - 1 (CVE-2025-47711).
    /// </summary>
    private const ulong RequestCap = 1UL << 31;

    private readonly string _context = options.Map!;
    private readonly SortedDictionary<uint, ulong> _totals = [];
    private bool _runOpen;
    private ulong _runStart;
    private ulong _runLength;
    private uint _runType;
    private bool _jsonComma;

    public void Run()
    {
        if (h.AioIsNegotiating())
            h.OptGo();
        if (!h.CanMetaContext(_context))
            throw new ToolException("--map: server does not support metadata context \"" + _context + "\"");
        ulong size = (ulong)h.GetSize();
        ulong align = (ulong)Math.Max(h.GetBlockSize(SizeKind.Minimum), 512);
        ulong cap = RequestCap / align * align;

        if (options.Json && !options.Totals)
            output.Write("[\n");
        ulong offset = 0;
        while (offset < size)
        {
            ulong covered = 0;
            h.BlockStatus64(Math.Min(size - offset, cap), offset, (string context, ulong _, ReadOnlySpan<NbdExtent> entries, ref int _) =>
            {
                if (!string.Equals(context, _context, StringComparison.Ordinal))
                    return 0;
                foreach (NbdExtent extent in entries)
                {
                    Add(extent.Length, (uint)extent.Flags);
                    covered += extent.Length;
                }
                return 0;
            });
            // The library refuses empty and zero-length extents, so covered > 0 unless the server sent none for this context.
            if (covered == 0)
                throw new ToolException("--map: server did not return any extents");
            offset += covered;
        }
        if (options.Totals)
        {
            PrintTotals(size);
            return;
        }
        if (_runOpen)
            PrintExtent(_runStart, _runLength, _runType);
        if (options.Json)
            output.Write("\n]\n");
    }

    /// <summary>Extends the current run of one type, or prints it and starts the next.</summary>
    private void Add(ulong length, uint type)
    {
        if (options.Totals)
        {
            _totals[type] = _totals.GetValueOrDefault(type) + length;
            return;
        }
        if (_runOpen && type == _runType)
        {
            _runLength += length;
            return;
        }
        if (_runOpen)
            PrintExtent(_runStart, _runLength, _runType);
        _runStart = _runOpen ? _runStart + _runLength : 0;
        _runLength = length;
        _runType = type;
        _runOpen = true;
    }

    private void PrintExtent(ulong offset, ulong length, uint type)
    {
        (string? description, string? foreground, string? background) = Describe(type);
        if (options.Json)
        {
            if (_jsonComma)
                output.Write(",\n");
            _jsonComma = true;
            output.Write("{ \"offset\": ").Write(Number(offset)).Write(", \"length\": ").Write(Number(length))
                .Write(", \"type\": ").Write(type);
            if (description != null)
                output.Write(", \"description\": ").JsonString(description);
            output.Write("}");
            return;
        }
        Colours(foreground, background);
        output.Write(Number(offset).PadLeft(10)).Write("  ").Write(Number(length).PadLeft(10)).Write("  ")
            .Write(type.ToString(CultureInfo.InvariantCulture).PadLeft(3));
        if (description != null)
            output.Write("  ").Write(description);
        if (foreground != null || background != null)
            output.Restore();
        output.Write("\n");
    }

    private void PrintTotals(ulong size)
    {
        if (size == 0)
        {
            if (options.Json)
                output.Write("[]\n");
            return;
        }
        if (options.Json)
            output.Write("[\n");
        bool comma = false;
        foreach ((uint type, ulong bytes) in _totals)
        {
            double percent = 100.0 * bytes / size;
            (string? description, string? foreground, string? background) = Describe(type);
            if (options.Json)
            {
                if (comma)
                    output.Write(",\n");
                comma = true;
                output.Write("{ \"size\": ").Write(Number(bytes)).Write(", \"percent\": ").Write(CFormat.G(percent))
                    .Write(", \"type\": ").Write(type);
                if (description != null)
                    output.Write(", \"description\": ").JsonString(description);
                output.Write(" }");
                continue;
            }
            Colours(foreground, background);
            output.Write(Number(bytes).PadLeft(10)).Write(" ")
                .Write(percent.ToString("F1", CultureInfo.InvariantCulture).PadLeft(5)).Write("% ")
                .Write(type.ToString(CultureInfo.InvariantCulture).PadLeft(3));
            if (description != null)
                output.Write(" ").Write(description);
            if (foreground != null || background != null)
                output.Restore();
            output.Write("\n");
        }
        if (options.Json)
            output.Write("\n]\n");
    }

    private void Colours(string? foreground, string? background)
    {
        if (foreground != null)
            output.Colour(foreground);
        if (background != null)
            output.Colour(background);
    }

    /// <summary>What a type means in the mapped context, and the colours libnbd's nbdinfo shows it in.</summary>
    private (string? Description, string? Foreground, string? Background) Describe(uint type)
    {
        if (_context == MetaContext.BaseAllocation)
        {
            return type switch
            {
                0 => ("data", Ansi.BoldBlack, null),
                1 => ("hole", null, null),
                2 => ("zero", null, null),
                3 => ("hole,zero", null, null),
                _ => (null, null, null),
            };
        }
        if (_context.StartsWith(MetaContext.QemuDirtyBitmap, StringComparison.Ordinal))
        {
            return type switch
            {
                0 => ("clean", Ansi.Green, null),
                1 => ("dirty", Ansi.Red, null),
                _ => (null, null, null),
            };
        }
        if (_context == MetaContext.QemuAllocationDepth)
        {
            return type switch
            {
                0 => ("absent", null, null),
                1 => ("local", BrightWhite, BlackBackground),
                _ => ("backing depth " + type.ToString(CultureInfo.InvariantCulture), null, LightGreyBackground),
            };
        }
        return (null, null, null);
    }

    private const string BrightWhite = "1;37";
    private const string BlackBackground = "40";
    private const string LightGreyBackground = "47";

    private static string Number(ulong value) => value.ToString(CultureInfo.InvariantCulture);
}
