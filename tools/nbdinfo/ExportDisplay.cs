using System;
using System.Collections.Generic;
using System.IO;

namespace NbdSharp.Tools.Info;

/// <summary>The description of one export: name, size, content, URI, contexts and flags (libnbd 1.14's layout).</summary>
internal sealed class ExportDisplay(InfoOptions options, Output output)
{
    /// <summary>How much of the start of the export file(1) is shown.</summary>
    private const int ContentProbeSize = 8192;

    /// <summary>Prints the export <paramref name="h"/> is set to; false (after one line on stderr) if the server refuses it.</summary>
    public bool Show(NbdHandle h, string? listedDescription, bool first, bool last)
    {
        // Learn about the export with NBD_OPT_INFO, or by going to transmission when the server has no INFO.
        if (h.AioIsNegotiating() && !TryInfoOrGo(h, out NbdException? refusal))
        {
            string name = h.GetExportName();
            string which = name.Length == 0 ? " for the default export" : " for export: " + name;
            string hint = options.ListAll ? "" : " (to list all exports on the server, use --list)";
            Console.Error.WriteLine("nbdinfo: " + refusal!.Message + which + hint);
            return false;
        }

        long size = h.GetSize();
        string? uri = options.Endpoint.Uri != null ? Try<string?>(h.GetUri, null) : null;
        string exportName = Try<string?>(h.GetCanonicalExportName, null) ?? h.GetExportName();
        string? description = listedDescription ?? Try<string?>(h.GetExportDescription, null);
        int rotational = Flag(h.IsRotational), readOnly = Flag(h.IsReadOnly);
        // Shown only where it can be true; libnbd 1.14 has no such line, and no Debian server has extended headers.
        int blockStatusPayload = h.GetExtendedHeadersNegotiated() ? Flag(h.CanBlockStatusPayload) : -1;
        var flags = new (string Name, int Value)[]
        {
            ("can_cache", Flag(h.CanCache)),
            ("can_df", Flag(h.CanDf)),
            ("can_fast_zero", Flag(h.CanFastZero)),
            ("can_flush", Flag(h.CanFlush)),
            ("can_fua", Flag(h.CanFua)),
            ("can_multi_conn", Flag(h.CanMultiConn)),
            ("can_trim", Flag(h.CanTrim)),
            ("can_zero", Flag(h.CanZero)),
        };
        var blockSizes = new (string Name, long Value)[]
        {
            ("block_size_minimum", Try(() => h.GetBlockSize(SizeKind.Minimum), 0)),
            ("block_size_preferred", Try(() => h.GetBlockSize(SizeKind.Preferred), 0)),
            ("block_size_maximum", Try(() => h.GetBlockSize(SizeKind.Maximum), 0)),
        };
        List<string>? contexts = ListContexts(h);
        // Last: reading the content moves the connection out of negotiation.
        string? content = options.ProbeContent ? ProbeContent(h, size) : null;
        string sizeText = HumanSize.Format((ulong)size, out bool human);
        if (!options.Json)
        {
            Output o = output;
            o.Colour(Ansi.BoldBlack).Write("export=").JsonString(exportName).Write(":\n");
            if (!string.IsNullOrEmpty(description))
                o.Write("\tdescription: ").Write(description).Write("\n");
            o.Write("\texport-size: ").Write(size).Write(human ? " (" + sizeText + ")\n" : "\n");
            if (content != null)
                o.Write("\tcontent: ").Write(content).Write("\n");
            if (uri != null)
                o.Write("\turi: ").Write(uri).Write("\n");
            o.Restore().Colour(Ansi.Grey);
            if (contexts != null)
            {
                o.Write("\tcontexts:\n");
                foreach (string context in contexts)
                    o.Write("\t\t").Write(context).Write("\n");
            }
            if (rotational >= 0)
                o.Write("\tis_rotational: ").Write(rotational != 0 ? "true" : "false").Write("\n");
            o.Restore();
            if (readOnly >= 0)
                o.Write("\tis_read_only: ").Write(readOnly != 0 ? "true" : "false").Write("\n");
            if (blockStatusPayload >= 0)
                Boolean("can_block_status_payload", blockStatusPayload != 0);
            foreach ((string name, int value) in flags)
            {
                if (value >= 0)
                    Boolean(name, value != 0);
            }
            foreach ((string name, long value) in blockSizes)
            {
                if (value > 0)
                    o.Write("\t").Write(name).Write(": ").Write(value).Write("\n");
            }
            return true;
        }

        Output j = output;
        if (first)
            j.Write("\"exports\": [\n");
        j.Write("\t{\n\t\"export-name\": ").JsonString(exportName).Write(",\n");
        if (!string.IsNullOrEmpty(description))
            j.Write("\t\"description\": ").JsonString(description).Write(",\n");
        if (content != null)
            j.Write("\t\"content\": ").JsonString(content).Write(",\n");
        if (uri != null)
            j.Write("\t\"uri\": ").JsonString(uri).Write(",\n");
        if (contexts != null)
        {
            j.Write("\t\"contexts\": [\n");
            for (int i = 0; i < contexts.Count; i++)
                j.Write("\t\t").JsonString(contexts[i]).Write(i + 1 != contexts.Count ? ",\n" : "\n");
            j.Write("\t],\n");
        }
        if (rotational >= 0)
            j.Write("\t\"is_rotational\": ").Write(rotational != 0 ? "true" : "false").Write(",\n");
        if (readOnly >= 0)
            j.Write("\t\"is_read_only\": ").Write(readOnly != 0 ? "true" : "false").Write(",\n");
        if (blockStatusPayload >= 0)
            j.Write("\t\"can_block_status_payload\": ").Write(blockStatusPayload != 0 ? "true" : "false").Write(",\n");
        foreach ((string name, int value) in flags)
        {
            if (value >= 0)
                j.Write("\t\"").Write(name).Write("\": ").Write(value != 0 ? "true" : "false").Write(",\n");
        }
        foreach ((string name, long value) in blockSizes)
        {
            if (value > 0)
                j.Write("\t\"").Write(name).Write("\": ").Write(value).Write(",\n");
        }
        // The size comes last, as in libnbd (no trailing comma to worry about).
        j.Write("\t\"export-size\": ").Write(size).Write(",\n");
        j.Write("\t\"export-size-str\": \"").Write(sizeText).Write("\"\n");
        j.Write(last ? "\t} ]\n" : "\t},\n");
        return true;
    }

    private static bool TryInfoOrGo(NbdHandle h, out NbdException? refusal)
    {
        refusal = null;
        try
        {
            h.OptInfo();
            return true;
        }
        catch (NbdException)
        {
            // Old servers have no NBD_OPT_INFO; going to transmission tells us the same.
        }
        try
        {
            h.OptGo();
            return true;
        }
        catch (NbdException e)
        {
            refusal = e;
            return false;
        }
    }

    private void Boolean(string name, bool value) =>
        output.Colour(value ? Ansi.Green : Ansi.Red).Write("\t").Write(name).Write(": ").Write(value ? "true" : "false").Write("\n").Restore();

    /// <summary>Every context the server offers for this export, or null when it cannot say (not negotiating).</summary>
    private static List<string>? ListContexts(NbdHandle h)
    {
        var contexts = new List<string>();
        try
        {
            h.OptListMetaContext(name =>
            {
                contexts.Add(name);
                return 0;
            });
            return contexts;
        }
        catch (NbdException)
        {
            return null;
        }
    }

    /// <summary>
    /// What file(1) says about the first 8 KiB of the export, or null when it cannot be read or file(1) is missing.
    /// </summary>
    private static string? ProbeContent(NbdHandle h, long size)
    {
        // The size is the one NBD_OPT_INFO gave, even where NBD_OPT_GO would tell more (nbd-server says 0 to INFO),
        // as libnbd 1.14 does.
        if (h.AioIsNegotiating())
            h.OptGo();
        byte[] start = new byte[(int)Math.Min(size, ContentProbeSize)];
        try
        {
            if (start.Length > 0)
                h.Pread(start, 0);
        }
        catch (NbdException)
        {
            return null;
        }
        string path = Path.Combine(Path.GetTempPath(), "nbdinfo-" + Path.GetRandomFileName());
        try
        {
            File.WriteAllBytes(path, start);
            return ChildOutput.FirstLine("file", "-b", path); // null without file(1): content is best effort
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static int Flag(Func<bool> query)
    {
        try
        {
            return query() ? 1 : 0;
        }
        catch (NbdException)
        {
            return -1;
        }
    }

    private static T Try<T>(Func<T> query, T fallback)
    {
        try
        {
            return query();
        }
        catch (NbdException)
        {
            return fallback;
        }
    }
}
