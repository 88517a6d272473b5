using System;
using System.Diagnostics;
using System.Text.Json;

namespace NbdSharp.Testing;

/// <summary>
/// libnbd itself as the oracle: runs Debian's python3-libnbd (under /usr/bin/python3; the nbdsh on PATH is
/// broken here) against the same server and returns what it saw, to compare with NbdSharp's answers.
/// </summary>
public static class Libnbd
{
    private const string Script = """
import hashlib, json, sys, nbd
uri, offset, length, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
h = nbd.NBD()
if context:
    h.add_meta_context(context)
h.connect_uri(uri)
out = {
  "size": h.get_size(),
  "read_only": h.is_read_only(), "can_flush": h.can_flush(), "can_fua": h.can_fua(),
  "can_trim": h.can_trim(), "can_zero": h.can_zero(), "can_fast_zero": h.can_fast_zero(),
  "can_cache": h.can_cache(), "can_multi_conn": h.can_multi_conn(), "can_df": h.can_df(),
  "is_rotational": h.is_rotational(), "structured": h.get_structured_replies_negotiated(),
  "protocol": h.get_protocol(),
  "block_minimum": h.get_block_size(nbd.SIZE_MINIMUM), "block_preferred": h.get_block_size(nbd.SIZE_PREFERRED),
  "block_maximum": h.get_block_size(nbd.SIZE_MAXIMUM),
  "block_payload": h.get_block_size(nbd.SIZE_PAYLOAD) if hasattr(nbd, "SIZE_PAYLOAD") else None,
}
if length > 0:
    digest = hashlib.sha256()
    at = offset
    while at < offset + length:
        n = min(1 << 20, offset + length - at)
        digest.update(h.pread(n, at))
        at += n
    out["sha256"] = digest.hexdigest()
if context and length > 0:
    extents = []
    at = offset
    def cb(meta, off, entries, err):
        global at
        for i in range(0, len(entries), 2):
            extents.append([entries[i], entries[i + 1]])
            at += entries[i]
        return 0
    while at < offset + length:
        h.block_status(offset + length - at, at, cb)
    out["extents"] = extents
h.shutdown()
print(json.dumps(out))
""";

    /// <summary>What libnbd reports about the export at <paramref name="uri"/>, and the SHA-256 of a range and its extents.</summary>
    public static JsonElement Describe(string uri, ulong offset = 0, ulong length = 0, string context = "")
    {
        string stdout = Python(Script, uri, offset.ToString(System.Globalization.CultureInfo.InvariantCulture),
            length.ToString(System.Globalization.CultureInfo.InvariantCulture), context);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    /// <summary>Runs a python3-libnbd <paramref name="script"/> with <paramref name="args"/> as sys.argv[1:]; returns its stdout.</summary>
    public static string Python(string script, params string[] args)
    {
        string python = Requires.Program("/usr/bin/python3");
        var info = new ProcessStartInfo(python)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(script);
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException("python3-libnbd failed: " + stderr.GetAwaiter().GetResult());
        return stdout;
    }
}
