using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;

namespace NbdSharp.Engine;

/// <summary>
/// Aio commands that have completed and wait for <c>AioCommandCompleted</c> to retire them (libnbd's
/// <c>cmds_done</c>), in completion order for <c>AioPeekCommandCompleted</c>. Not thread-safe: the engine uses it under
/// its lock.
/// </summary>
internal sealed class CompletedCommands
{
    private readonly Dictionary<ulong, Command> _byCookie = new();

    /// <summary>Cookies in completion order; retired ones are skipped when met. Made on first use: most handles never
    /// hold a completed command, and this is .NET generic code compiled at run time when ReadyToRun code starts.</summary>
    private Queue<ulong>? _order;

    public int Count => _byCookie.Count;

    public void Add(Command cmd)
    {
        _byCookie.Add(cmd.Cookie, cmd);
        (_order ??= new Queue<ulong>()).Enqueue(cmd.Cookie);
    }

    /// <summary>Takes the completed command of <paramref name="cookie"/> out of the table, if it is there.</summary>
    public bool TryRetire(ulong cookie, [NotNullWhen(true)] out Command? cmd) => _byCookie.Remove(cookie, out cmd);

    /// <summary>The cookie of the oldest completed command not yet retired, or 0.</summary>
    public ulong Peek()
    {
        while (_order != null && _order.TryPeek(out ulong cookie))
        {
            if (_byCookie.ContainsKey(cookie))
                return cookie;
            _order.Dequeue();
        }
        return 0;
    }

    /// <summary>Empties the table and returns what it held.</summary>
    public Command[] TakeAll()
    {
        var all = new Command[_byCookie.Count];
        _byCookie.Values.CopyTo(all, 0);
        _byCookie.Clear();
        _order?.Clear();
        return all;
    }
}
