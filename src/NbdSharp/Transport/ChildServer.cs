using System;
using System.Collections.Generic;
using System.Threading.Tasks;

namespace NbdSharp.Transport;

/// <summary>
/// A server the handle runs as its child (<c>ConnectCommand</c>, <c>ConnectSystemdSocketActivation</c>): started with
/// posix_spawn on Linux, and on macOS for socket activation (<see cref="Subprocess"/>), with .NET's
/// <see cref="System.Diagnostics.Process"/> elsewhere (<see cref="PortableSubprocess"/>). The handle sends it signals
/// (<c>KillSubprocess</c>) and reaps it when closed: a child never outlives its handle and is never left a zombie.
/// </summary>
internal abstract class ChildServer
{
    /// <summary>The child's process id.</summary>
    public abstract int Pid { get; }

    /// <summary>Whether closing the handle stops the child with SIGTERM (a socket-activated server runs until told).</summary>
    public bool TerminateOnClose { get; init; }

    /// <summary>Children with a socket folder not yet removed, for <see cref="OnProcessExit"/>.</summary>
    private static readonly HashSet<ChildServer> s_withFolders = [];
    private string? _socketDirectory;

    static ChildServer() => AppDomain.CurrentDomain.ProcessExit += OnProcessExit;

    /// <summary>
    /// A private folder holding the socket the child listens on (socket activation), removed once the child has been
    /// reaped: until then the socket's name is what <c>GetUri</c> gives, for more connections to the same server. A
    /// process that exits with handles still open (<see cref="Environment.Exit"/>, as a tool does on a signal) still
    /// removes it, and terminates the server, on its way out.
    /// </summary>
    public string? SocketDirectory
    {
        get => _socketDirectory;
        set
        {
            _socketDirectory = value;
            if (value != null)
            {
                lock (s_withFolders)
                    s_withFolders.Add(this);
            }
        }
    }

    private static void OnProcessExit(object? sender, EventArgs e)
    {
        ChildServer[] children;
        lock (s_withFolders)
        {
            children = [.. s_withFolders];
            s_withFolders.Clear();
        }
        foreach (ChildServer child in children)
        {
            if (child.TerminateOnClose)
                _ = child.Signal(LibC.SIGTERM, out _);
            child.RemoveSocketDirectory();
        }
    }

    /// <summary>Sends <paramref name="signal"/>; false (with errno) if the process is gone.</summary>
    public abstract bool Signal(int signal, out int errno);

    /// <summary>
    /// Waits for the child to exit (it sees its connection close), up to <paramref name="grace"/>, then terminates it
    /// (SIGTERM, and SIGKILL a few seconds later).
    /// </summary>
    public void Reap(TimeSpan grace, bool terminate)
    {
        ValueTask reaping = ReapAsync(grace, terminate, async: false);
        if (!reaping.IsCompleted)
            throw new InvalidOperationException("internal error: a synchronous path did not complete synchronously");
        reaping.GetAwaiter().GetResult();
    }

    /// <summary>
    /// <see cref="Reap"/>, waiting with <see cref="Task.Delay(int)"/> rather than on the calling thread when
    /// <paramref name="async"/>; with <paramref name="async"/> false it completes synchronously.
    /// </summary>
    public abstract ValueTask ReapAsync(TimeSpan grace, bool terminate, bool async);

    /// <summary>Removes <see cref="SocketDirectory"/> (after the child is reaped).</summary>
    protected void RemoveSocketDirectory()
    {
        string? directory = SocketDirectory;
        if (directory == null)
            return;
        lock (s_withFolders)
            s_withFolders.Remove(this);
        try
        {
            System.IO.Directory.Delete(directory, recursive: true);
        }
        catch (System.IO.IOException)
        {
            // Removed already, or not ours to remove any more.
        }
    }
}
