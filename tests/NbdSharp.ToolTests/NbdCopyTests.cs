using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// nbdcopy as a process: every kind of source into every kind of destination, the result compared byte for byte
/// with what libnbd's nbdcopy makes of the same source; sparseness, the option logic (compared through -v), errors
/// from the server (nbdkit's error filter), a server that dies, and bad command lines.
/// </summary>
public class NbdCopyTests
{
    private static ToolResult Ours(params string[] args) => ToolProcess.RunOurs("nbdcopy", args);

    private static ToolResult Shell(string script) =>
        ToolProcess.Run("/bin/sh", ["-c", script], TimeSpan.FromSeconds(120));

    private static string OursPath => ToolProcess.Ours("nbdcopy");

    private static string LibnbdPath => ToolProcess.Libnbd("nbdcopy");

    /// <summary>What an export holds, read with the library.</summary>
    private static byte[] Contents(string uri)
    {
        using var h = new NbdHandle();
        h.ConnectUri(uri);
        byte[] data = new byte[h.GetSize()];
        const int chunk = 1 << 20;
        for (int offset = 0; offset < data.Length; offset += chunk)
            h.Pread(data.AsSpan(offset, Math.Min(chunk, data.Length - offset)), (ulong)offset);
        return data;
    }

    private static void AssertSame(byte[] expected, byte[] actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes, expected {expected.Length}");
        int mismatch = expected.AsSpan().CommonPrefixLength(actual);
        Assert.True(mismatch == expected.Length, $"{what}: first difference at byte {mismatch}");
    }

    private static void Succeeds(ToolResult result)
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal("", result.Stderr);
    }

    /// <summary>Source exports (nbdkit arguments) for the matrix.</summary>
    public static TheoryData<string> Sources() => new(SourceExports.Keys);

    private static readonly Dictionary<string, string[]> SourceExports = new()
    {
        ["pattern"] = ["pattern", "5M"],
        ["sparse-random"] = ["sparse-random", "64M", "seed=11"],
        ["data"] = ["data", "1 2 3 @0x100000 65 66 67 @0x2ffff0 (0x55)*16", "size=3M"],
        ["odd-size"] = ["data", "@1000 (1 2 3 4 5)*300", "size=1234567"],
        ["empty"] = ["memory", "0"],
        ["null"] = ["null", "8M"],
        ["noextents"] = ["--filter=noextents", "sparse-random", "16M", "seed=5"],
        ["blocksize"] = ["--filter=blocksize", "pattern", "3M", "minblock=512", "maxdata=65536"],
        ["cacheextents"] = ["--filter=cacheextents", "sparse-random", "32M", "seed=9", "percent=50"],
    };

    /// <summary>
    /// I1: sizes on either side of a sector and of a request, NBD to NBD, with several connections and in the
    /// synchronous copy: the destination reads back byte for byte equal to the source.
    /// </summary>
    [Theory]
    [InlineData(1L)]
    [InlineData(511L)]
    [InlineData(513L)]
    [InlineData((1L << 20) + 1)]
    [InlineData((32L << 20) + 513)]
    public void OddSizes_NbdToNbd_ReadBackEqual(long size)
    {
        string bytes = size.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using ServerProcess source = Peers.Nbdkit("-r", "random", bytes, "seed=7");
        byte[] expected = Contents(source.Uri);
        foreach (string[] options in new[] { new[] { "-C", "4", "--request-size=65536" }, ["--synchronous"] })
        {
            using ServerProcess destination = Peers.Nbdkit("memory", bytes);
            Succeeds(Ours([.. options, source.Uri, destination.Uri]));
            AssertSame(expected, Contents(destination.Uri), $"{size} bytes with {string.Join(' ', options)}");
        }
    }

    /// <summary>
    /// The synchronous copy asks for extents once per 128 MiB, not once per request as libnbd's does: a sparse source
    /// of 200 MiB + 513 bytes takes two block-status requests, its data and holes arrive whole, and requests keep to
    /// the --request-size grid.
    /// </summary>
    [Fact]
    public void Synchronous_SparseSource_ExtentsPerWorkUnit()
    {
        const string size = "209715713";
        using var dir = new TempDirectory();
        string log = dir.File("source.log");
        using ServerProcess source = Peers.Nbdkit(ServerLog.Filter, "-r", "sparse-random", size, "seed=5", "percent=30", ServerLog.Parameter(log));
        using ServerProcess destination = Peers.Nbdkit(ServerLog.Filter, "memory", size, ServerLog.Parameter(dir.File("destination.log")));
        Succeeds(Ours("--synchronous", "--request-size=65536", source.Uri, destination.Uri));
        AssertSame(Contents(source.Uri), Contents(destination.Uri), "the copy");
        string[] requests = File.ReadAllLines(log);
        Assert.Equal(2, requests.Count(line => line.Contains(" Extents id=", StringComparison.Ordinal) && line.Contains(" count=", StringComparison.Ordinal)));
        foreach (string line in File.ReadAllLines(dir.File("destination.log")))
        {
            Match write = Regex.Match(line, @" Write id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+)");
            if (!write.Success)
                continue;
            long offset = Convert.ToInt64(write.Groups[1].Value, 16);
            long count = Convert.ToInt64(write.Groups[2].Value, 16);
            Assert.True(count <= 65536 && offset / 65536 == (offset + count - 1) / 65536, line);
        }
    }

    /// <summary>
    /// I1: a sparse 4 GiB + 1 disk (offsets past 32 bits, a last request of one byte): copied into a sparse memory
    /// export, its blkhash (over every byte, holes included) equals the source's, and libnbd's nbdcopy agrees
    /// that the two exports hold the same bytes.
    /// </summary>
    [Fact]
    public void Sparse4GiBPlusOne_NbdToNbd_SameBlockHash()
    {
        const string size = "4294967297";
        using ServerProcess source = Peers.Nbdkit("-r", "sparse-random", size, "seed=13", "percent=1");
        using ServerProcess destination = Peers.Nbdkit("memory", size);
        Succeeds(Ours(source.Uri, destination.Uri));
        ToolResult sourceHash = Ours("--blkhash=sha256", source.Uri, "null:");
        ToolResult destinationHash = Ours("--blkhash=sha256", destination.Uri, "null:");
        Succeeds(sourceHash);
        Succeeds(destinationHash);
        Assert.Equal(65, sourceHash.Stdout.Length);
        Assert.Equal(sourceHash.Stdout, destinationHash.Stdout);
        // libnbd's own comparison: nbdcopy of the destination into a checkwrite of the source fails on any
        // difference.
        using ServerProcess check = Peers.Nbdkit("--filter=checkwrite", "sparse-random", size, "seed=13", "percent=1");
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", destination.Uri, check.Uri));
    }

    [Theory]
    [MemberData(nameof(Sources))]
    public void NbdToFile_SameAsLibnbd(string source)
    {
        using ServerProcess server = Peers.Nbdkit(["-r", .. SourceExports[source]]);
        using var dir = new TempDirectory();
        Succeeds(Ours(server.Uri, dir.File("ours.img")));
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", server.Uri, dir.File("ref.img")));
        AssertSame(File.ReadAllBytes(dir.File("ref.img")), File.ReadAllBytes(dir.File("ours.img")), source);
        AssertSame(Contents(server.Uri), File.ReadAllBytes(dir.File("ours.img")), source + " vs the export");
    }

    [Theory]
    [MemberData(nameof(Sources))]
    public void NbdToNbd_SameAsTheSource(string source)
    {
        using ServerProcess from = Peers.Nbdkit(["-r", .. SourceExports[source]]);
        long size;
        using (var h = new NbdHandle())
        {
            h.ConnectUri(from.Uri);
            size = h.GetSize();
        }
        // A destination full of data, so that zeroes have to be written (or zeroed) rather than skipped.
        using ServerProcess to = Peers.Nbdkit("pattern", size.ToString(CultureInfo.InvariantCulture), "--filter=cow");
        Succeeds(Ours(from.Uri, to.Uri));
        AssertSame(Contents(from.Uri), Contents(to.Uri), source);
    }

    /// <summary>
    /// Every kind of source into every kind of destination; with <paramref name="portable"/> through what macOS and
    /// Windows run (local files and pipes through .NET's own calls, the portable data path, Socket.Select), which
    /// NBDSHARP_PORTABLE_SOCKETS=1 selects here.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EveryKindOfSource_IntoEveryKindOfDestination(bool portable)
    {
        string env = portable ? "export NBDSHARP_PORTABLE_SOCKETS=1; " : "";
        using ServerProcess server = Peers.Nbdkit("-r", "data", "1 2 3 @0x40000 (7 8 9)*5000 @0x1f0000 (0xaa)*4096", "size=2M");
        byte[] expected = Contents(server.Uri);
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("source.img"), expected);
        string sourceFile = dir.File("source.img");
        string q(string path) => "'" + path + "'";

        var sources = new Dictionary<string, string>
        {
            ["uri"] = server.Uri,
            ["file"] = q(sourceFile),
            ["stdin"] = "- < " + q(sourceFile),
            ["pipe"] = "- ",
            ["command"] = "-- [ nbdkit -r --exit-with-parent data '1 2 3 @0x40000 (7 8 9)*5000 @0x1f0000 (0xaa)*4096' size=2M ]",
        };
        foreach ((string sourceName, string sourceArgs) in sources)
        {
            string prefix = sourceName == "pipe" ? "cat " + q(sourceFile) + " | " : "";
            string sourceWords = sourceName is "uri" ? q(sourceArgs) : sourceArgs;

            // A file (new), stdout into a pipe, and null:.
            string output = dir.File(sourceName + ".out");
            string script = sourceName == "command"
                ? $"{prefix}{q(OursPath)} {sourceWords.Replace(" ]", " ] " + q(output), StringComparison.Ordinal)}"
                : $"{prefix}{q(OursPath)} {SourceFirst(sourceWords, q(output))}";
            Succeeds(Shell(env + script));
            AssertSame(expected, File.ReadAllBytes(output), sourceName + " -> file");

            string piped = dir.File(sourceName + ".piped");
            script = sourceName == "command"
                ? $"{q(OursPath)} {sourceWords.Replace(" ]", " ] -", StringComparison.Ordinal)} | cat > {q(piped)}"
                : $"{prefix}{q(OursPath)} {SourceFirst(sourceWords, "-")} | cat > {q(piped)}";
            Succeeds(Shell(env + script));
            AssertSame(expected, File.ReadAllBytes(piped), sourceName + " -> stdout");

            script = sourceName == "command"
                ? $"{q(OursPath)} {sourceWords.Replace(" ]", " ] null:", StringComparison.Ordinal)}"
                : $"{prefix}{q(OursPath)} {SourceFirst(sourceWords, "null:")}";
            Succeeds(Shell(env + script));

            using ServerProcess destination = Peers.Nbdkit("memory", "2M");
            script = sourceName == "command"
                ? $"{q(OursPath)} {sourceWords.Replace(" ]", " ] " + q(destination.Uri), StringComparison.Ordinal)}"
                : $"{prefix}{q(OursPath)} {SourceFirst(sourceWords, q(destination.Uri))}";
            Succeeds(Shell(env + script));
            AssertSame(expected, Contents(destination.Uri), sourceName + " -> nbd");
        }
    }

    /// <summary>"SRC DST" for ordinary sources; for "- &lt; file" the redirection goes last.</summary>
    private static string SourceFirst(string source, string destination)
    {
        int redirect = source.IndexOf(" < ", StringComparison.Ordinal);
        return redirect < 0 ? source + " " + destination : source[..redirect] + " " + destination + source[redirect..];
    }

    /// <summary>
    /// What macOS and Windows run: the library's portable data path, and nbdcopy's event loop waiting through
    /// Socket.Select instead of poll(2) (NBDSHARP_PORTABLE_SOCKETS=1 selects both here), with two connections
    /// between two servers.
    /// </summary>
    [Fact]
    public void PortablePaths_CopyBetweenServers()
    {
        using ServerProcess source = Peers.Nbdkit("-r", "sparse-random", "64M", "seed=21", "percent=40");
        using ServerProcess destination = Peers.Nbdkit("memory", "64M");
        var portable = new Dictionary<string, string> { ["NBDSHARP_PORTABLE_SOCKETS"] = "1" };
        ToolResult result = ToolProcess.Run(ToolProcess.Ours("nbdcopy"), ["-C", "2", source.Uri, destination.Uri], environment: portable);
        Succeeds(result);
        AssertSame(Contents(source.Uri), Contents(destination.Uri), "portable copy");
    }

    [Fact]
    public void IntoAServerRunBySocketActivation()
    {
        using var dir = new TempDirectory();
        string image = dir.File("disk.raw");
        using (FileStream f = File.Create(image))
            f.SetLength(3 << 20);
        using ServerProcess source = Peers.Nbdkit("-r", "sparse-random", "3M", "seed=4", "percent=30");
        Succeeds(Ours(source.Uri, "[", "qemu-nbd", "-f", "raw", image, "]"));
        AssertSame(Contents(source.Uri), File.ReadAllBytes(image), "qemu-nbd destination");
    }

    /// <summary>A loop device as destination and as source (block devices keep their size and are never
    /// truncated; their zeroes go through fallocate or BLKZEROOUT).</summary>
    [Fact]
    public void BlockDevice_AsDestinationAndSource()
    {
        using var dir = new TempDirectory();
        string backing = dir.File("backing.img");
        using (FileStream f = File.Create(backing))
            f.SetLength(8 << 20);
        File.WriteAllBytes(backing, Enumerable.Repeat((byte)0x5a, 8 << 20).ToArray());
        string? losetup = Requires.Find("losetup") ?? Requires.Find("/usr/sbin/losetup") ?? Requires.Find("/sbin/losetup");
        ToolResult attach = losetup == null ? new ToolResult(-1, "", "no losetup")
            : ToolProcess.Run(losetup, ["-f", "--show", backing]);
        if (attach.ExitCode != 0)
            Assert.Skip("no loop device can be attached here (needs root and /dev/loop-control): " + attach.Stderr.Trim());
        string device = attach.Stdout.Trim();
        try
        {
            // 6 MiB into the 8 MiB device: data, holes zeroed, the last 2 MiB untouched.
            using ServerProcess source = Peers.Nbdkit("-r", "data", "(1 2 3 4)*1000 @0x300000 (9)*70000", "size=6M");
            Succeeds(Ours(source.Uri, device));
            byte[] expected = Contents(source.Uri);
            byte[] written = File.ReadAllBytes(device);
            Assert.Equal(8 << 20, written.Length);
            AssertSame(expected, written[..expected.Length], "block device destination");
            Assert.All(written[expected.Length..], b => Assert.Equal(0x5a, b));

            Succeeds(Ours(device, dir.File("from-device.img")));
            AssertSame(written, File.ReadAllBytes(dir.File("from-device.img")), "block device source");
        }
        finally
        {
            ToolProcess.Run(losetup!, ["-d", device]);
        }
    }

    /// <summary>Both directions over TLS (the TLS connection is polled by its own thread), multi-conn and not.</summary>
    [Fact]
    public void OverTls_BothWays()
    {
        using var files = new TlsFiles();
        using ServerProcess plain = Peers.Nbdkit("-r", "sparse-random", "24M", "seed=2", "percent=40");
        using ServerProcess tls = Peers.Nbdkit("--tls=require", "--tls-certificates=" + files.ServerDirectory, "memory", "24M");
        string uri = $"nbds+unix:///?socket={tls.Socket}&tls-certificates={files.TrustOnlyDirectory}";
        byte[] expected = Contents(plain.Uri);
        using var dir = new TempDirectory();
        foreach (string connections in new[] { "1", "4" })
        {
            Succeeds(Ours("-C", connections, plain.Uri, uri));
            Succeeds(Ours("-C", connections, uri, dir.File("back.img")));
            AssertSame(expected, File.ReadAllBytes(dir.File("back.img")), "over TLS with -C " + connections);
        }
    }

    [Fact]
    public void QemuNbdQcow2AndNbdServer_AsSources()
    {
        using ServerProcess qcow2 = Peers.QemuNbd("qcow2", QemuImages.WithBitmap, "-r");
        using ServerProcess nbdServer = Peers.NbdServer("disk", d =>
        {
            string file = d.File("disk.img");
            byte[] data = new byte[1 << 20];
            new Random(3).NextBytes(data);
            File.WriteAllBytes(file, data);
            return file;
        });
        using var dir = new TempDirectory();
        foreach ((string name, string uri) in new[] { ("qcow2", qcow2.Uri), ("nbd-server", nbdServer.UriFor("disk")) })
        {
            Succeeds(Ours(uri, dir.File(name + ".ours")));
            Succeeds(ToolProcess.RunLibnbd("nbdcopy", uri, dir.File(name + ".ref")));
            AssertSame(File.ReadAllBytes(dir.File(name + ".ref")), File.ReadAllBytes(dir.File(name + ".ours")), name);
        }
    }

    /// <summary>
    /// I3: qemu-nbd (structured replies, raw and qcow2) and nbd-server (simple replies only) as destinations: a
    /// random 3 MiB + 513 bytes with a zero run in it, copied in, reads back equal (qemu-nbd's image is rounded up
    /// to a whole sector, whose tail must stay zero).
    /// </summary>
    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    [InlineData("nbd-server")]
    public void QemuNbdAndNbdServer_AsDestinations_ReadBackEqual(string kind)
    {
        const long size = (3L << 20) + 513;
        string bytes = size.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using ServerProcess source = Peers.Nbdkit("-r", "random", bytes, "seed=21");
        byte[] expected = Contents(source.Uri);
        expected.AsSpan(1 << 20, 300_000).Clear();
        using ServerProcess writable = Peers.Nbdkit("memory", bytes);
        using (var h = new NbdHandle())
        {
            h.ConnectUri(writable.Uri);
            h.Pwrite(expected, 0);
        }
        Func<TempDirectory, string> emptyImage = dir =>
        {
            string image = dir.File("disk." + kind);
            if (kind == "qcow2")
                Peers.Run("qemu-img", "create", "-q", "-f", "qcow2", image, bytes);
            else
                File.WriteAllBytes(image, new byte[size]);
            return image;
        };
        using ServerProcess destination = kind == "nbd-server"
            ? Peers.NbdServer("disk", emptyImage)
            : Peers.QemuNbd(kind, emptyImage);
        string uri = kind == "nbd-server" ? destination.UriFor("disk") : destination.Uri;
        Succeeds(Ours(writable.Uri, uri));
        // qemu-nbd rounds the image up to whole sectors; the rest stays zero.
        byte[] copied = Contents(uri);
        Assert.True(copied.Length >= size && copied.Length < size + 512, $"{kind}: {copied.Length} bytes");
        AssertSame(expected, copied[..(int)size], kind);
        Assert.True(copied.AsSpan((int)size).IndexOfAnyExcept((byte)0) < 0, kind + ": the rounding tail is not zero");
    }

    [Fact]
    public void SparseFileOutput_AllocatesWhatLibnbdAllocates()
    {
        // 10% data: holes come from block status; the zero blocks inside data extents from --sparse detection.
        using ServerProcess server = Peers.Nbdkit("-r", "data", "@0x100000 (1)*4096 (0)*65536 (2)*4096 @0x800000 (3)*100", "size=16M");
        using var dir = new TempDirectory();
        Succeeds(Ours(server.Uri, dir.File("ours.img")));
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", server.Uri, dir.File("ref.img")));
        AssertSame(File.ReadAllBytes(dir.File("ref.img")), File.ReadAllBytes(dir.File("ours.img")), "sparse");
        long ours = AllocatedBytes(dir.File("ours.img"));
        long reference = AllocatedBytes(dir.File("ref.img"));
        Assert.Equal(reference, ours);
        Assert.True(ours < 1 << 20, $"{ours} bytes allocated for 16 MiB that is mostly holes");

        // --allocated into a fresh file: the file was just sized, so it already reads as zeroes and (as with
        // libnbd) nothing needs zeroing; into NBD, the zero requests must not punch holes (NBD_CMD_FLAG_NO_HOLE).
        Succeeds(Ours("--allocated", server.Uri, dir.File("alloc.img")));
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", "--allocated", server.Uri, dir.File("allocref.img")));
        Assert.Equal(AllocatedBytes(dir.File("allocref.img")), AllocatedBytes(dir.File("alloc.img")));
        AssertSame(File.ReadAllBytes(dir.File("ref.img")), File.ReadAllBytes(dir.File("alloc.img")), "--allocated");
        string log = dir.File("zero.log");
        using (ServerProcess destination = Peers.Nbdkit("--filter=log", "memory", "16M", "logfile=" + log))
        {
            Succeeds(Ours("--allocated", server.Uri, destination.Uri));
            string[] zeroes = File.ReadAllLines(log).Where(l => l.Contains(" Zero id=", StringComparison.Ordinal)).ToArray();
            Assert.NotEmpty(zeroes);
            Assert.All(zeroes, l => Assert.Contains(" trim=0 ", l, StringComparison.Ordinal));
            AssertSame(File.ReadAllBytes(dir.File("ref.img")), Contents(destination.Uri), "--allocated into nbd");
        }
        string log2 = dir.File("zero2.log");
        using (ServerProcess destination = Peers.Nbdkit("--filter=log", "memory", "16M", "logfile=" + log2))
        {
            Succeeds(Ours(server.Uri, destination.Uri));
            Assert.Contains(File.ReadAllLines(log2), l => l.Contains(" Zero id=", StringComparison.Ordinal) && l.Contains(" trim=1 ", StringComparison.Ordinal));
        }

        // -S 0: no detection in data, so the zero run inside the data extent is written.
        Succeeds(Ours("-S", "0", server.Uri, dir.File("s0.img")));
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", "-S", "0", server.Uri, dir.File("s0ref.img")));
        Assert.Equal(AllocatedBytes(dir.File("s0ref.img")), AllocatedBytes(dir.File("s0.img")));
    }

    /// <summary>A sparse source file whose data runs cross the 128 MiB work ranges: its holes, found with
    /// SEEK_DATA/SEEK_HOLE (and the data run SEEK_HOLE walked remembered across ranges), stay holes. With -S 0 nothing
    /// looks inside the data, so a hole taken for data would be written and allocated.</summary>
    [Fact]
    public void SparseFileSource_HolesAcrossWorkRanges_StayHoles()
    {
        using var dir = new TempDirectory();
        string source = dir.File("source.img");
        using (var stream = new FileStream(source, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength(400L << 20);
            foreach ((long offset, int length, byte value) in new[] { (0L, 1 << 20, (byte)0x11), (127L << 20, 2 << 20, (byte)0x22), (300L << 20, 4096, (byte)0x33) })
            {
                stream.Position = offset;
                stream.Write(Enumerable.Repeat(value, length).ToArray());
            }
        }
        Assert.Equal("0-1048576 133169152-135266304 314572800-314576896", DataRuns(source));
        // Data is written in whole requests (the 4 KiB run as 256 KiB), as libnbd writes it.
        Succeeds(ToolProcess.RunLibnbd("nbdcopy", "-S", "0", source, dir.File("ref.img")));
        string reference = DataRuns(dir.File("ref.img"));
        Assert.Equal("0-1048576 133169152-135266304 314572800-314834944", reference);
        foreach (string connections in new[] { "1", "4" })
        {
            string ours = dir.File("ours" + connections + ".img");
            Succeeds(Ours("-S", "0", "-C", connections, source, ours));
            Assert.Equal("", Peers.Run("cmp", source, ours));
            Assert.Equal(reference, DataRuns(ours));
        }
    }

    /// <summary>A file's data runs as SEEK_DATA/SEEK_HOLE see them, "start-end" in bytes (the file system's own
    /// blocks, which the allocated size counts too, left out).</summary>
    private static string DataRuns(string path) => Peers.Run("python3", "-c",
        "import os,sys\n" +
        "fd=os.open(sys.argv[1],os.O_RDONLY); o=0; r=[]\n" +
        "while True:\n" +
        "  try: d=os.lseek(fd,o,os.SEEK_DATA)\n" +
        "  except OSError: break\n" +
        "  o=os.lseek(fd,d,os.SEEK_HOLE); r.append('%d-%d'%(d,o))\n" +
        "print(' '.join(r))\n", path).Trim();

    private static long AllocatedBytes(string path)
    {
        string blocks = Peers.Run("stat", "-c", "%b %B", path).Trim();
        string[] parts = blocks.Split(' ');
        return long.Parse(parts[0], CultureInfo.InvariantCulture) * long.Parse(parts[1], CultureInfo.InvariantCulture);
    }

    [Fact]
    public void ExistingFile_IsTruncatedToTheSourceSize()
    {
        using ServerProcess server = Peers.Nbdkit("-r", "pattern", "1M");
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("old.img"), Enumerable.Repeat((byte)0xee, 3 << 20).ToArray());
        Succeeds(Ours(server.Uri, dir.File("old.img")));
        AssertSame(Contents(server.Uri), File.ReadAllBytes(dir.File("old.img")), "truncated file");
    }

    [Fact]
    public void DestinationIsZero_SkipsTheZeroes_AsLibnbd()
    {
        // The destination holds pattern data; with --destination-is-zero the holes of the source are not written,
        // so the pattern stays there. Both tools must leave the same bytes behind.
        using ServerProcess source = Peers.Nbdkit("-r", "data", "@0x10000 (1 2 3)*1000", "size=1M");
        foreach (string flag in new[] { "--destination-is-zero", "--target-is-zero" })
        {
            using ServerProcess ours = Peers.Nbdkit("--filter=cow", "pattern", "1M");
            using ServerProcess reference = Peers.Nbdkit("--filter=cow", "pattern", "1M");
            Succeeds(Ours(flag, source.Uri, ours.Uri));
            Succeeds(ToolProcess.RunLibnbd("nbdcopy", flag, source.Uri, reference.Uri));
            byte[] result = Contents(ours.Uri);
            AssertSame(Contents(reference.Uri), result, flag);
            Assert.Equal(8, result[15]); // the destination's own pattern (offset 8, big-endian) was left alone
        }
    }

    [Fact]
    public void ZeroDetection_KeepsBlocksWhoseDataStartsLate()
    {
        // Each 4 KiB block is looked at whole: data past its first eight bytes, or in its last byte only, is data.
        using ServerProcess source = Peers.Nbdkit("-r", "data",
            "(0)*8 (1) (0)*4087 (0)*4095 (2) (0)*4096 (3) (0)*4095 (0)*4088 (4) (0)*7", "size=64K");
        using ServerProcess destination = Peers.Nbdkit("memory", "64K");
        Succeeds(Ours(source.Uri, destination.Uri));
        byte[] copied = Contents(destination.Uri);
        AssertSame(Contents(source.Uri), copied, "zero detection");
        Assert.Equal(1, copied[8]);
        Assert.Equal(2, copied[(2 * 4096) - 1]);
        Assert.Equal(4, copied[(4 * 4096) + 4088]);
    }

    [Theory]
    [InlineData("-C", "1")]
    [InlineData("-C", "4")]
    [InlineData("-T", "1")]
    [InlineData("-R", "1")]
    [InlineData("--synchronous")]
    [InlineData("--request-size=4096")]
    [InlineData("--request-size=32M")]
    [InlineData("--queue-size=1M", "-R", "1000")]
    [InlineData("--no-extents")]
    [InlineData("-S", "64k")]
    public void Options_CopyTheSameBytes_AndSettleLikeLibnbd(params string[] options)
    {
        using ServerProcess source = Peers.Nbdkit("-r", "sparse-random", "48M", "seed=21", "percent=40");
        using ServerProcess destination = Peers.Nbdkit("memory", "48M");
        ToolResult ours = Ours([.. options, "-v", source.Uri, destination.Uri]);
        Assert.True(ours.ExitCode == 0, ours + "\n--- source server ---\n" + source.Stderr + "\n--- destination server ---\n" + destination.Stderr);
        AssertSame(Contents(source.Uri), Contents(destination.Uri), string.Join(' ', options));

        // The settled connections/requests/threads/synchronous line, against libnbd's on the same servers.
        // libnbd 1.14 takes plain numbers only for the sizes (1.22 takes suffixes, as we do).
        string[] plain = options.Select(o => o.Replace("=32M", "=33554432", StringComparison.Ordinal)
            .Replace("=1M", "=1048576", StringComparison.Ordinal).Replace("64k", "65536", StringComparison.Ordinal)).ToArray();
        ToolResult reference = ToolProcess.RunLibnbd("nbdcopy", [.. plain, "-v", source.Uri, "null:"]);
        Assert.True(reference.ExitCode == 0, reference.ToString());
        ToolResult oursToNull = Ours([.. options, "-v", source.Uri, "null:"]);
        Assert.Equal(SettledLine(reference.Stderr), SettledLine(oursToNull.Stderr));
        Assert.Equal(SizeLines(reference.Stderr), SizeLines(oursToNull.Stderr));
    }

    private static string SettledLine(string stderr) =>
        stderr.Split('\n').Single(l => l.StartsWith("nbdcopy: connections=", StringComparison.Ordinal));

    private static string[] SizeLines(string stderr) =>
        stderr.Split('\n').Where(l => l.StartsWith("nbdcopy: src:", StringComparison.Ordinal) ||
                                      l.StartsWith("nbdcopy: dst:", StringComparison.Ordinal)).ToArray();

    [Fact]
    public void ProgressToAFileDescriptor_PrintsWhatLibnbdPrints()
    {
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "1G");
        ToolResult ours = Shell($"'{OursPath}' --progress=3 '{source.Uri}' null: 3>&1 1>/dev/null");
        ToolResult reference = Shell($"'{LibnbdPath}' --progress=3 '{source.Uri}' null: 3>&1 1>/dev/null");
        Assert.Equal(0, ours.ExitCode);
        Assert.Equal(reference.Stdout, ours.Stdout);
        Assert.Contains("100/100\n", ours.Stdout, StringComparison.Ordinal);

        // -p draws the bar on stderr and ends it at 100%.
        ToolResult bar = Ours("-p", source.Uri, "null:");
        Assert.Equal(0, bar.ExitCode);
        Assert.EndsWith("█ 100% [****************************************]\n", bar.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Flush_IsSentWhenAsked()
    {
        using var dir = new TempDirectory();
        string log = dir.File("log");
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "1M");
        using ServerProcess destination = Peers.Nbdkit("--filter=log", "memory", "1M", "logfile=" + log);
        Succeeds(Ours(source.Uri, destination.Uri));
        Assert.DoesNotContain("Flush", File.ReadAllText(log), StringComparison.Ordinal);
        Succeeds(Ours("--flush", source.Uri, destination.Uri));
        Assert.Contains("Flush", File.ReadAllText(log), StringComparison.Ordinal);
    }

    [Fact]
    public void ReadErrors_FailWithTheOffset()
    {
        // A fresh server for every run: nbdkit 1.32.5 may abort once a client drops with requests in flight.
        static ServerProcess Failing() => Peers.Nbdkit("-r", "--filter=error", "pattern", "8M", "error-pread=EIO",
            "error-pread-rate=100%");
        using (ServerProcess source = Failing())
        {
            ToolResult result = Ours(source.Uri, "null:");
            Assert.Equal(1, result.ExitCode);
            Assert.Matches(@"^nbdcopy: read at offset \d+ failed: Input/output error\n$", result.Stderr);
        }
        using (ServerProcess source = Failing())
            Assert.Equal(1, ToolProcess.RunLibnbd("nbdcopy", source.Uri, "null:").ExitCode);
        using (ServerProcess source = Failing())
        {
            ToolResult synchronous = Ours("--synchronous", source.Uri, "null:");
            Assert.Equal(1, synchronous.ExitCode);
            Assert.Matches(@"^nbdcopy: read at offset 0 failed: Input/output error\n$", synchronous.Stderr);
        }
    }

    [Fact]
    public void WriteErrors_FailWithTheOffset()
    {
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "8M");
        using ServerProcess destination = Peers.Nbdkit("--filter=error", "memory", "8M", "error-pwrite=ENOSPC",
            "error-pwrite-rate=100%");
        ToolResult result = Ours(source.Uri, destination.Uri);
        Assert.Equal(1, result.ExitCode);
        Assert.Matches(@"^nbdcopy: write at offset \d+ failed: No space left on device\n$", result.Stderr);
        // Fresh servers: nbdkit 1.32.5 may abort after a client dropped with requests in flight (the copy above).
        using ServerProcess source2 = Peers.Nbdkit("-r", "pattern", "8M");
        using ServerProcess destination2 = Peers.Nbdkit("--filter=error", "memory", "8M", "error-pwrite=ENOSPC",
            "error-pwrite-rate=100%");
        ToolResult synchronous = Ours("--synchronous", source2.Uri, destination2.Uri);
        Assert.Equal(1, synchronous.ExitCode);
        Assert.Matches(@"^nbdcopy: write at offset 0 failed: No space left on device", synchronous.Stderr);
    }

    [Fact]
    public void SomeErrorsAmongManyRequests_NeverEndInSuccess()
    {
        for (int seed = 0; seed < 5; seed++)
        {
            using ServerProcess source = Peers.Nbdkit("-r", "--filter=error", "pattern", "64M", "error-pread=EIO",
                "error-pread-rate=2%");
            ToolResult result = Ours("--request-size=64k", source.Uri, "null:");
            Assert.Equal(1, result.ExitCode);
            Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
    }

    /// <summary>Starts our nbdcopy without waiting for it; <paramref name="stderr"/> completes with what it wrote there.</summary>
    private static Process StartOurs(out System.Threading.Tasks.Task<string> stderr, params string[] args)
    {
        var info = new ProcessStartInfo(OursPath) { RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            info.ArgumentList.Add(a);
        Process copy = Process.Start(info)!;
        stderr = copy.StandardError.ReadToEndAsync();
        return copy;
    }

    [Fact]
    public void ServerKilledMidCopy_FailsWithinSeconds()
    {
        using var dir = new TempDirectory();
        string log = dir.File("source.log");
        using ServerProcess source = Peers.Nbdkit(ServerLog.Filter, "-r", "--filter=delay", "pattern", "1G", "rdelay=20ms", ServerLog.Parameter(log));
        var watch = Stopwatch.StartNew();
        using Process copy = StartOurs(out System.Threading.Tasks.Task<string> stderr, source.Uri, dir.File("out.img"));
        Assert.True(ServerLog.WaitFor(log, " Read ", TimeSpan.FromSeconds(30)), "the copy did not start reading");
        source.Signal(Native.SIGKILL);
        Assert.True(copy.WaitForExit(TimeSpan.FromSeconds(30)), "nbdcopy did not exit after its server died");
        Assert.NotEqual(0, copy.ExitCode);
        string message = stderr.Result;
        Assert.Single(message.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("nbdcopy: ", message, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", message, StringComparison.Ordinal);
    }

    [Fact]
    public void RequestBuffers_AreAdvisedForHugePages()
    {
        // 2 connections x 64 requests of 256 KiB: each worker's 16 MiB of buffers is one region marked for
        // transparent huge pages (VmFlags "hg" in smaps), whether or not the kernel has huge pages to give. Each read
        // takes a second, so that the copy is still running when its mappings are looked at.
        using var dir = new TempDirectory();
        using var source = new SlowPattern(dir, "16M");
        using Process copy = StartOurs(out System.Threading.Tasks.Task<string> stderr, "-C", "2", "-T", "2", source.Slow.Uri, dir.File("out.img"));
        source.WaitForFirstRead();
        int advised = AdvisedRegions(File.ReadAllText($"/proc/{copy.Id}/smaps"), 16 << 20);
        Assert.True(copy.WaitForExit(TimeSpan.FromSeconds(60)), "nbdcopy did not finish");
        Assert.True(copy.ExitCode == 0, stderr.Result);
        Assert.Equal(2, advised);
        AssertSame(Contents(source.Same.Uri), File.ReadAllBytes(dir.File("out.img")), "the copy");
    }

    [Fact]
    public void UnixConnections_StartNoDotNetSocketEngine()
    {
        // nbdcopy connects synchronously: on Linux the library opens Unix sockets with libc, so .NET's socket engine
        // (its epoll thread, named ".NET Sockets", and its event source) is never started. Each read takes a
        // second, so that the copy's threads can be looked at while it runs.
        using var dir = new TempDirectory();
        using var source = new SlowPattern(dir, "1M");
        using ServerProcess target = Peers.Nbdkit("memory", "1M");
        using Process copy = StartOurs(out System.Threading.Tasks.Task<string> stderr, source.Slow.Uri, target.Uri);
        source.WaitForFirstRead();
        var threads = new List<string>();
        foreach (string task in Directory.GetDirectories($"/proc/{copy.Id}/task"))
        {
            try
            {
                threads.Add(File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n'));
            }
            catch (IOException)
            {
                // A thread that ended meanwhile.
            }
        }
        Assert.True(copy.WaitForExit(TimeSpan.FromSeconds(60)), "nbdcopy did not finish");
        Assert.True(copy.ExitCode == 0, stderr.Result);
        Assert.Contains(threads, name => name.StartsWith("nbdcopy", StringComparison.Ordinal));
        Assert.DoesNotContain(".NET Sockets", threads);
        AssertSame(Contents(source.Same.Uri), Contents(target.Uri), "the copy");
    }

    /// <summary>
    /// A pattern export whose reads each take a second (logged), so that a copy from it can be looked at while it runs,
    /// and the same pattern served without delay, to check the copy against.
    /// </summary>
    private sealed class SlowPattern : IDisposable
    {
        private readonly string _log;

        public SlowPattern(TempDirectory dir, string size)
        {
            _log = dir.File("source.log");
            Slow = Peers.Nbdkit(ServerLog.Filter, "-r", "--filter=delay", "pattern", size, "rdelay=1000ms", ServerLog.Parameter(_log));
            try
            {
                Same = Peers.Nbdkit("-r", "pattern", size);
            }
            catch
            {
                Slow.Dispose();
                throw;
            }
        }

        public ServerProcess Slow { get; }

        public ServerProcess Same { get; }

        public void WaitForFirstRead() =>
            Assert.True(ServerLog.WaitFor(_log, " Read ", TimeSpan.FromSeconds(30)), "the copy did not start reading");

        public void Dispose()
        {
            Slow.Dispose();
            Same.Dispose();
        }
    }

    /// <summary>Mappings of at least <paramref name="minimum"/> bytes whose VmFlags carry "hg" (MADV_HUGEPAGE).</summary>
    private static int AdvisedRegions(string smaps, long minimum)
    {
        int count = 0;
        long size = 0;
        foreach (string line in smaps.Split('\n'))
        {
            if (line.StartsWith("Size:", StringComparison.Ordinal))
                size = long.Parse(line["Size:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            else if (line.StartsWith("VmFlags:", StringComparison.Ordinal) && size >= minimum && line.Split(' ').Contains("hg"))
                count++;
        }
        return count;
    }

    [Fact]
    public void RefusesBeforeCopying()
    {
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "2M");
        using ServerProcess small = Peers.Nbdkit("memory", "1M");
        using ServerProcess readOnly = Peers.Nbdkit("-r", "memory", "2M");
        using var dir = new TempDirectory();

        ToolResult result = Ours(source.Uri, small.Uri);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("nbdcopy: error: destination size (1048576) is smaller than source size (2097152)\n", result.Stderr);

        result = Ours(source.Uri, readOnly.Uri);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"nbdcopy: {readOnly.Uri}: the destination is read-only, cannot write to it\n", result.Stderr);

        result = Ours(dir.File("missing.img"), "null:");
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"nbdcopy: {dir.File("missing.img")}: No such file or directory\n", result.Stderr);

        result = Ours("nbd+unix:///?socket=" + dir.File("nobody.sock"), "null:");
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("nobody.sock", result.Stderr, StringComparison.Ordinal);

        result = Ours(dir.Path, "null:");
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Theory]
    [InlineData("only-one")]
    [InlineData("a", "b", "c")]
    [InlineData("-C", "0", "a", "b")]
    [InlineData("-C", "x", "a", "b")]
    [InlineData("-R", "0", "a", "b")]
    [InlineData("-T", "x", "a", "b")]
    [InlineData("--request-size=1000", "a", "b")]
    [InlineData("--request-size=64M", "a", "b")]
    [InlineData("--sparse=100", "a", "b")]
    [InlineData("--queue-size=x", "a", "b")]
    [InlineData("--progress=x", "a", "b")]
    [InlineData("--no-such-option", "a", "b")]
    [InlineData("-Z", "a", "b")]
    [InlineData("[", "nbdkit", "memory", "1M", "null:")]
    public void BadCommandLines_OneLineAndExitOne(params string[] args)
    {
        ToolResult ours = Ours(args);
        Assert.Equal(1, ours.ExitCode);
        Assert.Equal("", ours.Stdout);
        Assert.Single(ours.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("nbdcopy: ", ours.Stderr, StringComparison.Ordinal);
        Assert.Equal(1, ToolProcess.RunLibnbd("nbdcopy", args).ExitCode);
    }

    [Fact]
    public void HelpVersionAndOptionLists()
    {
        // libnbd 1.14's lists, plus 1.24's --blkhash and --blkhash-file, and our --timeout.
        Assert.Equal(ToolProcess.RunLibnbd("nbdcopy", "--short-options").Stdout, Ours("--short-options").Stdout);
        string[] ours = Ours("--long-options").Stdout.Split('\n');
        Assert.Equal(ToolProcess.RunLibnbd("nbdcopy", "--long-options").Stdout.Split('\n'),
            ours.Where(o => o is not "--blkhash" and not "--blkhash-file" and not "--timeout"));
        Assert.Contains("--blkhash", ours);
        Assert.Contains("--blkhash-file", ours);
        Assert.Contains("--timeout", ours);
        ToolResult help = Ours("--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("SOURCE DESTINATION", help.Stdout, StringComparison.Ordinal);
        ToolResult version = Ours("-V");
        Assert.Equal(0, version.ExitCode);
        Assert.StartsWith("nbdcopy ", version.Stdout, StringComparison.Ordinal);
    }

    /// <summary>Known answers from libnbd 1.24's test suite (copy-blkhash-known.sh), which were cross-checked there
    /// against the blkhash project's reference implementation.</summary>
    [Theory]
    [InlineData("", "sha256", "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc")]
    [InlineData("\"hello\"", "md5", "f741ac9ce55f5325906bb14e9c05d467")]
    [InlineData("\"hello\"", "sha256", "337355feb53a5309d5aba92796223c2c84ffab930e706c01fef573a2722545e6")]
    [InlineData("\"hello\"", "sha512", "eca04a593cf12ec4132993da709048e25a2f1be3526e132fb521ec9d41f023ec4018b3fd07b014a33e36bb5fa145b36991f431e62f9e1a93bebea6c9565682c1")]
    [InlineData("\"hello\"", "md5/4", "8262896de34125dec173722c920e8bd0")]
    [InlineData("\"hello\" @1048576 \"goodbye\"", "sha256", "61b8f3a8cea76e16eeff7ce27f1b7711c1f1e437f5038cec17773772a4bded28")]
    [InlineData("\"12345678\"*512*256", "md5", "84fc21ac2f49ac283ff399378d834d1a")]
    [InlineData("\"12345678\"*512*256", "sha256", "cbb388edd25e567b85f504c7b345497f9fb4f6bbf4e39768809184b9f9e678f8")]
    [InlineData("\"12345678\"*512*256", "sha512/512k", "379f7eb1628058c7abbc4c96941ac972074815ea9ef4aca95eefb2b4f9c29f64023fff8d966e9fddf08d07bdba548e75298917f10268fdf9ba636c2321a2214e")]
    public void BlockHash_KnownAnswers(string data, string digest, string expected)
    {
        using ServerProcess server = Peers.Nbdkit("-r", "data", data);
        using var dir = new TempDirectory();
        Succeeds(Ours("--blkhash=" + digest, "--blkhash-file=" + dir.File("hash"), server.Uri, "null:"));
        Assert.Equal(expected + "\n", File.ReadAllText(dir.File("hash")));
        ToolResult toStdout = Ours("--blkhash=" + digest, server.Uri, "null:");
        Assert.Equal(expected + "\n", toStdout.Stdout);
    }

    /// <summary>The same disk gives the same blkhash whatever the path: holes from block status, zero runs found in
    /// data, several connections, the synchronous copy, a pipe, a file; and it equals the digest computed here from
    /// the bytes themselves.</summary>
    [Fact]
    public void BlockHash_SameWhateverThePath()
    {
        using ServerProcess server = Peers.Nbdkit("-r", "sparse-random", "40M", "seed=8", "percent=25");
        byte[] disk = Contents(server.Uri);
        string expected = ReferenceBlockHash(disk, 64 * 1024) + "\n";
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("disk.img"), disk);
        string q(string path) => "'" + path + "'";
        foreach (string script in new[]
        {
            $"{q(OursPath)} --blkhash {q(server.Uri)} null:",
            $"{q(OursPath)} --blkhash -C 1 -R 3 --request-size=8M {q(server.Uri)} null:",
            $"{q(OursPath)} --blkhash --synchronous {q(server.Uri)} null:",
            $"{q(OursPath)} --blkhash --no-extents {q(server.Uri)} {q(dir.File("copy.img"))}",
            $"{q(OursPath)} --blkhash=sha256 {q(dir.File("disk.img"))} null:",
            $"cat {q(dir.File("disk.img"))} | {q(OursPath)} --blkhash - null:",
        })
        {
            ToolResult result = Shell(script);
            Assert.True(result.ExitCode == 0, script + "\n" + result);
            Assert.Equal(expected, result.Stdout);
        }
    }

    private static string ReferenceBlockHash(byte[] disk, int blockSize)
    {
        using var final = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        for (int offset = 0; offset < disk.Length; offset += blockSize)
            final.AppendData(System.Security.Cryptography.SHA256.HashData(disk.AsSpan(offset, Math.Min(blockSize, disk.Length - offset))));
        final.AppendData(BitConverter.GetBytes((long)disk.Length));
        return Convert.ToHexStringLower(final.GetHashAndReset());
    }

    [Theory]
    [InlineData("--blkhash=sha3")]
    [InlineData("--blkhash=md5/1000")]
    [InlineData("--blkhash=sha256/x")]
    public void BlockHash_BadDigests(string option)
    {
        ToolResult result = Ours(option, "a", "null:");
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("nbdcopy: --blkhash: ", result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void RefusesToWriteToATerminal()
    {
        // script(1) gives the tool a terminal as stdout.
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "1M");
        ToolResult result = ToolProcess.Run(Requires.Program("script"),
            ["-qec", $"'{OursPath}' '{source.Uri}' -", "/dev/null"]);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("nbdcopy: refusing to write to tty", result.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void MemoryStaysBounded_WhateverTheDiskSize()
    {
        // 8 GiB through 2 connections x 4 requests of 1 MiB: peak RSS must not grow with the disk.
        using ServerProcess source = Peers.Nbdkit("-r", "pattern", "8G");
        ToolResult result = Shell($"/usr/bin/time -f '%M' '{OursPath}' -R 4 --request-size=1M '{source.Uri}' null: 2>&1");
        Assert.True(result.ExitCode == 0, result.ToString());
        long peakKiB = long.Parse(result.Stdout.Trim().Split('\n')[^1], CultureInfo.InvariantCulture);
        Assert.True(peakKiB < 200 * 1024, $"peak RSS {peakKiB} KiB");
    }
}
