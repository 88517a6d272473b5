using System;
using System.IO;

namespace NbdSharp.Tls;

/// <summary>PSK key files as GnuTLS's psktool writes them: one <c>username:hexkey</c> per line.</summary>
internal static class PskFile
{
    /// <summary>The key of <paramref name="username"/>.</summary>
    /// <exception cref="TlsFailure">The file cannot be read, or has no valid key for the user.</exception>
    public static byte[] Lookup(string path, string username)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            int errno = e switch
            {
                FileNotFoundException or DirectoryNotFoundException => Errno.ENOENT,
                UnauthorizedAccessException => Errno.EACCES,
                _ => Errno.EIO,
            };
            throw new TlsFailure(errno, "open: " + path + ": " + e.Message, e);
        }
        foreach (string line in lines)
        {
            if (line.Length <= username.Length + 1 || !line.StartsWith(username, StringComparison.Ordinal) || line[username.Length] != ':')
                continue;
            string hex = line[(username.Length + 1)..].TrimEnd('\r');
            try
            {
                return Convert.FromHexString(hex);
            }
            catch (FormatException e)
            {
                throw new TlsFailure(Errno.EINVAL, path + ": the key of user " + username + " is not hexadecimal", e);
            }
        }
        throw new TlsFailure(Errno.EINVAL, path + ": username " + username + " was not found in PSK file");
    }
}
