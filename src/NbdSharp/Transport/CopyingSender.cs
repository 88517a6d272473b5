using System;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// Non-blocking sends for a transport that can only send asynchronously (a TLS stream; a socket where libc is not
/// called directly): <see cref="TrySend"/> copies what it takes into a buffer of its own and starts one asynchronous
/// send of it; until that send has completed the transport takes nothing more. Used by one sender at a time. The
/// buffer is not pooled: a send may still read it while the connection is being torn down.
/// </summary>
internal sealed class CopyingSender : IDisposable
{
    /// <summary>The most one send takes: a large request goes out in pieces of this size.</summary>
    private const int MaxCopy = 256 * 1024;

    private readonly Func<ReadOnlyMemory<byte>, ValueTask> _send;
    private byte[] _buffer = [];
    private Task? _pending;

    /// <param name="send">Starts sending every byte of its argument.</param>
    public CopyingSender(Func<ReadOnlyMemory<byte>, ValueTask> send)
    {
        _send = send;
    }

    /// <summary>The wait handle of the send in flight, or null when the next <see cref="TrySend"/> can take bytes.</summary>
    public WaitHandle? PendingHandle => _pending is { IsCompleted: false } pending ? ((IAsyncResult)pending).AsyncWaitHandle : null;

    /// <summary>Copies up to 256 KiB of <paramref name="first"/> then <paramref name="second"/> and starts sending them; 0 while a send is in flight.</summary>
    public int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second)
    {
        if (!Finish(0))
            return 0;
        int total = (int)Math.Min((long)first.Length + second.Length, MaxCopy);
        if (total == 0)
            return 0;
        if (_buffer.Length < total)
            _buffer = GC.AllocateUninitializedArray<byte>(Math.Min(MaxCopy, Math.Max(total, _buffer.Length * 2)));
        int fromFirst = Math.Min(first.Length, total);
        first[..fromFirst].CopyTo(_buffer);
        second[..(total - fromFirst)].CopyTo(_buffer.AsSpan(fromFirst));
        ValueTask send = _send(_buffer.AsMemory(0, total));
        if (send.IsCompleted)
            send.GetAwaiter().GetResult();
        else
            _pending = send.AsTask();
        return total;
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for the send in flight; true when none is left. Throws the send's
    /// failure.
    /// </summary>
    public bool Finish(int timeoutMs)
    {
        Task? pending = _pending;
        if (pending == null)
            return true;
        if (!pending.IsCompleted && !((IAsyncResult)pending).AsyncWaitHandle.WaitOne(timeoutMs))
            return false;
        _pending = null;
        pending.GetAwaiter().GetResult();
        return true;
    }

    /// <summary>Runs <paramref name="action"/> once the send in flight (if any) has ended, without waiting for it.</summary>
    public void AfterPending(Action action)
    {
        Task? pending = _pending;
        if (pending == null || pending.IsCompleted)
        {
            action();
            return;
        }
        pending.ContinueWith(static (_, state) => ((Action)state!)(), action, CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Observes the failure of a send still in flight, which the closed connection will end.</summary>
    public void Dispose() =>
        _pending?.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
}
