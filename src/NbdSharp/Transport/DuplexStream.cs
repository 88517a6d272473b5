using System;
using System.IO;

namespace NbdSharp.Transport;

/// <summary>The parts every connection-like <see cref="Stream"/> shares: readable, writable, not seekable.</summary>
internal abstract class DuplexStream : Stream
{
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
