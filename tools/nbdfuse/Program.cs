using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;

[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace NbdSharp.Tools.Fuse;

/// <summary>
/// nbdfuse: an NBD export as a file in a FUSE mount, as libnbd's nbdfuse. Connects (several connections when the
/// server allows multi-conn), mounts with libfuse 3, writes the pid file, serves until the file system is unmounted
/// or a signal comes, then unmounts, disconnects and exits.
/// </summary>
internal static unsafe class Program
{
    private static int Main(string[] args) => ToolMain.Run(FuseCommandLine.Program, () => OperatingSystem.IsLinux() ? Run(args)
        : throw new ToolException("FUSE mounts are only supported on Linux, not on " + RuntimeInformation.OSDescription, 1));

    private static int Run(string[] args)
    {
        FuseOptions? options = FuseCommandLine.Parse(args, () =>
        {
            Fuse3.Load();
            Fuse3.PrintHelp(FuseCommandLine.Program);
        });
        if (options == null)
            return 0;
        if (!NativeStat.Supported)
            throw new ToolException("this build knows the stat layout of Linux on x86-64 and arm64 only");
        Fuse3.Load();

        var handles = new List<NbdHandle>();
        try
        {
            handles.Add(Connect(options));
            if (options.Connections > 1 && options.MultiConnCompatible && handles[0].CanMultiConn())
            {
                while (handles.Count < options.Connections)
                    handles.Add(Connect(options));
            }
            if (options.Verbose)
                Console.Error.WriteLine($"nbdfuse: connections={handles.Count}");
            bool readOnly = options.ReadOnly || handles[0].IsReadOnly();
            FuseFileSystem.Configure(handles.ToArray(), options.FileName, options.FileMode, readOnly, options.Verbose);
            return Serve(options);
        }
        finally
        {
            foreach (NbdHandle handle in handles)
            {
                try
                {
                    handle.Shutdown();
                }
                catch (NbdException)
                {
                    // A server already gone: nothing to say goodbye to.
                }
                handle.Dispose();
            }
        }
    }

    /// <summary>Mounts, serves until unmounted (or signalled), unmounts. Returns the exit status.</summary>
    private static int Serve(FuseOptions options)
    {
        nint* operations = (nint*)NativeMemory.AllocZeroed((nuint)(Fuse3.OperationCount * sizeof(nint)));
        FuseArgs args = default;
        nint fuse;
        try
        {
            FuseFileSystem.FillOperations(operations);
            Fuse3.AddArg(&args, FuseCommandLine.Program);
            if (options.FuseOptionList.Count > 0)
            {
                Fuse3.AddArg(&args, "-o");
                Fuse3.AddArg(&args, FuseCommandLine.JoinFuseOptions(options.FuseOptionList));
            }
            Fuse3.Capture();
            fuse = Fuse3.New(&args, operations, (nuint)(Fuse3.OperationCount * sizeof(nint)));
        }
        finally
        {
            Fuse3.FreeArgs(&args);
        }
        if (fuse == 0)
            throw new ToolException("fuse_new: " + Said(Fuse3.StopCapture(), "FUSE refused the options"));
        nint session = Fuse3.GetSession(fuse);
        if (Fuse3.Mount(fuse, options.MountPoint) != 0)
        {
            Fuse3.Destroy(fuse);
            throw new ToolException("fuse_mount: " + Said(Fuse3.StopCapture(), "could not mount " + options.MountPoint));
        }
        // Mounted: whatever libfuse said on the way (warnings) is shown, and what it says from now on goes to stderr.
        Console.Error.Write(Fuse3.StopCapture());

        int signal = 0;
        using var signalled = new ManualResetEventSlim();
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            signal = context.Signal switch
            {
                PosixSignal.SIGINT => 2,
                PosixSignal.SIGTERM => 15,
                PosixSignal.SIGHUP => 1,
                _ => 0,
            };
            signalled.Set();
        }
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using PosixSignalRegistration sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);

        // Ready to serve: the pid file tells scripts so.
        if (options.PidFile != null)
            File.WriteAllText(options.PidFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        int result = 0;
        using var finished = new ManualResetEventSlim();
        var loop = new Thread(() =>
        {
            result = options.SingleThread ? Fuse3.Loop(fuse) : Fuse3.LoopMt(fuse);
            finished.Set();
        })
        {
            IsBackground = true,
            Name = "nbdfuse loop",
        };
        loop.Start();
        WaitHandle.WaitAny([finished.WaitHandle, signalled.WaitHandle]);
        if (!finished.IsSet)
        {
            // A signal: leave the loop, and unmount (lazily, as libfuse does) so that its threads see the end.
            Fuse3.SessionExit(session);
            LazyUnmount(options.MountPoint);
            finished.Wait(TimeSpan.FromSeconds(5));
        }
        try
        {
            if (finished.IsSet)
            {
                Fuse3.Unmount(fuse);
                Fuse3.Destroy(fuse);
                NativeMemory.Free(operations);
            }
        }
        finally
        {
            if (options.PidFile != null)
            {
                try
                {
                    File.Delete(options.PidFile);
                }
                catch (IOException)
                {
                }
            }
        }
        if (signal != 0)
        {
            Console.Error.WriteLine($"nbdfuse: fuse_loop: fuse loop terminated by signal {signal}");
            return 1;
        }
        if (result < 0)
        {
            Console.Error.WriteLine("nbdfuse: fuse_loop: " + Errno.Describe(-result));
            return 1;
        }
        return result == 0 ? 0 : 1;
    }

    /// <summary>libfuse's messages as one line (its "fuse: " prefix dropped), or <paramref name="otherwise"/>.</summary>
    private static string Said(string messages, string otherwise)
    {
        var lines = new List<string>();
        foreach (string line in messages.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            lines.Add(line.StartsWith("fuse: ", StringComparison.Ordinal) ? line["fuse: ".Length..] : line);
        return lines.Count == 0 ? otherwise : string.Join("; ", lines);
    }

    /// <summary>Detaches the mount: umount2(MNT_DETACH) as root, fusermount3 -u -z otherwise (what libfuse does).</summary>
    private static void LazyUnmount(string mountPoint)
    {
        if (LibC.GetEuid() == 0 && LibC.Umount2(mountPoint, 2 /* MNT_DETACH */) == 0)
            return;
        try
        {
            using Process? process = Process.Start(new ProcessStartInfo("fusermount3", ["-u", "-z", "--", mountPoint]) { UseShellExecute = false });
            process?.WaitForExit(5000);
        }
        catch (System.ComponentModel.Win32Exception)
        {
        }
    }

    /// <summary>A handle connected as the command line says (libnbd's create_and_connect).</summary>
    private static NbdHandle Connect(FuseOptions options)
    {
        var handle = new NbdHandle();
        try
        {
            handle.SetDebug(options.Verbose);
            // ?tls-psk-file and ?tls-certificates in URIs, as libnbd's nbdfuse allows.
            handle.SetUriAllowLocalFile(true);
            IReadOnlyList<string> target = options.Target;
            switch (options.Mode)
            {
                case ConnectMode.Uri:
                    handle.ConnectUri(target[0]);
                    break;
                case ConnectMode.Command:
                    handle.ConnectCommand(target);
                    break;
                case ConnectMode.SquareBracket or ConnectMode.SocketActivation:
                    handle.ConnectSystemdSocketActivation(target);
                    break;
                case ConnectMode.Fd:
                    if (!int.TryParse(target[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int fd) || fd < 0)
                        throw new ToolException("could not parse file descriptor: " + target[0]);
                    handle.ConnectSocket(new Socket(new SafeSocketHandle(fd, ownsHandle: true)));
                    break;
                case ConnectMode.Tcp:
                    handle.ConnectTcp(target[0], target[1]);
                    break;
                case ConnectMode.Unix:
                    handle.ConnectUnix(target[0]);
                    break;
                case ConnectMode.Vsock:
                    if (!uint.TryParse(target[0], NumberStyles.None, CultureInfo.InvariantCulture, out uint cid))
                        throw new ToolException("could not parse vsock cid: " + target[0]);
                    if (!uint.TryParse(target[1], NumberStyles.None, CultureInfo.InvariantCulture, out uint port))
                        throw new ToolException("could not parse vsock port: " + target[1]);
                    handle.ConnectVsock(cid, port);
                    break;
            }
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }
}

/// <summary>The few C library calls nbdfuse makes itself.</summary>
internal static partial class LibC
{
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "getegid")]
    public static partial uint GetEgid();

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Umount2(string target, int flags);

    /// <summary>vsnprintf, for libfuse's log messages (a <c>va_list</c> arrives as a pointer on x86-64 and arm64).</summary>
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    [LibraryImport("libc", EntryPoint = "vsnprintf")]
    public static unsafe partial int Vsnprintf(byte* buffer, nuint size, byte* format, nint args);
}
