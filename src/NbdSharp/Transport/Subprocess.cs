using System;
using System.Collections;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;

namespace NbdSharp.Transport;

/// <summary>
/// A server the handle runs as its child (<c>ConnectCommand</c>, <c>ConnectSystemdSocketActivation</c>). Started
/// with posix_spawn, which can hand the child a file descriptor (its stdin/stdout, or fd 3) where .NET's
/// Process cannot, and with default signal dispositions and an empty signal mask, as after fork and exec. Linux and
/// macOS: the calls, flags and signal numbers used here are the same on both.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
[System.Runtime.Versioning.SupportedOSPlatform("macos")]
internal sealed class Subprocess : ChildServer
{
    private int _reaped;

    private Subprocess(int pid)
    {
        Pid = pid;
    }

    public override int Pid { get; }

    /// <summary>
    /// Starts <paramref name="argv"/> (found on PATH) with <paramref name="fdMap"/> applied (dup2 of each parent
    /// fd to a child fd) and with <paramref name="environment"/> in front of the current environment, replacing
    /// any variable of the same name.
    /// </summary>
    public static unsafe Subprocess Spawn(IReadOnlyList<string> argv, (int ParentFd, int ChildFd)[] fdMap,
        IReadOnlyList<KeyValuePair<string, string>> environment, bool terminateOnClose, string call)
    {
        var variables = new List<string>();
        foreach (KeyValuePair<string, string> variable in environment)
            variables.Add(variable.Key + "=" + variable.Value);
        foreach (DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            string name = (string)entry.Key;
            bool replaced = false;
            foreach (KeyValuePair<string, string> variable in environment)
                replaced |= variable.Key == name;
            if (!replaced)
                variables.Add(name + "=" + (string?)entry.Value);
        }

        using var strings = new NativeStrings();
        byte** nativeArgv = strings.Array(argv);
        byte** nativeEnv = strings.Array(variables);
        byte* file = nativeArgv[0];

        byte* actions = stackalloc byte[LibC.SpawnStructSize];
        byte* attributes = stackalloc byte[LibC.SpawnStructSize];
        byte* signals = stackalloc byte[LibC.SigSetSize];
        Check(LibC.SpawnFileActionsInit(actions), "posix_spawn_file_actions_init", call);
        Check(LibC.SpawnAttrInit(attributes), "posix_spawnattr_init", call);
        try
        {
            // dup2 of a descriptor onto its own number leaves its close-on-exec flag set (glibc clears it, as POSIX now
            // requires, macOS does not): such a descriptor goes through a spare number above stderr and every one mapped.
            int spare = 3;
            foreach ((int parentFd, int childFd) in fdMap)
                spare = Math.Max(spare, Math.Max(parentFd, childFd) + 1);
            foreach ((int parentFd, int childFd) in fdMap)
            {
                if (parentFd == childFd)
                {
                    Check(LibC.SpawnFileActionsAddDup2(actions, parentFd, spare), "posix_spawn_file_actions_adddup2", call);
                    Check(LibC.SpawnFileActionsAddDup2(actions, spare, childFd), "posix_spawn_file_actions_adddup2", call);
                    Check(LibC.SpawnFileActionsAddClose(actions, spare), "posix_spawn_file_actions_addclose", call);
                }
                else
                {
                    Check(LibC.SpawnFileActionsAddDup2(actions, parentFd, childFd), "posix_spawn_file_actions_adddup2", call);
                }
            }
            Check(LibC.SigFillSet(signals), "sigfillset", call);
            Check(LibC.SpawnAttrSetSigDefault(attributes, signals), "posix_spawnattr_setsigdefault", call);
            Check(LibC.SigEmptySet(signals), "sigemptyset", call);
            Check(LibC.SpawnAttrSetSigMask(attributes, signals), "posix_spawnattr_setsigmask", call);
            Check(LibC.SpawnAttrSetFlags(attributes, LibC.POSIX_SPAWN_SETSIGDEF | LibC.POSIX_SPAWN_SETSIGMASK), "posix_spawnattr_setflags", call);
            int pid;
            int error = LibC.PosixSpawnp(&pid, file, actions, attributes, nativeArgv, nativeEnv);
            if (error != 0)
                throw new NbdException(error, NbdException.Format(call, "posix_spawn: " + argv[0], error));
            return new Subprocess(pid) { TerminateOnClose = terminateOnClose };
        }
        finally
        {
            _ = LibC.SpawnFileActionsDestroy(actions);
            _ = LibC.SpawnAttrDestroy(attributes);
        }
    }

    /// <summary>
    /// Runs <paramref name="argv"/> (found on PATH) with its standard output into a pipe, waits for it to exit and
    /// returns what it wrote, at most <paramref name="maxBytes"/> (the rest is read and dropped). Its standard input
    /// and error are ours. Linux: a child started this way costs no thread and none of <c>Process</c>'s machinery
    /// (nbdinfo runs file(1) on every export). A program that cannot be started is an <see cref="NbdException"/>
    /// (ENOENT when it is not on PATH).
    /// </summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public static unsafe byte[] RunForOutput(IReadOnlyList<string> argv, int maxBytes, string call)
    {
        int* fds = stackalloc int[2];
        if (LibC.Pipe2(fds, LibC.O_CLOEXEC) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new NbdException(errno, NbdException.Format(call, "pipe2", errno));
        }
        Subprocess child;
        try
        {
            child = Spawn(argv, [(fds[1], 1)], [], terminateOnClose: false, call);
        }
        catch
        {
            _ = LibC.Close(fds[0]);
            _ = LibC.Close(fds[1]);
            throw;
        }
        _ = LibC.Close(fds[1]);
        byte[] output = new byte[maxBytes];
        int length = 0;
        try
        {
            byte* scratch = stackalloc byte[4096];
            while (true)
            {
                nint n;
                if (length < maxBytes)
                {
                    fixed (byte* kept = &output[length])
                        n = LibC.Read(fds[0], kept, (nuint)(maxBytes - length));
                }
                else
                {
                    n = LibC.Read(fds[0], scratch, 4096); // past the limit: read and dropped
                }
                if (n == 0)
                    break;
                if (n < 0)
                {
                    if (Marshal.GetLastPInvokeError() == Errno.EINTR)
                        continue;
                    break; // the child's output ends here; it is still waited for
                }
                if (length < maxBytes)
                    length += (int)n;
            }
        }
        finally
        {
            _ = LibC.Close(fds[0]);
            if (Interlocked.Exchange(ref child._reaped, 1) == 0)
                child.Exited(block: true);
        }
        return output.AsSpan(0, length).ToArray();
    }

    private static void Check(int result, string what, string call)
    {
        if (result != 0)
        {
            int errno = result > 0 ? result : Errno.ENOMEM;
            throw new NbdException(errno, NbdException.Format(call, what, errno));
        }
    }

    public override bool Signal(int signal, out int errno)
    {
        errno = 0;
        if (Volatile.Read(ref _reaped) != 0)
        {
            errno = Errno.ESRCH;
            return false;
        }
        if (LibC.Kill(Pid, signal) == 0)
            return true;
        errno = Marshal.GetLastPInvokeError();
        return false;
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    public override async ValueTask ReapAsync(TimeSpan grace, bool terminate, bool async)
    {
        if (Interlocked.Exchange(ref _reaped, 1) != 0)
            return;
        try
        {
            await WaitForExitAsync(grace, terminate, async).ConfigureAwait(false);
        }
        finally
        {
            RemoveSocketDirectory();
        }
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder))]
    private async ValueTask WaitForExitAsync(TimeSpan grace, bool terminate, bool async)
    {
        if (terminate)
            _ = LibC.Kill(Pid, LibC.SIGTERM);
        long deadline = Environment.TickCount64 + (long)grace.TotalMilliseconds;
        bool termSent = terminate;
        while (true)
        {
            if (Exited(block: false))
                return;
            long now = Environment.TickCount64;
            if (now >= deadline)
            {
                if (!termSent)
                {
                    _ = LibC.Kill(Pid, LibC.SIGTERM);
                    termSent = true;
                    deadline = now + 3000;
                }
                else
                {
                    _ = LibC.Kill(Pid, LibC.SIGKILL);
                    Exited(block: true);
                    return;
                }
            }
            if (async)
                await Task.Delay(5).ConfigureAwait(false);
            else
                Thread.Sleep(5);
        }
    }

    /// <summary>Whether the child has exited (and is reaped); <paramref name="block"/> waits for it (after SIGKILL).</summary>
    private unsafe bool Exited(bool block)
    {
        int status;
        int r = LibC.WaitPid(Pid, &status, block ? 0 : LibC.WNOHANG);
        return r == Pid || (r == -1 && Marshal.GetLastPInvokeError() == LibC.ECHILD);
    }

    /// <summary>NUL-terminated UTF-8 strings and pointer arrays in native memory, freed together.</summary>
    private sealed unsafe class NativeStrings : IDisposable
    {
        // An array, not a List<nint>: .NET's generic code over nint is compiled at run time where the library is
        // ReadyToRun, and nbdinfo starts a child (file(1)) on every run.
        private nint[] _blocks = new nint[16];
        private int _count;

        public byte** Array(IReadOnlyList<string> values)
        {
            byte** array = (byte**)Allocate((values.Count + 1) * sizeof(nint));
            for (int i = 0; i < values.Count; i++)
            {
                byte[] utf8 = Encoding.UTF8.GetBytes(values[i]);
                byte* text = (byte*)Allocate(utf8.Length + 1);
                utf8.AsSpan().CopyTo(new Span<byte>(text, utf8.Length));
                text[utf8.Length] = 0;
                array[i] = text;
            }
            array[values.Count] = null;
            return array;
        }

        private void* Allocate(int size)
        {
            if (_count == _blocks.Length)
            {
                var bigger = new nint[_blocks.Length * 2];
                System.Array.Copy(_blocks, bigger, _count);
                _blocks = bigger;
            }
            nint block = Marshal.AllocHGlobal(size);
            _blocks[_count++] = block;
            return (void*)block;
        }

        public void Dispose()
        {
            for (int i = 0; i < _count; i++)
                Marshal.FreeHGlobal(_blocks[i]);
            _count = 0;
        }
    }
}
