using System;
using System.IO;
using Microsoft.Win32.SafeHandles;

namespace NbdSharp.Tools.Dump;

/// <summary>
/// nbddump: prints the content of an NBD export as a hex dump, with the command line and the byte-for-byte output
/// of libnbd's nbddump (1.22, with <c>--offset</c>).
/// </summary>
internal static class Program
{
    /// <summary>The largest read; smaller if the server says so.</summary>
    private const int ChunkSize = 4 * 1024 * 1024;

    /// <summary>Reads in flight at once.</summary>
    private const int ReadsInFlight = 4;

    private static int Main(string[] args) => ToolMain.Run("nbddump", () => Run(args));

    private static int Run(string[] args)
    {
        DumpOptions? options = DumpCommandLine.Parse(args);
        if (options == null)
            return 0;

        // Opened first: a stdout the runtime can tell is unusable fails before a server is started.
        using Stream stdout = OpenStdout();
        using var handle = new NbdHandle();
        handle.AddMetaContext(MetaContext.BaseAllocation);
        options.Endpoint.Connect(handle);
        ulong size = (ulong)handle.GetSize();
        if (options.Offset > size)
            throw new ToolException($"--offset {options.Offset} is beyond the end of the export ({size} bytes)");
        ulong end = options.Offset + Math.Min(options.Length, size - options.Offset);

        var writer = new HexDumpWriter(stdout, new Ansi(options.Colour), options.Offset, size);
        int exitCode = 0;
        try
        {
            using (new InterruptHandler(writer))
                Dump(handle, writer, options.Offset, end);
        }
        catch (OutputClosedException)
        {
            exitCode = OutputClosedException.ExitCode;
        }
        handle.Shutdown();
        return exitCode;
    }

    private static void Dump(NbdHandle handle, HexDumpWriter writer, ulong start, ulong end)
    {
        var reader = new ExportReader(handle, new AllocationMap(handle), start, end, ReadSize(handle), ReadsInFlight);
        try
        {
            while (reader.TryRead(out Segment segment))
            {
                if (segment.Zeroes)
                    writer.WriteZeroes(segment.Offset, segment.Length);
                else
                    writer.WriteData(segment.Offset, segment.Data.Span);
            }
        }
        finally
        {
            // What was dumped before a failure is shown too, as stdio's exit() does for libnbd's tool.
            writer.Flush();
        }
    }

    /// <summary>
    /// stdout. A pipe or a terminal is written as a plain file, which reports EPIPE when the reader has gone
    /// (<c>nbddump ... | head</c>), where Console's stream would drop the writes silently and the dump would go on
    /// to the end of the export. Anything seekable (a regular file) goes through Console's stream, which keeps the
    /// shared file offset moving for whoever writes to the file next; a FileStream would not.
    /// </summary>
    private static Stream OpenStdout()
    {
        FileStream file;
        try
        {
            file = new FileStream(new SafeFileHandle(1, ownsHandle: false), FileAccess.Write, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new ToolException("cannot write to stdout: " + e.Message, e);
        }
        if (!file.CanSeek)
            return file;
        file.Dispose();
        return Console.OpenStandardOutput();
    }

    /// <summary><see cref="ChunkSize"/>, or the server's maximum block size if smaller, in whole lines.</summary>
    private static int ReadSize(NbdHandle handle)
    {
        long maximum = handle.GetBlockSize(SizeKind.Maximum);
        return maximum is > 0 and < ChunkSize ? Math.Max(16, (int)maximum & ~15) : ChunkSize;
    }
}
