using System;
using System.Collections.Generic;
using System.Linq;
using System.Security.Cryptography;
using System.Text.Json;
using NbdSharp.Server;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests.Server;

/// <summary>
/// Debian's python3-libnbd (libnbd 1.14) driving every command, flag and option against NbdSharp's server. Each
/// script prints JSON that the test checks against what the export holds (read in-process) or against nbdkit.
/// </summary>
public class PythonLibnbdTests
{
    private const long MiB = 1 << 20;
    private const int Page = MemoryExport.PageSize;

    /// <summary>Helpers every script starts with: try_(f) returns "ok" (for nothing or bytes), a value, or the errno name of the failure.</summary>
    private const string Prelude = """
import errno, hashlib, json, sys, nbd
def try_(f):
    try:
        r = f()
        return "ok" if r is None or isinstance(r, (bytes, bytearray)) else r
    except nbd.Error as e:
        return errno.errorcode.get(e.errnum, str(e.errnum))
def sha(b):
    return hashlib.sha256(b).hexdigest()

""";

    private static JsonElement Run(string script, params string[] args) =>
        JsonDocument.Parse(Clients.Python(Prelude + script, args)).RootElement.Clone();

    private static string Sha(MemoryExport memory, long offset, int length)
    {
        byte[] buffer = new byte[length];
        memory.Read(offset, buffer);
        return Convert.ToHexStringLower(SHA256.HashData(buffer));
    }

    private static byte[] NonZero(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        for (int i = 0; i < data.Length; i++)
            data[i] |= 1;
        return data;
    }

    [Fact]
    public void Pread_WithAndWithoutStructuredReplies_ReadsWhatTheExportHolds()
    {
        const long size = 4 * MiB + 7;
        var memory = new MemoryExport(size);
        memory.Write(100_000, NonZero(300_000, 1));
        memory.Write(size - 5000, NonZero(5000, 2));
        using var server = TestServer.Start(memory);
        JsonElement result = Run("""
uri = sys.argv[1]
out = {}
for sr in (True, False):
    h = nbd.NBD()
    h.set_request_structured_replies(sr)
    h.connect_uri(uri)
    size = h.get_size()
    r = {"structured": h.get_structured_replies_negotiated(), "size": size}
    r["whole"] = sha(b"".join(h.pread(min(1 << 20, size - o), o) for o in range(0, size, 1 << 20)))
    r["unaligned"] = sha(h.pread(70001, 99999))
    r["tail"] = sha(h.pread(4093, size - 4093))
    r["last"] = list(h.pread(1, size - 1))
    r["hole"] = sha(h.pread(65536, 2 << 20))
    h.shutdown()
    out["sr" if sr else "simple"] = r
print(json.dumps(out))
""", server.Uri);
        Assert.True(result.GetProperty("sr").GetProperty("structured").GetBoolean());
        Assert.False(result.GetProperty("simple").GetProperty("structured").GetBoolean());
        foreach (string mode in new[] { "sr", "simple" })
        {
            JsonElement r = result.GetProperty(mode);
            Assert.Equal(size, r.GetProperty("size").GetInt64());
            Assert.Equal(Sha(memory, 0, (int)size), r.GetProperty("whole").GetString());
            Assert.Equal(Sha(memory, 99999, 70001), r.GetProperty("unaligned").GetString());
            Assert.Equal(Sha(memory, size - 4093, 4093), r.GetProperty("tail").GetString());
            Assert.Equal(Sha(memory, 2 * MiB, 65536), r.GetProperty("hole").GetString());
            byte[] last = new byte[1];
            memory.Read(size - 1, last);
            Assert.Equal(last[0], r.GetProperty("last")[0].GetByte());
        }
        Assert.Equal(1, server.Log.Count("with structured replies"));
        Assert.Equal(1, server.Log.Count("with simple replies"));
    }

    [Fact]
    public void PreadStructured_SeesHoleChunksForUnwrittenAreas_AndOneDataChunkWithDf()
    {
        var memory = new MemoryExport(MiB);
        byte[] a = NonZero(Page, 3);
        memory.Write(Page, a);                // page 1: data
        memory.Write(300_000, NonZero(10, 4)); // page 4: data
        using var server = TestServer.Start(memory);
        JsonElement result = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def collect(flags, count, offset):
    chunks = []
    def cb(subbuf, off, status, err):
        chunks.append([off, len(subbuf), status, sha(subbuf)])
        return 0
    buf = h.pread_structured(count, offset, cb, flags)
    chunks.sort()
    return {"chunks": chunks, "sha": sha(buf)}
print(json.dumps({
  "can_df": h.can_df(),
  "plain": collect(0, 512 * 1024, 0),
  "df": collect(nbd.CMD_FLAG_DF, 512 * 1024, 0),
  "inside_hole": collect(0, 1000, 500000),
  "inside_data": collect(0, 1000, 65536 + 10),
  "read_data": nbd.READ_DATA, "read_hole": nbd.READ_HOLE,
}))
h.shutdown()
""", server.Uri);
        Assert.True(result.GetProperty("can_df").GetBoolean());
        int data = result.GetProperty("read_data").GetInt32(), hole = result.GetProperty("read_hole").GetInt32();
        static List<(long Offset, long Length, int Status)> Chunks(JsonElement e) =>
            [.. e.GetProperty("chunks").EnumerateArray().Select(c => (c[0].GetInt64(), c[1].GetInt64(), c[2].GetInt32()))];

        JsonElement plain = result.GetProperty("plain");
        Assert.Equal(
            [(0L, (long)Page, hole), (Page, Page, data), (2L * Page, 2L * Page, hole), (4L * Page, Page, data), (5L * Page, 3L * Page, hole)],
            Chunks(plain));
        Assert.Equal(Sha(memory, 0, 512 * 1024), plain.GetProperty("sha").GetString());
        // The data chunk holds exactly page 1's bytes.
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(a)), plain.GetProperty("chunks")[1][3].GetString());

        JsonElement df = result.GetProperty("df");
        Assert.Equal([(0L, 512L * 1024, data)], Chunks(df));
        Assert.Equal(plain.GetProperty("sha").GetString(), df.GetProperty("sha").GetString());

        Assert.Equal([(500_000L, 1000L, hole)], Chunks(result.GetProperty("inside_hole")));
        Assert.Equal([(65546L, 1000L, data)], Chunks(result.GetProperty("inside_data")));
    }

    [Fact]
    public void WriteCommands_WithTheirFlags_ReachTheExport()
    {
        var export = new ConfigurableExport(8 * MiB);
        using var server = TestServer.Start(export);
        byte[] data = NonZero((int)MiB, 5);
        string dataFile = server.Directory.File("data.bin");
        System.IO.File.WriteAllBytes(dataFile, data);
        JsonElement result = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
M = 1 << 20
out = {}
out["flags"] = [h.can_fua(), h.can_flush(), h.can_trim(), h.can_zero(), h.can_fast_zero(), h.can_cache(), h.can_multi_conn()]
out["pwrite_fua"] = try_(lambda: h.pwrite(data, M, nbd.CMD_FLAG_FUA))
out["flush"] = try_(lambda: h.flush())
out["read_back"] = sha(h.pread(M, M)) == sha(data)
out["trim_fua"] = try_(lambda: h.trim(65536, M, nbd.CMD_FLAG_FUA))
out["zero_no_hole"] = try_(lambda: h.zero(65536, M + 65536, nbd.CMD_FLAG_NO_HOLE))
out["zero_fast"] = try_(lambda: h.zero(65536, M + 2 * 65536, nbd.CMD_FLAG_FAST_ZERO))
out["zero_fua"] = try_(lambda: h.zero(100, M + 3 * 65536 + 7, nbd.CMD_FLAG_FUA))
out["cache"] = try_(lambda: h.cache(M, 0))
out["zeroed"] = h.pread(3 * 65536, M) == bytes(3 * 65536)
out["after"] = sha(h.pread(M, M))
out["pwrite_unaligned"] = try_(lambda: h.pwrite(b"\x01\x02\x03", 6 * M + 1))
h.shutdown()
print(json.dumps(out))
""", server.Uri, dataFile);
        Assert.Equal(Enumerable.Repeat(true, 7), result.GetProperty("flags").EnumerateArray().Select(e => e.GetBoolean()));
        foreach (string op in new[] { "pwrite_fua", "flush", "trim_fua", "zero_no_hole", "zero_fast", "zero_fua", "cache", "pwrite_unaligned" })
            Assert.True(result.GetProperty(op).GetString() == "ok", op + ": " + result.GetProperty(op));
        Assert.True(result.GetProperty("read_back").GetBoolean());
        Assert.True(result.GetProperty("zeroed").GetBoolean());
        Assert.Equal(Sha(export.Inner, MiB, (int)MiB), result.GetProperty("after").GetString());
        // The export holds the data with the three zeroed pages and 100 zero bytes inside the fourth.
        Array.Clear(data, 0, 3 * Page);
        Array.Clear(data, 3 * Page + 7, 100);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), Sha(export.Inner, MiB, (int)MiB));
        byte[] three = new byte[3];
        export.Inner.Read(6 * MiB + 1, three);
        Assert.Equal(new byte[] { 1, 2, 3 }, three);
        // Three write-zeroes reached ZeroAsync (none fell back to writes), one of them fast.
        Assert.Equal(3, export.ZeroCalls);
        Assert.Equal(1, export.FastZeroCalls);
        Assert.Equal(2, export.WriteCalls);
    }

    /// <summary>
    /// An export without ZeroAsync: write-zeroes is still advertised (the server writes zeroes itself) and works, but a
    /// fast zero fails with ENOTSUP, as proto.md asks, without touching the data.
    /// </summary>
    [Fact]
    public void FastZero_OnAnExportWithoutZero_FailsWithEnotsup()
    {
        var export = new ConfigurableExport(2 * MiB) { Zero = false };
        export.Inner.Write(0, NonZero((int)MiB, 6));
        using var server = TestServer.Start(export);
        JsonElement result = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
out = {"can_zero": h.can_zero(), "can_fast_zero": h.can_fast_zero()}
out["fast"] = try_(lambda: h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO))
out["intact"] = h.pread(65536, 0) != bytes(65536)
out["slow"] = try_(lambda: h.zero(65536 + 3, 5))
out["zeroed"] = h.pread(65536 + 3, 5) == bytes(65536 + 3)
h.shutdown()
print(json.dumps(out))
""", server.Uri);
        Assert.True(result.GetProperty("can_zero").GetBoolean());
        Assert.True(result.GetProperty("can_fast_zero").GetBoolean());
        Assert.Equal("ENOTSUP", result.GetProperty("fast").GetString());
        Assert.True(result.GetProperty("intact").GetBoolean());
        Assert.Equal("ok", result.GetProperty("slow").GetString());
        Assert.True(result.GetProperty("zeroed").GetBoolean());
        Assert.Equal(0, export.ZeroCalls);
        Assert.True(export.WriteCalls >= 1);
        byte[] back = new byte[65536 + 3];
        export.Inner.Read(5, back);
        Assert.All(back, b => Assert.Equal(0, b));
    }

    [Fact]
    public void BlockStatus_WithAndWithoutReqOne()
    {
        var memory = new MemoryExport(2 * MiB + 1000);
        memory.Write(3 * Page + 5, NonZero(2 * Page, 7)); // pages 3..5
        memory.Write(2 * MiB + 10, NonZero(3, 8));          // the last, partial page
        using var server = TestServer.Start(memory);
        JsonElement result = Run("""
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
size = h.get_size()
def status(count, offset, flags=0):
    got = []
    def cb(meta, off, entries, err):
        got.append({"meta": meta, "offset": off, "entries": list(entries)})
        return 0
    h.block_status(count, offset, cb, flags)
    return got
print(json.dumps({
  "can_meta": h.can_meta_context("base:allocation"),
  "all": status(size, 0),
  "one": status(size, 0, nbd.CMD_FLAG_REQ_ONE),
  "one_in_data": status(size - 4 * 65536, 4 * 65536, nbd.CMD_FLAG_REQ_ONE),
  "small": status(1000, 100),
  "tail": status(500, size - 500),
}))
h.shutdown()
""", server.Uri);
        Assert.True(result.GetProperty("can_meta").GetBoolean());
        static (string Meta, long Offset, uint[] Entries) One(JsonElement e)
        {
            JsonElement c = Assert.Single(e.EnumerateArray());
            return (c.GetProperty("meta").GetString()!, c.GetProperty("offset").GetInt64(),
                [.. c.GetProperty("entries").EnumerateArray().Select(x => x.GetUInt32())]);
        }
        var all = One(result.GetProperty("all"));
        Assert.Equal("base:allocation", all.Meta);
        Assert.Equal(0, all.Offset);
        Assert.Equal(new uint[] { 3 * Page, 3, 3 * Page, 0, 32 * Page - 6 * Page, 3, 1000, 0 }, all.Entries);
        Assert.Equal(new uint[] { 3 * Page, 3 }, One(result.GetProperty("one")).Entries);
        Assert.Equal(new uint[] { 2 * Page, 0 }, One(result.GetProperty("one_in_data")).Entries);
        Assert.Equal(new uint[] { 1000, 3 }, One(result.GetProperty("small")).Entries);
        Assert.Equal(new uint[] { 500, 0 }, One(result.GetProperty("tail")).Entries);
    }

    [Fact]
    public void OptMode_ListInfoMetaContextsGo_AndExportNames()
    {
        using var server = TestServer.Start(null,
            new ExportSpec("a", new MemoryExport(MiB), "disk a"),
            new ExportSpec("b", new PatternExport(2 * MiB), "disk b", IsDefault: true),
            new ExportSpec("c", new NullExport(3 * MiB)));
        JsonElement result = Run("""
sock = sys.argv[1]
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_unix(sock)
out = {"negotiating": h.aio_is_negotiating(), "protocol": h.get_protocol()}
exports = []
out["list_count"] = h.opt_list(lambda name, desc: exports.append([name, desc]) or 0)
out["exports"] = exports
h.set_full_info(True)
h.set_export_name("b")
out["info_b"] = try_(lambda: h.opt_info())
out["b"] = {"size": h.get_size(), "ro": h.is_read_only(), "desc": h.get_export_description(),
            "canonical": h.get_canonical_export_name(), "min": h.get_block_size(nbd.SIZE_MINIMUM)}
contexts = []
out["meta_count"] = h.opt_list_meta_context(lambda name: contexts.append(name) or 0)
out["contexts"] = contexts
h.set_export_name("nope")
out["info_nope"] = try_(lambda: h.opt_info())
out["go_nope"] = try_(lambda: h.opt_go())
out["still_negotiating"] = h.aio_is_negotiating()
h.set_export_name("a")
h.add_meta_context("base:allocation")
out["go_a"] = try_(lambda: h.opt_go())
out["a"] = {"size": h.get_size(), "ro": h.is_read_only(), "desc": h.get_export_description(),
            "meta": h.can_meta_context("base:allocation")}
h.pwrite(b"hi", 10)
out["read"] = h.pread(2, 10).decode()
h.shutdown()
# The empty name is the default export, b.
d = nbd.NBD()
d.connect_uri("nbd+unix:///?socket=" + sock)
out["default_size"] = d.get_size()
d.shutdown()
# An unknown name in a URI fails the connection.
u = nbd.NBD()
out["unknown_uri"] = try_(lambda: u.connect_uri("nbd+unix:///nope?socket=" + sock))
print(json.dumps(out))
""", server.Socket);
        Assert.True(result.GetProperty("negotiating").GetBoolean());
        Assert.Equal("newstyle-fixed", result.GetProperty("protocol").GetString());
        Assert.Equal(3, result.GetProperty("list_count").GetInt32());
        Assert.Equal([["a", "disk a"], ["b", "disk b"], ["c", ""]],
            result.GetProperty("exports").EnumerateArray().Select(e => e.EnumerateArray().Select(s => s.GetString()!).ToArray()));
        Assert.Equal("ok", result.GetProperty("info_b").GetString());
        JsonElement b = result.GetProperty("b");
        Assert.Equal(2 * MiB, b.GetProperty("size").GetInt64());
        Assert.True(b.GetProperty("ro").GetBoolean());
        Assert.Equal("disk b", b.GetProperty("desc").GetString());
        Assert.Equal("b", b.GetProperty("canonical").GetString());
        Assert.Equal(1, b.GetProperty("min").GetInt32());
        Assert.Equal(1, result.GetProperty("meta_count").GetInt32());
        Assert.Equal(["base:allocation"], result.GetProperty("contexts").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("ENOENT", result.GetProperty("info_nope").GetString());
        Assert.Equal("ENOENT", result.GetProperty("go_nope").GetString());
        Assert.True(result.GetProperty("still_negotiating").GetBoolean());
        Assert.Equal("ok", result.GetProperty("go_a").GetString());
        JsonElement a = result.GetProperty("a");
        Assert.Equal(MiB, a.GetProperty("size").GetInt64());
        Assert.False(a.GetProperty("ro").GetBoolean());
        Assert.Equal("disk a", a.GetProperty("desc").GetString());
        Assert.True(a.GetProperty("meta").GetBoolean());
        Assert.Equal("hi", result.GetProperty("read").GetString());
        Assert.Equal(2 * MiB, result.GetProperty("default_size").GetInt64());
        Assert.Equal("ENOENT", result.GetProperty("unknown_uri").GetString());
    }

    /// <summary>
    /// A read-only export: libnbd refuses writes itself (EPERM) unless strict mode is off; then the server refuses
    /// them with EPERM, as nbdkit does. Both servers are asked the same things.
    /// </summary>
    [Fact]
    public void ReadOnly_RefusesWritesWithEperm_LikeNbdkit()
    {
        const string script = """
h = nbd.NBD()
h.connect_uri(sys.argv[1])
out = {"ro": h.is_read_only()}
for strict in ("default", "off"):
    if strict == "off":
        h.set_strict_mode(0)
    out[strict] = {
        "write": try_(lambda: h.pwrite(b"x" * 512, 0)),
        "write_fua": try_(lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA)),
        "trim": try_(lambda: h.trim(512, 0)),
        "zero": try_(lambda: h.zero(512, 0)),
        "read": try_(lambda: len(h.pread(512, 0))),
        "cache": try_(lambda: h.cache(512, 0)),
    }
h.shutdown()
print(json.dumps(out))
""";
        using var server = TestServer.Start(new ReadOnlyExport(new MemoryExport(MiB), ownsInner: true));
        using ServerProcess nbdkit = Peers.Nbdkit("-r", "memory", "1M");
        JsonElement ours = Run(script, server.Uri);
        JsonElement theirs = Run(script, nbdkit.Uri);
        Assert.True(ours.GetProperty("ro").GetBoolean());
        JsonElement off = ours.GetProperty("off");
        Assert.Equal("EPERM", off.GetProperty("write").GetString());
        Assert.Equal("EPERM", off.GetProperty("trim").GetString());
        Assert.Equal("EPERM", off.GetProperty("zero").GetString());
        Assert.Equal(512, off.GetProperty("read").GetInt32());
        Assert.Equal("ok", off.GetProperty("cache").GetString());
        Assert.True(server.Log.Count("the export is read-only") >= 3, server.Log.ToString());
        // nbdkit checks read-only before flags: a FUA write to a read-only export is EPERM there.
        Assert.Equal(theirs.GetProperty("default").GetRawText(), ours.GetProperty("default").GetRawText());
        Assert.Equal(theirs.GetProperty("off").GetRawText(), off.GetRawText());
    }

    /// <summary>
    /// Requests past the end, of zero length, with flags on the wrong command and too large, sent with libnbd's strict
    /// mode off so that they reach the server: the errors are nbdkit's (EINVAL for reads, ENOSPC for writes past the
    /// end), over structured and simple replies. Zero-length writes and write-zeroes are the one difference: nbdkit
    /// says ENOSPC, NbdSharp EINVAL (proto.md leaves zero-length requests unspecified).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void InvalidRequests_WithStrictModeOff_GetNbdkitsErrors(bool structured)
    {
        using var server = TestServer.Start(new MemoryExport(MiB));
        using ServerProcess nbdkit = Peers.Nbdkit("memory", "1M");
        JsonElement ours = Probe(server.Uri, structured);
        JsonElement theirs = Probe(nbdkit.Uri, structured);
        Assert.Equal(structured, ours.GetProperty("structured").GetBoolean());
        var expected = new Dictionary<string, string>
        {
            ["read_past_end"] = "EINVAL", ["read_at_end"] = "EINVAL", ["read_far"] = "EINVAL", ["read_zero_len"] = "EINVAL",
            ["write_past_end"] = "ENOSPC", ["write_at_end"] = "ENOSPC", ["zero_past_end"] = "ENOSPC",
            ["trim_past_end"] = "EINVAL", ["cache_past_end"] = "EINVAL", ["trim_zero_len"] = "EINVAL",
            ["write_zero_len"] = "EINVAL", ["zero_zero_len"] = "EINVAL",
            ["read_no_hole_flag"] = "EINVAL", ["write_req_one"] = "EINVAL", ["trim_fast_zero"] = "EINVAL", ["zero_df"] = "EINVAL",
            ["read_too_big"] = "EINVAL", ["write_too_big"] = "ENOSPC",
            ["read_unaligned"] = "ok", ["write_unaligned"] = "ok", ["trim_unaligned"] = "ok", ["flush"] = "ok",
        };
        if (structured)
        {
            expected["bs_past_end"] = "EINVAL";
            expected["bs_zero_len"] = "EINVAL";
            expected["bs_at_end"] = "EINVAL";
        }
        foreach (var (op, errno) in expected)
            Assert.True(errno == ours.GetProperty(op).GetString(), $"{op}: expected {errno}, got {ours.GetProperty(op)}");
        foreach (JsonProperty p in theirs.EnumerateObject())
        {
            // nbdkit's memory plugin advertises no block sizes.
            if (p.Name is "write_zero_len" or "zero_zero_len" or "min" or "preferred" or "max")
                continue;
            Assert.True(p.Value.GetRawText() == ours.GetProperty(p.Name).GetRawText(),
                $"{p.Name}: nbdkit {p.Value.GetRawText()}, ours {ours.GetProperty(p.Name).GetRawText()}");
        }
    }

    /// <summary>
    /// An export whose minimum block size is 512: libnbd (strict mode off) sends unaligned requests anyway and the
    /// server refuses each with EINVAL, as nbdkit's blocksize-policy filter with blocksize-error-policy=error does;
    /// aligned requests and the export's unaligned tail work.
    /// </summary>
    [Fact]
    public void UnalignedRequests_ToA512ByteBlockExport_FailWithEinval_LikeNbdkit()
    {
        var export = new ConfigurableExport(4 * MiB) { Blocks = new ExportBlockSize(512, 4096, (uint)MiB) };
        using var server = TestServer.Start(export);
        using ServerProcess nbdkit = Peers.Nbdkit("--filter=blocksize-policy", "memory", "4M", "blocksize-minimum=512",
            "blocksize-preferred=4096", "blocksize-maximum=1M", "blocksize-error-policy=error");
        JsonElement ours = Probe(server.Uri, structured: true);
        JsonElement theirs = Probe(nbdkit.Uri, structured: true);
        foreach (string op in new[] { "read_unaligned", "read_unaligned_length", "write_unaligned", "zero_unaligned", "trim_unaligned",
            "cache_unaligned", "bs_unaligned", "write_too_big" })
            Assert.True(ours.GetProperty(op).GetString() == "EINVAL", $"{op}: {ours.GetProperty(op)}");
        Assert.Equal("ok", ours.GetProperty("read_aligned").GetString());
        Assert.Equal("ok", ours.GetProperty("write_aligned").GetString());
        Assert.Equal(512, ours.GetProperty("min").GetInt32());
        Assert.Equal(4096, ours.GetProperty("preferred").GetInt32());
        Assert.Equal(MiB, ours.GetProperty("max").GetInt64());
        foreach (JsonProperty p in theirs.EnumerateObject())
        {
            if (p.Name is "write_zero_len" or "zero_zero_len")
                continue;
            Assert.True(p.Value.GetRawText() == ours.GetProperty(p.Name).GetRawText(),
                $"{p.Name}: nbdkit {p.Value.GetRawText()}, ours {ours.GetProperty(p.Name).GetRawText()}");
        }

        // libnbd with strict mode on refuses them itself; with STRICT_ALIGN only, too.
        JsonElement strict = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
a = try_(lambda: h.pread(512, 100))
h.set_strict_mode(nbd.STRICT_ALIGN)
b = try_(lambda: h.pwrite(b"x" * 100, 0))
print(json.dumps([a, b]))
""", server.Uri);
        Assert.Equal(["EINVAL", "EINVAL"], strict.EnumerateArray().Select(e => e.GetString()));
    }

    /// <summary>
    /// A client that does not ask for block sizes cannot use an export that needs aligned requests: NBD_OPT_GO gets
    /// NBD_REP_ERR_BLOCK_SIZE_REQD (libnbd fails the connection); NBD_OPT_INFO still describes it.
    /// </summary>
    [Fact]
    public void Go_WithoutBlockSizeRequest_ToA512ByteBlockExport_IsRefused()
    {
        var export = new ConfigurableExport(MiB) { Blocks = new ExportBlockSize(512, 4096, (uint)MiB) };
        using var server = TestServer.Start(export);
        JsonElement result = Run("""
h = nbd.NBD()
h.set_request_block_size(False)
h.set_opt_mode(True)
h.connect_uri(sys.argv[1])
info = try_(lambda: h.opt_info())
size = h.get_size()
go = try_(lambda: h.opt_go())
g = nbd.NBD()
g.connect_uri(sys.argv[1])
print(json.dumps({"info": info, "size": size, "go": go, "with_request": g.get_block_size(nbd.SIZE_MINIMUM)}))
""", server.Uri);
        Assert.Equal("ok", result.GetProperty("info").GetString());
        Assert.Equal(MiB, result.GetProperty("size").GetInt64());
        Assert.NotEqual("ok", result.GetProperty("go").GetString());
        Assert.Equal(512, result.GetProperty("with_request").GetInt32());
        Assert.True(server.Log.Count("needs requests aligned to 512") >= 1, server.Log.ToString());
    }

    [Fact]
    public void Shutdown_CompletesRequestsInFlight_ThenTheServerClosesTheConnection()
    {
        var memory = new MemoryExport(16 * MiB);
        memory.Write(0, NonZero((int)(16 * MiB), 9));
        using var server = TestServer.Start(memory);
        JsonElement result = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
bufs = [nbd.Buffer(1 << 20) for i in range(16)]
cookies = [h.aio_pread(bufs[i], i << 20) for i in range(16)]
h.shutdown()
done = [h.aio_command_completed(c) for c in cookies]
print(json.dumps({"done": done, "sha": sha(b"".join(b.to_bytearray() for b in bufs))}))
""", server.Uri);
        Assert.All(result.GetProperty("done").EnumerateArray(), d => Assert.True(d.GetBoolean()));
        Assert.Equal(Sha(memory, 0, (int)(16 * MiB)), result.GetProperty("sha").GetString());
        Assert.True(server.Log.WaitFor("closed: the client disconnected", TimeSpan.FromSeconds(10)), server.Log.ToString());
        DateTime deadline = DateTime.UtcNow.AddSeconds(10);
        while (server.Server.ConnectionCount != 0 && DateTime.UtcNow < deadline)
            System.Threading.Thread.Yield();
        Assert.Equal(0, server.Server.ConnectionCount);
    }

    /// <summary>
    /// NBD_OPT_LIST_META_CONTEXT with libnbd's queries, asked of our server and of nbdkit: the same contexts come back
    /// for every well-formed query (exact, the "base:" wildcard, other namespaces, wrong case, none at all), and
    /// NBD_OPT_SET_META_CONTEXT (through opt_go) selects base:allocation only when asked for by its full name.
    /// </summary>
    [Fact]
    public void MetaContextQueries_ListAndSet_LikeNbdkit()
    {
        const string script = """
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(sys.argv[1])
out = {}
for q in ["base:", "base:allocation", "qemu:dirty-bitmap:x", "base:foo", "BASE:allocation", "base:allocation2", None]:
    h.clear_meta_contexts()
    if q is not None:
        h.add_meta_context(q)
    got = []
    n = try_(lambda: h.opt_list_meta_context(lambda c: got.append(c) or 0))
    out[q or "(none)"] = [n, got]
h.clear_meta_contexts()
h.add_meta_context("qemu:dirty-bitmap:x")
h.add_meta_context("base:allocation")
out["go"] = try_(lambda: h.opt_go())
out["selected"] = [h.can_meta_context("base:allocation"), h.can_meta_context("qemu:dirty-bitmap:x")]
entries = []
h.block_status(65536, 0, lambda meta, off, e, err: entries.append([meta, list(e)]) or 0)
out["status"] = entries
h.shutdown()
print(json.dumps(out))
""";
        using var server = TestServer.Start(new MemoryExport(MiB));
        using ServerProcess nbdkit = Peers.Nbdkit("memory", "1M");
        JsonElement ours = Run(script, server.Uri);
        JsonElement theirs = Run(script, nbdkit.Uri);
        Assert.Equal("[1,[\"base:allocation\"]]", ours.GetProperty("base:").GetRawText().Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal("[0,[]]", ours.GetProperty("qemu:dirty-bitmap:x").GetRawText().Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal("[true,false]", ours.GetProperty("selected").GetRawText().Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal("[[\"base:allocation\",[65536,3]]]", ours.GetProperty("status").GetRawText().Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal(theirs.GetRawText(), ours.GetRawText());
    }

    /// <summary>
    /// Requests at and over the advertised 32 MiB maximum (strict mode off): 32 MiB reads and writes work; a larger read
    /// is EINVAL (EOVERFLOW with DF, as proto.md suggests) and the connection goes on; a larger write carries more
    /// payload than the server will skip, so it closes the connection, which proto.md permits past 32 MiB. (nbdkit 1.32
    /// advertises no maximum and serves both up to 64 MiB.)
    /// </summary>
    [Fact]
    public void OversizedRequests_PastTheAdvertisedMaximum()
    {
        using var server = TestServer.Start(new MemoryExport(128 * MiB));
        JsonElement result = Run("""
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.set_strict_mode(0)
M = 1 << 20
out = {"max": h.get_block_size(nbd.SIZE_MAXIMUM)}
out["w32"] = try_(lambda: h.pwrite(b"\x07" * (32 * M), 0))
out["r32"] = try_(lambda: h.pread(32 * M, 0) == b"\x07" * (32 * M))
out["r33"] = try_(lambda: h.pread(33 * M, 0))
out["r33df"] = try_(lambda: h.pread(33 * M, 0, nbd.CMD_FLAG_DF))
out["after_reads"] = try_(lambda: h.pread(512, 0))
out["w33"] = try_(lambda: h.pwrite(b"x" * (33 * M), 0))
out["dead"] = h.aio_is_dead() or h.aio_is_closed()
print(json.dumps(out))
""", server.Uri);
        Assert.Equal(32 * MiB, result.GetProperty("max").GetInt64());
        Assert.Equal("ok", result.GetProperty("w32").GetString());
        Assert.True(result.GetProperty("r32").GetBoolean());
        Assert.Equal("EINVAL", result.GetProperty("r33").GetString());
        Assert.Equal("EOVERFLOW", result.GetProperty("r33df").GetString());
        Assert.Equal("ok", result.GetProperty("after_reads").GetString());
        Assert.NotEqual("ok", result.GetProperty("w33").GetString());
        Assert.True(result.GetProperty("dead").GetBoolean());
        Assert.True(server.Log.WaitFor("is larger than the maximum", TimeSpan.FromSeconds(10)), server.Log.ToString());
    }

    private const string ProbeScript = """
h = nbd.NBD()
h.set_request_structured_replies(sys.argv[2] == "1")
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
h.set_strict_mode(0)
size = h.get_size()
cb = lambda *a: 0
ops = {
 "read_past_end": lambda: h.pread(512, size - 256),
 "read_at_end": lambda: h.pread(1, size),
 "read_far": lambda: h.pread(1, 1 << 62),
 "read_zero_len": lambda: h.pread(0, 0),
 "write_past_end": lambda: h.pwrite(b"x" * 512, size - 256),
 "write_zero_len": lambda: h.pwrite(b"", 0),
 "write_at_end": lambda: h.pwrite(b"x", size),
 "zero_past_end": lambda: h.zero(512, size - 256),
 "zero_zero_len": lambda: h.zero(0, 0),
 "trim_past_end": lambda: h.trim(512, size - 256),
 "trim_zero_len": lambda: h.trim(0, 0),
 "cache_past_end": lambda: h.cache(512, size - 256),
 "read_aligned": lambda: h.pread(1024, 512),
 "write_aligned": lambda: h.pwrite(b"a" * 1024, 512),
 "read_unaligned": lambda: h.pread(512, 100),
 "read_unaligned_length": lambda: h.pread(100, 0),
 "write_unaligned": lambda: h.pwrite(b"y" * 512, 100),
 "zero_unaligned": lambda: h.zero(100, 512),
 "trim_unaligned": lambda: h.trim(512, 100),
 "cache_unaligned": lambda: h.cache(100, 0),
 "read_too_big": lambda: h.pread(2 << 20, 0),
 "write_too_big": lambda: h.pwrite(b"z" * (2 << 20), 0),
 "read_no_hole_flag": lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE),
 "write_req_one": lambda: h.pwrite(b"a" * 512, 0, nbd.CMD_FLAG_REQ_ONE),
 "trim_fast_zero": lambda: h.trim(512, 0, nbd.CMD_FLAG_FAST_ZERO),
 "zero_df": lambda: h.zero(512, 0, nbd.CMD_FLAG_DF),
 "flush": lambda: h.flush(),
}
if h.get_structured_replies_negotiated():
    ops["bs_past_end"] = lambda: h.block_status(512, size - 256, cb)
    ops["bs_zero_len"] = lambda: h.block_status(0, 0, cb)
    ops["bs_at_end"] = lambda: h.block_status(1, size, cb)
    ops["bs_unaligned"] = lambda: h.block_status(100, 0, cb)
out = {k: try_(f) for k, f in ops.items()}
out["structured"] = h.get_structured_replies_negotiated()
out["min"] = h.get_block_size(nbd.SIZE_MINIMUM)
out["preferred"] = h.get_block_size(nbd.SIZE_PREFERRED)
out["max"] = h.get_block_size(nbd.SIZE_MAXIMUM)
h.shutdown()
print(json.dumps(out))
""";

    private static JsonElement Probe(string uri, bool structured) => Run(ProbeScript, uri, structured ? "1" : "0");
}
