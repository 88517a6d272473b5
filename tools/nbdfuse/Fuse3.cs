using System;
using System.Runtime.InteropServices;
using System.Text;

namespace NbdSharp.Tools.Fuse;

/// <summary>
/// The parts of libfuse 3's high-level API that nbdfuse uses, as libnbd's nbdfuse uses them (FUSE_USE_VERSION 35),
/// bound at run time so that versioned symbols can be chosen and a missing library is one clear error.
/// </summary>
internal static unsafe class Fuse3
{
    /// <summary>Slots of <c>struct fuse_operations</c> (libfuse 3.x, one pointer each).</summary>
    public const int OpGetattr = 0, OpOpen = 12, OpRead = 13, OpWrite = 14, OpFsync = 18, OpReaddir = 24,
        OpFallocate = 39, OperationCount = 42;

    private static readonly string[] LibraryNames = ["libfuse3.so.3", "libfuse3.so", "libfuse3"];

    private static delegate* unmanaged<FuseArgs*, byte*, int> s_optAddArg;
    private static delegate* unmanaged<FuseArgs*, void> s_optFreeArgs;
    private static delegate* unmanaged<FuseArgs*, void*, nuint, void*, nint> s_new;
    private static delegate* unmanaged<nint, nint> s_getSession;
    private static delegate* unmanaged<nint, byte*, int> s_mount;
    private static delegate* unmanaged<nint, void> s_unmount;
    private static delegate* unmanaged<nint, void> s_destroy;
    private static delegate* unmanaged<nint, int> s_loop;
    private static delegate* unmanaged<nint, void*, int> s_loopMt;
    private static delegate* unmanaged<nint> s_loopConfigCreate;
    private static delegate* unmanaged<nint, uint, void> s_loopConfigIdleThreads;
    private static delegate* unmanaged<nint, uint, void> s_loopConfigCloneFd;
    private static delegate* unmanaged<nint, void> s_loopConfigDestroy;
    private static delegate* unmanaged<nint, void> s_sessionExit;
    private static delegate* unmanaged<FuseArgs*, void> s_libHelp;
    private static delegate* unmanaged<FuseArgs*, void> s_cmdlineHelp;
    private static delegate* unmanaged<delegate* unmanaged<int, byte*, nint, void>, void> s_setLogFunc;
    private static bool s_newLoopConfig;
    private static readonly StringBuilder s_captured = new();
    private static bool s_capturing;

    /// <summary>Loads libfuse 3.</summary>
    /// <exception cref="ToolException">It is not installed, or too old.</exception>
    public static void Load()
    {
        nint library = 0;
        foreach (string name in LibraryNames)
        {
            if (NativeLibrary.TryLoad(name, out library))
                break;
        }
        if (library == 0)
            throw new ToolException("libfuse3 is not installed (Debian: apt-get install fuse3)");
        s_optAddArg = (delegate* unmanaged<FuseArgs*, byte*, int>)Export(library, "fuse_opt_add_arg");
        s_optFreeArgs = (delegate* unmanaged<FuseArgs*, void>)Export(library, "fuse_opt_free_args");
        // fuse_new as of FUSE 3.1 (the default version of the symbol since then).
        s_new = (delegate* unmanaged<FuseArgs*, void*, nuint, void*, nint>)(Optional(library, "fuse_new_31") is var n31 and not 0 ? n31 : Export(library, "fuse_new"));
        s_getSession = (delegate* unmanaged<nint, nint>)Export(library, "fuse_get_session");
        s_mount = (delegate* unmanaged<nint, byte*, int>)Export(library, "fuse_mount");
        s_unmount = (delegate* unmanaged<nint, void>)Export(library, "fuse_unmount");
        s_destroy = (delegate* unmanaged<nint, void>)Export(library, "fuse_destroy");
        s_loop = (delegate* unmanaged<nint, int>)Export(library, "fuse_loop");
        s_sessionExit = (delegate* unmanaged<nint, void>)Export(library, "fuse_session_exit");
        s_libHelp = (delegate* unmanaged<FuseArgs*, void>)Optional(library, "fuse_lib_help");
        s_cmdlineHelp = (delegate* unmanaged<FuseArgs*, void>)Optional(library, "fuse_cmdline_help");
        s_setLogFunc = (delegate* unmanaged<delegate* unmanaged<int, byte*, nint, void>, void>)Optional(library, "fuse_set_log_func");
        if (s_setLogFunc != null)
            s_setLogFunc(&Log);
        // FUSE 3.12 made the loop's configuration opaque (fuse_loop_cfg_*); before it, a two-field struct.
        nint create = Optional(library, "fuse_loop_cfg_create");
        nint loop312 = Optional(library, "fuse_loop_mt_312");
        if (create != 0 && loop312 != 0)
        {
            s_newLoopConfig = true;
            s_loopConfigCreate = (delegate* unmanaged<nint>)create;
            s_loopConfigIdleThreads = (delegate* unmanaged<nint, uint, void>)Export(library, "fuse_loop_cfg_set_idle_threads");
            s_loopConfigCloneFd = (delegate* unmanaged<nint, uint, void>)Export(library, "fuse_loop_cfg_set_clone_fd");
            s_loopConfigDestroy = (delegate* unmanaged<nint, void>)Export(library, "fuse_loop_cfg_destroy");
            s_loopMt = (delegate* unmanaged<nint, void*, int>)loop312;
        }
        else
        {
            s_loopMt = (delegate* unmanaged<nint, void*, int>)(Optional(library, "fuse_loop_mt_32") is var m32 and not 0 ? m32 : Export(library, "fuse_loop_mt"));
        }
    }

    /// <summary>Adds an argument to a FUSE argument list.</summary>
    public static void AddArg(FuseArgs* args, string arg)
    {
        using var text = new NativeString(arg);
        if (s_optAddArg(args, text.Pointer) != 0)
            throw new ToolException("fuse_opt_add_arg: out of memory");
    }

    /// <summary>Frees what <see cref="AddArg"/> allocated.</summary>
    public static void FreeArgs(FuseArgs* args) => s_optFreeArgs(args);

    /// <summary>fuse_new: the file system, or 0 (libfuse has printed why).</summary>
    public static nint New(FuseArgs* args, void* operations, nuint size) => s_new(args, operations, size, null);

    /// <summary>fuse_get_session.</summary>
    public static nint GetSession(nint fuse) => s_getSession(fuse);

    /// <summary>fuse_mount: 0, or -1 (libfuse has printed why).</summary>
    public static int Mount(nint fuse, string mountpoint)
    {
        using var text = new NativeString(mountpoint);
        return s_mount(fuse, text.Pointer);
    }

    /// <summary>fuse_unmount (nothing if already unmounted).</summary>
    public static void Unmount(nint fuse) => s_unmount(fuse);

    /// <summary>fuse_destroy.</summary>
    public static void Destroy(nint fuse) => s_destroy(fuse);

    /// <summary>fuse_session_exit: the loop ends at its next look at the session.</summary>
    public static void SessionExit(nint session) => s_sessionExit(session);

    /// <summary>The single-threaded loop (<c>-s</c>): 0 when the file system was unmounted.</summary>
    public static int Loop(nint fuse) => s_loop(fuse);

    /// <summary>The multi-threaded loop, with libnbd's nbdfuse settings (10 idle threads, no cloned fd).</summary>
    public static int LoopMt(nint fuse)
    {
        if (s_newLoopConfig)
        {
            nint config = s_loopConfigCreate();
            if (config == 0)
                throw new ToolException("fuse_loop_cfg_create: out of memory");
            try
            {
                s_loopConfigCloneFd(config, 0);
                s_loopConfigIdleThreads(config, 10);
                return s_loopMt(fuse, (void*)config);
            }
            finally
            {
                s_loopConfigDestroy(config);
            }
        }
        // struct fuse_loop_config { int clone_fd; unsigned max_idle_threads; } before FUSE 3.12.
        int* old = stackalloc int[2];
        old[0] = 0;
        old[1] = 10;
        return s_loopMt(fuse, old);
    }

    /// <summary>Prints libfuse's own options (<c>--fuse-help</c>), as <c>fuse_main</c> prints them for <c>--help</c>.</summary>
    public static void PrintHelp(string program)
    {
        FuseArgs args = default;
        try
        {
            AddArg(&args, program);
            // As fuse_main prints it for --help (libnbd's nbdfuse calls fuse_main so).
            Console.Out.Write("usage: " + program + " [options] <mountpoint>\n\nFUSE options:\n");
            Console.Out.Flush();
            if (s_cmdlineHelp != null)
                s_cmdlineHelp(&args);
            if (s_libHelp != null)
                s_libHelp(&args);
        }
        finally
        {
            FreeArgs(&args);
        }
    }

    /// <summary>
    /// From now until <see cref="StopCapture"/>, libfuse's messages are kept instead of printed, so that a failure to
    /// mount is one line that says libfuse's reason.
    /// </summary>
    public static void Capture()
    {
        lock (s_captured)
        {
            s_captured.Clear();
            s_capturing = true;
        }
    }

    /// <summary>Ends <see cref="Capture"/>: the messages kept, as libfuse wrote them (printed by the caller, or folded into an error).</summary>
    public static string StopCapture()
    {
        lock (s_captured)
        {
            s_capturing = false;
            return s_captured.ToString();
        }
    }

    /// <summary>libfuse's log function: <c>void (*)(enum fuse_log_level, const char *fmt, va_list ap)</c>.</summary>
    [UnmanagedCallersOnly]
    private static void Log(int level, byte* format, nint args)
    {
        const int Size = 2048;
        byte* buffer = stackalloc byte[Size];
        int n = LibC.Vsnprintf(buffer, Size, format, args);
        if (n < 0)
            return;
        // libfuse builds some messages from several calls (the unknown options one by one): kept as they come.
        string text = Encoding.UTF8.GetString(buffer, Math.Min(n, Size - 1));
        lock (s_captured)
        {
            if (s_capturing)
            {
                s_captured.Append(text);
                return;
            }
        }
        Console.Error.Write(text);
    }

    private static nint Export(nint library, string name) =>
        NativeLibrary.TryGetExport(library, name, out nint address)
            ? address
            : throw new ToolException("libfuse3 has no " + name + ": a FUSE 3 library is needed");

    private static nint Optional(nint library, string name) => NativeLibrary.TryGetExport(library, name, out nint address) ? address : 0;
}

/// <summary><c>struct fuse_args</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FuseArgs
{
    public int Argc;
    public byte** Argv;
    public int Allocated;
}

/// <summary>A NUL-terminated UTF-8 copy of a string in native memory.</summary>
internal readonly unsafe struct NativeString : IDisposable
{
    public NativeString(string text) => Pointer = (byte*)Marshal.StringToCoTaskMemUTF8(text);

    public byte* Pointer { get; }

    public void Dispose() => Marshal.FreeCoTaskMem((nint)Pointer);
}
