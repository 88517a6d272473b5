using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;

namespace NbdSharp.Server.Hosting;

/// <summary>One connection over two one-way streams: standard input to read, standard output to write (nbdkit's <c>-s</c>).</summary>
internal sealed class StdioStream(Stream input, Stream output) : DuplexStream
{
    public override int Read(byte[] buffer, int offset, int count) => input.Read(buffer, offset, count);

    public override int Read(Span<byte> buffer) => input.Read(buffer);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        input.ReadAsync(buffer, cancellationToken);

    public override void Write(byte[] buffer, int offset, int count) => output.Write(buffer, offset, count);

    public override void Write(ReadOnlySpan<byte> buffer) => output.Write(buffer);

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        output.WriteAsync(buffer, cancellationToken);

    public override void Flush() => output.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => output.FlushAsync(cancellationToken);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            input.Dispose();
            output.Dispose();
        }
        base.Dispose(disposing);
    }
}
