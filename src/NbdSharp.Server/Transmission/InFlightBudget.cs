using System.Threading.Tasks;

namespace NbdSharp.Server.Transmission;

/// <summary>
/// What one client may have the server hold at once: requests in flight and their payload bytes. Only the
/// connection's reader waits (it stops reading requests), so there is at most one waiter; a request larger than the
/// byte limit still goes through when it is alone.
/// </summary>
internal sealed class InFlightBudget(int maxRequests, long maxBytes)
{
    private readonly object _lock = new();
    private int _requests;
    private long _bytes;
    private TaskCompletionSource? _waiter;
    private long _waitingBytes;

    public int Requests
    {
        get
        {
            lock (_lock)
                return _requests;
        }
    }

    public ValueTask AcquireAsync(long bytes)
    {
        lock (_lock)
        {
            if (Fits(bytes))
            {
                Take(bytes);
                return default;
            }
            _waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waitingBytes = bytes;
            return new ValueTask(_waiter.Task);
        }
    }

    public void Release(long bytes)
    {
        TaskCompletionSource? wake = null;
        lock (_lock)
        {
            _requests--;
            _bytes -= bytes;
            if (_waiter != null && Fits(_waitingBytes))
            {
                Take(_waitingBytes);
                wake = _waiter;
                _waiter = null;
            }
        }
        wake?.SetResult();
    }

    private bool Fits(long bytes) => _requests < maxRequests && (_requests == 0 || _bytes + bytes <= maxBytes);

    private void Take(long bytes)
    {
        _requests++;
        _bytes += bytes;
    }
}
