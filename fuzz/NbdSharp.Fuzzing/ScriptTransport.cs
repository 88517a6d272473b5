using System;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;

namespace NbdSharp.Fuzzing;

/// <summary>
/// An in-memory connection whose server side is a fixed byte script: receives hand out the script (at most
/// <c>split</c> bytes at a time, so partial reads are exercised too) and then end of stream; sends are
/// counted and dropped. It never blocks, so the whole client runs on the calling thread.
/// </summary>
internal sealed class ScriptTransport : NbdSharp.Transport.Transport
{
    private readonly ReadOnlyMemory<byte> _script;
    private readonly int _split;
    private int _position;
    private bool _aborted;

    /// <param name="script">What the server sends.</param>
    /// <param name="split">The most bytes one receive returns; 0 for no limit.</param>
    public ScriptTransport(ReadOnlyMemory<byte> script, int split)
    {
        _script = script;
        _split = split;
    }

    /// <summary>Bytes the client sent.</summary>
    public long BytesSent { get; private set; }

    /// <summary>Bytes of the script the client has received.</summary>
    public int BytesReceived => _position;

    public override int Receive(Span<byte> buffer)
    {
        if (_aborted)
            throw new TransportException(Errno.ECONNRESET, "recv: connection aborted");
        int count = Math.Min(buffer.Length, _script.Length - _position);
        if (_split > 0)
            count = Math.Min(count, _split);
        _script.Span.Slice(_position, count).CopyTo(buffer);
        _position += count;
        return count;
    }

    public override ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        ValueTask.FromResult(Receive(buffer.Span));

    public override void Send(ReadOnlySpan<byte> data)
    {
        if (_aborted)
            throw new TransportException(Errno.EPIPE, "send: connection aborted");
        BytesSent += data.Length;
    }

    public override ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        Send(data.Span);
        return ValueTask.CompletedTask;
    }

    public override int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        Send(first);
        Send(second);
        return first.Length + second.Length;
    }

    public override bool WaitReadable(int timeoutMs) => true;

    public override bool WaitWritable(int timeoutMs) => true;

    public override (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs) => (true, true);

    public override void ShutdownSend()
    {
    }

    public override void Abort() => _aborted = true;

    protected override void Dispose(bool disposing) => _aborted = true;
}
