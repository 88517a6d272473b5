using System.Collections.Generic;
using System.Threading;

namespace NbdSharp.Engine;

/// <summary>Commands kept for reuse, so that steady-state traffic allocates nothing. Thread-safe.</summary>
internal sealed class CommandPool
{
    private const int MaxPooled = 1024;

    private readonly Lock _lock = new();
    private readonly Stack<Command> _commands = new();

    public int Count
    {
        get
        {
            lock (_lock)
                return _commands.Count;
        }
    }

    /// <summary>A command of <paramref name="owner"/>, reset for a new use.</summary>
    public Command Rent(CommandEngine owner)
    {
        Command? cmd;
        lock (_lock)
            _commands.TryPop(out cmd);
        cmd ??= new Command(owner);
        cmd.Reset();
        return cmd;
    }

    /// <summary>Takes a command back, without its callbacks (nothing of the caller's stays reachable from the pool).</summary>
    public void Return(Command cmd)
    {
        cmd.Completion = null;
        cmd.Chunk = null;
        cmd.Extent = null;
        cmd.Extent64 = null;
        lock (_lock)
        {
            if (_commands.Count < MaxPooled)
                _commands.Push(cmd);
        }
    }
}
