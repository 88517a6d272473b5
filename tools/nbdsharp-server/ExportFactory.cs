using System;
using System.Collections.Generic;
using System.Globalization;
using NbdSharp.Server;

namespace NbdSharp.Tools.Server;

/// <summary>
/// Turns <c>EXPORT [[KEY=]VALUE ...]</c> into a disk, as nbdkit reads a plugin's parameters: <c>key=value</c> words,
/// and one bare word for the plugin's "magic" key (the size, or the file).
/// </summary>
internal static class ExportFactory
{
    public static NbdExport Create(string plugin, IReadOnlyList<string> args, bool readOnly)
    {
        string magicKey = plugin == "file" ? "file" : "size";
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string arg in args)
        {
            int eq = arg.IndexOf('=', StringComparison.Ordinal);
            string key = eq > 0 && IsKey(arg.AsSpan(0, eq)) ? arg[..eq] : magicKey;
            string value = eq > 0 && IsKey(arg.AsSpan(0, eq)) ? arg[(eq + 1)..] : arg;
            if (!values.TryAdd(key, value))
                throw new ToolException(plugin + ": " + key + " given more than once");
        }

        NbdExport export = plugin switch
        {
            "memory" => new MemoryExport(Size(plugin, values, required: true)),
            "null" => new NullExport(Size(plugin, values, required: false)),
            "pattern" => new PatternExport(Size(plugin, values, required: true)),
            "sparse-random" => SparseRandom(values),
            "file" => File(values, readOnly),
            _ => throw new ToolException("unknown export type '" + plugin + "': expected memory, file, null, pattern or sparse-random"),
        };
        foreach (string key in values.Keys)
        {
            if (!Known(plugin, key))
            {
                export.Dispose();
                throw new ToolException(plugin + ": unknown parameter '" + key + "'");
            }
        }
        return readOnly && !export.IsReadOnly ? new ReadOnlyExport(export, ownsInner: true) : export;
    }

    private static bool IsKey(ReadOnlySpan<char> text)
    {
        foreach (char c in text)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('_' or '-' or '.'))
                return false;
        }
        return text.Length > 0 && char.IsAsciiLetter(text[0]);
    }

    private static bool Known(string plugin, string key) => plugin switch
    {
        "file" => key == "file",
        "sparse-random" => key is "size" or "seed" or "percent" or "runlength" or "random-content",
        _ => key == "size",
    };

    private static long Size(string plugin, Dictionary<string, string> values, bool required)
    {
        if (!values.TryGetValue("size", out string? text))
        {
            if (required)
                throw new ToolException(plugin + ": the size parameter is required (e.g. " + plugin + " 1G)");
            return 0;
        }
        if (!HumanSize.TryParse(text, out long size, out string error))
            throw new ToolException(plugin + ": " + error);
        return size;
    }

    private static SparseRandomExport SparseRandom(Dictionary<string, string> values)
    {
        long size = Size("sparse-random", values, required: true);
        ulong seed = values.TryGetValue("seed", out string? s)
            ? ulong.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out ulong parsed) ? parsed
                : throw new ToolException("sparse-random: could not parse seed: " + s)
            : (ulong)DateTime.UtcNow.Ticks;
        double percent = 10;
        if (values.TryGetValue("percent", out string? p) &&
            (!double.TryParse(p, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out percent) || percent is < 0 or > 100))
            throw new ToolException("sparse-random: percent must be between 0 and 100: " + p);
        long runLength = 16 << 20;
        if (values.TryGetValue("runlength", out string? r) && (!HumanSize.TryParse(r, out runLength, out _) || runLength < 1))
            throw new ToolException("sparse-random: runlength must be a positive size: " + r);
        bool randomContent = false;
        if (values.TryGetValue("random-content", out string? c))
        {
            randomContent = c switch
            {
                "true" or "on" or "yes" or "1" => true,
                "false" or "off" or "no" or "0" => false,
                _ => throw new ToolException("sparse-random: random-content must be true or false: " + c),
            };
        }
        try
        {
            return new SparseRandomExport(size, seed, percent, runLength, randomContent);
        }
        catch (ArgumentException e)
        {
            throw new ToolException(e.Message);
        }
    }

    private static FileExport File(Dictionary<string, string> values, bool readOnly)
    {
        if (!values.TryGetValue("file", out string? path) || path.Length == 0)
            throw new ToolException("file: the file parameter is required (e.g. file disk.img)");
        try
        {
            return new FileExport(path, readOnly);
        }
        catch (Exception e) when (e is System.IO.IOException or UnauthorizedAccessException)
        {
            throw new ToolException("file: " + path + ": " + e.Message);
        }
    }
}
