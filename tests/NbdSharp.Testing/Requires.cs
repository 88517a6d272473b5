using System;
using System.IO;
using Xunit;

namespace NbdSharp.Testing;

/// <summary>
/// Gates tests on the programs they need. A missing program skips the test on a developer machine and fails
/// it when the <c>CI</c> environment variable is set, so that a misconfigured CI can never pass by skipping.
/// </summary>
public static class Requires
{
    public static bool IsCI => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI"));

    /// <summary>The full path of <paramref name="name"/> on PATH, or skip/fail.</summary>
    public static string Program(string name)
    {
        string? path = Find(name);
        if (path != null)
            return path;
        string message = $"required program '{name}' is not installed (apt-get install nbdkit qemu-utils nbd-server libnbd-bin)";
        if (IsCI)
            throw new InvalidOperationException(message);
        Assert.Skip(message);
        return "";
    }

    /// <summary>The full path of <paramref name="name"/> on PATH, or null.</summary>
    public static string? Find(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal))
            return File.Exists(name) ? name : null;
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            if (dir.Length == 0)
                continue;
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        foreach (string dir in new[] { "/usr/bin", "/usr/sbin", "/bin", "/sbin" })
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }
}
