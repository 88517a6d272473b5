using System;
using System.Threading;

namespace NbdSharp.Engine;

/// <summary>
/// The timer behind the request timeout: while a timeout is set it calls back a few times per timeout period (every
/// quarter, between 10 ms and 1 s), so that a command older than the timeout is noticed soon after it expires.
/// </summary>
internal sealed class RequestWatchdog : IDisposable
{
    private readonly Lock _lock = new();
    private readonly Action _check;
    private Timer? _timer;
    private long _timeoutTicks; // not a TimeSpan: see NbdHandle's timeouts

    /// <param name="check">Looks for a command older than <see cref="Timeout"/> (on a timer thread).</param>
    public RequestWatchdog(Action check)
    {
        _check = check;
    }

    /// <summary>The timeout; zero or less when none is set.</summary>
    public TimeSpan Timeout
    {
        get
        {
            lock (_lock)
                return TimeSpan.FromTicks(_timeoutTicks);
        }
    }

    /// <summary>Sets the timeout (zero: none) and runs the timer only while there is one.</summary>
    public void Set(TimeSpan timeout)
    {
        lock (_lock)
        {
            _timeoutTicks = timeout.Ticks;
            if (timeout <= TimeSpan.Zero)
            {
                _timer?.Dispose();
                _timer = null;
                return;
            }
            TimeSpan period = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));
            if (_timer == null)
                _timer = new Timer(static state => ((Action)state!)(), _check, period, period);
            else
                _timer.Change(period, period);
        }
    }

    /// <summary>Stops the timer for good (the connection has ended), keeping the timeout's value.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _timer?.Dispose();
            _timer = null;
        }
    }
}
