using System;
using System.Threading.Tasks;

namespace NbdSharp;

/// <summary>
/// Code written once for both worlds takes <c>bool async</c>; with <c>async: false</c> every await inside it
/// is on an already-completed operation, so the returned task has completed when it is returned. This turns it
/// back into a synchronous call, and fails loudly if that promise is ever broken rather than blocking a thread.
/// </summary>
internal static class SyncPath
{
    public static void Wait(ValueTask task)
    {
        if (!task.IsCompleted)
            throw new InvalidOperationException("internal error: a synchronous path did not complete synchronously");
        task.GetAwaiter().GetResult();
    }

    public static T Result<T>(ValueTask<T> task)
    {
        if (!task.IsCompleted)
            throw new InvalidOperationException("internal error: a synchronous path did not complete synchronously");
        return task.GetAwaiter().GetResult();
    }
}
