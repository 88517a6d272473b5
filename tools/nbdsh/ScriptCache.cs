using System;
using System.Collections.Generic;
using System.IO;
using System.Reflection;
using System.Runtime.Loader;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Tasks;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// The compiled command lines of earlier runs, so that running the same code again (the same <c>-c</c> steps or
/// script, whatever the URI) skips the compiler, which is most of a cold run's time. Each code step is stored as the
/// assembly the compiler made for it, under a hash of the shell's build and the code of every step up to it; a run
/// uses the cache only when every one of its steps is there. Code with <c>#r</c> or <c>#load</c> (whose meaning
/// depends on other files) is never cached. The folder is <c>$XDG_CACHE_HOME/nbdsh</c> (<c>~/.cache/nbdsh</c>;
/// <c>%LOCALAPPDATA%\nbdsh\cache</c> on Windows), private to the user, trimmed to the most recently used entries;
/// <c>NBDSH_NO_CACHE=1</c> turns it off. This class does not touch the compiler: a run from the cache never loads it.
/// </summary>
internal sealed class ScriptCache
{
    /// <summary>The most entries kept: older ones are removed when a new one is stored.</summary>
    private const int MaxEntries = 256;

    private const string Extension = ".nbdsh";
    private static readonly byte[] Magic = "nbdsh-cache-2\n"u8.ToArray();

    private readonly string _folder;

    private ScriptCache(string folder) => _folder = folder;

    /// <summary>Where the entries are.</summary>
    public string Folder => _folder;

    /// <summary>The user's cache, or null when it is turned off or there is no home to keep it in.</summary>
    public static ScriptCache? Open()
    {
        if (Environment.GetEnvironmentVariable("NBDSH_NO_CACHE") is { Length: > 0 } off && off != "0")
            return null;
        string? folder;
        if (OperatingSystem.IsWindows())
        {
            string local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.DoNotVerify);
            folder = local.Length == 0 ? null : Path.Combine(local, "nbdsh", "cache");
        }
        else
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string? home = Environment.GetEnvironmentVariable("HOME");
            folder = xdg is { Length: > 0 } && Path.IsPathRooted(xdg) ? Path.Combine(xdg, "nbdsh")
                : home is { Length: > 0 } ? Path.Combine(home, ".cache", "nbdsh")
                : null;
        }
        return folder == null ? null : new ScriptCache(folder);
    }

    /// <summary>Whether a step's code may be cached: nothing in it refers to another file.</summary>
    public static bool Cacheable(string code) =>
        !code.Contains("#r", StringComparison.Ordinal) && !code.Contains("#load", StringComparison.Ordinal);

    /// <summary>
    /// The key of each step of <paramref name="steps"/>: a hash of this build of the shell and the library, the runtime,
    /// and the source and code of every step up to it. Null when some step cannot be cached.
    /// </summary>
    public static string[]? Keys(IReadOnlyList<ShellStep> steps)
    {
        var keys = new string[steps.Count];
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Magic);
        hash.AppendData(typeof(ScriptCache).Assembly.ManifestModule.ModuleVersionId.ToByteArray());
        hash.AppendData(typeof(NbdHandle).Assembly.ManifestModule.ModuleVersionId.ToByteArray());
        hash.AppendData(Encoding.UTF8.GetBytes(Environment.Version.ToString() + "\0"));
        for (int i = 0; i < steps.Count; i++)
        {
            if (!Cacheable(steps[i].Text))
                return null;
            AppendString(hash, steps[i].Source);
            AppendString(hash, steps[i].Text);
            keys[i] = Convert.ToHexStringLower(hash.GetCurrentHash());
        }
        return keys;
    }

    /// <summary>The compiled steps for <paramref name="keys"/>, loaded and ready to run, or null unless all are there.</summary>
    public CachedChain? TryLoad(string[] keys)
    {
        var entries = new CachedEntry[keys.Length];
        for (int i = 0; i < keys.Length; i++)
        {
            CachedEntry? entry = Read(Path.Combine(_folder, keys[i] + Extension));
            if (entry == null)
                return null;
            entries[i] = entry;
        }
        try
        {
            return new CachedChain(entries);
        }
        catch (Exception e) when (e is BadImageFormatException or FileLoadException or TypeLoadException or MissingMethodException or InvalidDataException)
        {
            // Damaged or from a build it does not fit: compile again, and the new entries replace these.
            foreach (string key in keys)
                TryDelete(Path.Combine(_folder, key + Extension));
            return null;
        }
    }

    /// <summary>Stores a compiled step under <paramref name="key"/> (best effort: a cache that cannot be written is no cache).</summary>
    public void Store(string key, CachedEntry entry)
    {
        try
        {
            if (OperatingSystem.IsWindows())
                Directory.CreateDirectory(_folder);
            else
                Directory.CreateDirectory(_folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            string path = Path.Combine(_folder, key + Extension);
            string temporary = path + "." + Environment.ProcessId + ".tmp";
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
            using (var writer = new BinaryWriter(file))
            {
                writer.Write(Magic);
                writer.Write(entry.ShowsValue);
                writer.Write(entry.TypeName);
                writer.Write(entry.MethodName);
                writer.Write(SHA256.HashData(entry.Image));
                writer.Write(entry.Image.Length);
                writer.Write(entry.Image);
            }
            File.Move(temporary, path, overwrite: true);
            Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static CachedEntry? Read(string path)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            using var reader = new BinaryReader(new MemoryStream(bytes, writable: false));
            if (!reader.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic))
                return null;
            bool showsValue = reader.ReadBoolean();
            string typeName = reader.ReadString();
            string methodName = reader.ReadString();
            byte[] digest = reader.ReadBytes(SHA256.HashSizeInBytes);
            int length = reader.ReadInt32();
            if (length <= 0 || length != bytes.Length - reader.BaseStream.Position)
                return null;
            byte[] image = reader.ReadBytes(length);
            // A file cut short or damaged on the disk is compiled again, never loaded.
            if (!SHA256.HashData(image).AsSpan().SequenceEqual(digest))
                return null;
            // Recently used: trimming removes the entries used longest ago.
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow);
            return new CachedEntry(image, typeName, methodName, showsValue);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or EndOfStreamException)
        {
            return null;
        }
    }

    private void Trim()
    {
        FileInfo[] files = new DirectoryInfo(_folder).GetFiles("*" + Extension);
        if (files.Length <= MaxEntries)
            return;
        Array.Sort(files, static (a, b) => a.LastWriteTimeUtc.CompareTo(b.LastWriteTimeUtc));
        for (int i = 0; i < files.Length - MaxEntries; i++)
            TryDelete(files[i].FullName);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private static void AppendString(IncrementalHash hash, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        hash.AppendData(BitConverter.GetBytes(bytes.Length));
        hash.AppendData(bytes);
    }
}

/// <summary>One compiled step: the submission's assembly and how to start it.</summary>
/// <param name="Image">The assembly (with its debug information embedded, for line numbers in stack traces).</param>
/// <param name="TypeName">The submission's type.</param>
/// <param name="MethodName">Its factory: <c>Task&lt;object&gt; M(object[] submissions)</c>.</param>
/// <param name="ShowsValue">Whether the step ends with an expression whose value is printed.</param>
internal sealed record CachedEntry(byte[] Image, string TypeName, string MethodName, bool ShowsValue);

/// <summary>
/// The steps of a command line loaded from the cache, run as the scripting runtime runs submissions: one array holds
/// the globals at 0 and each submission's instance after it, so that a step sees the variables of those before it.
/// </summary>
internal sealed class CachedChain
{
    private readonly MethodInfo[] _factories;
    private readonly bool[] _showsValue;
    private readonly object?[] _submissions;

    /// <exception cref="BadImageFormatException">An entry is not an assembly.</exception>
    /// <exception cref="MissingMethodException">An entry has no factory where it says.</exception>
    public CachedChain(CachedEntry[] entries)
    {
        var context = new SubmissionLoadContext();
        _factories = new MethodInfo[entries.Length];
        _showsValue = new bool[entries.Length];
        _submissions = new object?[entries.Length + 1];
        for (int i = 0; i < entries.Length; i++)
        {
            Assembly assembly = context.Add(entries[i].Image);
            Type type = assembly.GetType(entries[i].TypeName, throwOnError: false)
                ?? throw new MissingMethodException(entries[i].TypeName, entries[i].MethodName);
            _factories[i] = type.GetMethod(entries[i].MethodName, BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)
                ?? throw new MissingMethodException(entries[i].TypeName, entries[i].MethodName);
            _showsValue[i] = entries[i].ShowsValue;
        }
    }

    /// <summary>Runs step <paramref name="index"/> (after the ones before it) with <paramref name="globals"/>.</summary>
    public SubmissionResult Run(int index, ShellGlobals globals)
    {
        _submissions[0] = globals;
        object? value;
        try
        {
            var task = (Task<object>)_factories[index].Invoke(null, [_submissions])!;
            value = task.GetAwaiter().GetResult();
        }
        catch (TargetInvocationException e) when (e.InnerException != null)
        {
            return new SubmissionResult(null, e.InnerException);
        }
#pragma warning disable CA1031 // Whatever the code throws is its outcome, reported as the compiled path reports it.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return new SubmissionResult(null, e);
        }
        return new SubmissionResult(_showsValue[index] ? ValueFormatter.Format(value) : null, null);
    }

    /// <summary>Holds the submissions, which refer to each other by their (generated) assembly names.</summary>
    private sealed class SubmissionLoadContext() : AssemblyLoadContext("nbdsh-submissions")
    {
        private readonly Dictionary<string, Assembly> _loaded = new(StringComparer.Ordinal);

        public Assembly Add(byte[] image)
        {
            using var stream = new MemoryStream(image, writable: false);
            Assembly assembly = LoadFromStream(stream);
            _loaded[assembly.GetName().Name ?? ""] = assembly;
            return assembly;
        }

        // Anything else (the framework, NbdSharp, the shell's globals) is the application's own.
        protected override Assembly? Load(AssemblyName assemblyName) =>
            assemblyName.Name != null && _loaded.TryGetValue(assemblyName.Name, out Assembly? assembly) ? assembly : null;
    }
}
