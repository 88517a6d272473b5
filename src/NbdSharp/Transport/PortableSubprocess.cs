using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.IO;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;

namespace NbdSharp.Transport;

/// <summary>
/// <c>ConnectCommand</c> where posix_spawn and socketpair are not called (macOS, Windows, and Linux over the portable
/// data path): the command is started by <see cref="Process"/> with its stdin and stdout redirected to pipes, and NBD
/// runs over the two pipes (a server started with a socket on stdin and stdout, like <c>nbdkit -s</c>, reads and
/// writes them the same way). Its standard error is the program's.
/// </summary>
internal sealed class PortableSubprocess : ChildServer
{
    private readonly Process _process;
    private int _reaped;

    private PortableSubprocess(Process process)
    {
        _process = process;
        Pid = process.Id;
    }

    public override int Pid { get; }

    /// <summary>Starts <paramref name="argv"/> (found on PATH) and connects to it over its stdin and stdout.</summary>
    public static OpenedTransport Start(IReadOnlyList<string> argv, string call)
    {
        var info = new ProcessStartInfo(argv[0])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = false,
        };
        for (int i = 1; i < argv.Count; i++)
            info.ArgumentList.Add(argv[i]);
        Process process;
        try
        {
            process = Process.Start(info) ?? throw new NbdException(Errno.EIO, NbdException.Format(call, "the command did not start", Errno.EIO));
        }
        catch (Win32Exception e)
        {
            // On Unix the native error is the errno (ENOENT for a program not found); Windows' codes differ.
            int errno = OperatingSystem.IsWindows() ? Errno.ENOENT : e.NativeErrorCode;
            throw new NbdException(errno, NbdException.Format(call, argv[0], errno), e);
        }
        var child = new PortableSubprocess(process);
        Stream input = process.StandardInput.BaseStream;
        var pipes = new DuplexPipes(process.StandardOutput.BaseStream, input);
        var transport = new StreamTransport(pipes, "command", closeWrites: () =>
        {
            input.Dispose();
            return ValueTask.CompletedTask;
        });
        return new OpenedTransport(transport, Endpoint.Unnamed, child);
    }

    public override bool Signal(int signal, out int errno)
    {
        errno = 0;
        if (Volatile.Read(ref _reaped) != 0 || HasExited())
        {
            errno = Errno.ESRCH;
            return false;
        }
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            if (LibC.Kill(Pid, signal) == 0)
                return true;
            errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            return false;
        }
        // Windows has no signals: any of them ends the process.
        _process.Kill();
        return true;
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    public override async ValueTask ReapAsync(TimeSpan grace, bool terminate, bool async)
    {
        if (Interlocked.Exchange(ref _reaped, 1) != 0)
            return;
        try
        {
            if (terminate)
                Terminate(force: false);
            if (!await ExitedWithin(grace, async).ConfigureAwait(false))
            {
                Terminate(force: false);
                if (!await ExitedWithin(TimeSpan.FromSeconds(3), async).ConfigureAwait(false))
                {
                    Terminate(force: true);
                    _process.WaitForExit();
                }
            }
        }
        finally
        {
            _process.Dispose();
            RemoveSocketDirectory();
        }
    }

    private bool HasExited()
    {
        try
        {
            return _process.HasExited;
        }
        catch (InvalidOperationException)
        {
            return true;
        }
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private async ValueTask<bool> ExitedWithin(TimeSpan time, bool async)
    {
        if (!async)
            return _process.WaitForExit(time);
        using var timeout = new CancellationTokenSource(time);
        try
        {
            await _process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>SIGTERM (or SIGKILL when <paramref name="force"/>) where there are signals; Windows ends the process.</summary>
    private void Terminate(bool force)
    {
        if (HasExited())
            return;
        if ((OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) && !force)
        {
            _ = LibC.Kill(Pid, LibC.SIGTERM);
            return;
        }
        try
        {
            _process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Exited meanwhile.
        }
    }

    /// <summary>The child's stdout to read and its stdin to write, as one stream for the NBD transport.</summary>
    private sealed class DuplexPipes : Stream
    {
        private readonly Stream _read;
        private readonly Stream _write;

        public DuplexPipes(Stream read, Stream write)
        {
            _read = read;
            _write = write;
        }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => _read.Read(buffer, offset, count);

        public override int Read(Span<byte> buffer) => _read.Read(buffer);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            _read.ReadAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            _read.ReadAsync(buffer, offset, count, cancellationToken);

        public override void Write(byte[] buffer, int offset, int count) => _write.Write(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => _write.Write(buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            _write.WriteAsync(buffer, cancellationToken);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            _write.WriteAsync(buffer, offset, count, cancellationToken);

        public override void Flush() => _write.Flush();

        public override Task FlushAsync(CancellationToken cancellationToken) => _write.FlushAsync(cancellationToken);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _write.Dispose();
                _read.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
