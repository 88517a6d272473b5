using System;
using System.IO;
using Microsoft.Win32.SafeHandles;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// A regular file through .NET's own file calls, where <see cref="FileEnd"/>'s Linux calls do not exist (macOS,
/// Windows): read and written at any offset by <see cref="RandomAccess"/>, with several connections. It cannot tell
/// holes from data or punch holes: every range is data, and zeroes are written as zeroes (unless the destination was
/// just sized, when it reads as zeroes already).
/// </summary>
internal sealed class PortableFileEnd : CopyEnd
{
    private readonly SafeFileHandle _handle;
    private readonly FileStream _stream;

    private PortableFileEnd(string name, FileStream stream)
        : base(name, "file_ops")
    {
        _stream = stream;
        _handle = stream.SafeFileHandle;
        Size = RandomAccess.GetLength(_handle);
    }

    /// <summary>
    /// The environment variable that selects these ends on Linux too (with the library's portable data path), so that
    /// what macOS and Windows run is tested where the tests run.
    /// </summary>
    public const string Variable = "NBDSHARP_PORTABLE_SOCKETS";

    /// <summary>Whether <see cref="Variable"/> asks for these ends where Linux's calls exist too.</summary>
    public static bool Requested => Environment.GetEnvironmentVariable(Variable) == "1";

    public override bool CanMultiConn => true;

    /// <summary>
    /// Opens a local name as <see cref="FileEnd.Open"/> does, with .NET's calls: "-" is stdin or stdout (refused when
    /// stdout is a terminal), an existing file is opened as it is, a missing destination is created; what cannot seek
    /// (a pipe, a character device) becomes a <see cref="PipeEnd"/>.
    /// </summary>
    public static CopyEnd Open(string name, bool writing)
    {
        if (name == "-")
        {
            if (writing && !Console.IsOutputRedirected)
                throw new ToolException("refusing to write to tty", 1);
            return new PipeEnd(name, writing ? Console.OpenStandardOutput() : Console.OpenStandardInput());
        }
        if (Directory.Exists(name))
            throw new ToolException(name + ": Is a directory", 1);
        FileStream stream;
        try
        {
            stream = Opened(name, writing);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ToolException(name + ": " + e.Message, 1);
        }
        if (stream.CanSeek)
            return new PortableFileEnd(name, stream);
        return new PipeEnd(name, stream);
    }

    /// <summary>An existing file as it is (never truncated here); a destination that does not exist, created.</summary>
    private static FileStream Opened(string name, bool writing)
    {
        if (!writing)
            return new FileStream(name, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 0);
        try
        {
            return new FileStream(name, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 0);
        }
        catch (FileNotFoundException)
        {
            return new FileStream(name, FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite, 0);
        }
    }

    public override bool Truncate(long size)
    {
        // Empty first, so that the whole file reads as zeroes.
        RandomAccess.SetLength(_handle, 0);
        RandomAccess.SetLength(_handle, size);
        Size = size;
        return true;
    }

    public override int ReadSome(Span<byte> buffer, long offset)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(_handle, buffer[done..], offset + done);
            if (n == 0)
                break;
            done += n;
        }
        return done;
    }

    public override void Write(ReadOnlySpan<byte> buffer, long offset) => RandomAccess.Write(_handle, buffer, offset);

    public override void StartRead(int connection, Memory<byte> buffer, long offset, CompletionCallback done)
    {
        if (ReadSome(buffer.Span, offset) < buffer.Length)
            throw new ToolException(Name + ": unexpected end of file", 1);
        CompleteInline(done);
    }

    public override void StartWrite(int connection, ReadOnlyMemory<byte> buffer, long offset, CompletionCallback done)
    {
        RandomAccess.Write(_handle, buffer.Span, offset);
        CompleteInline(done);
    }

    public override void Flush() => _stream.Flush(flushToDisk: true);

    public override void Close() => Dispose();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _stream.Dispose();
        base.Dispose(disposing);
    }
}
