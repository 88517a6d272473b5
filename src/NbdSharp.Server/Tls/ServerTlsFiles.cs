using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace NbdSharp.Server;

/// <summary>
/// Loads TLS material the way nbdkit finds it, for <see cref="NbdServerOptions"/>: a <c>--tls-certificates</c>
/// folder (<c>server-cert.pem</c> and <c>server-key.pem</c>, and <c>ca-cert.pem</c> for verifying clients) and a
/// <c>--tls-psk</c> file of <c>username:hexkey</c> lines, as GnuTLS's <c>psktool</c> writes them.
/// </summary>
public static class ServerTlsFiles
{
    /// <summary>
    /// The server's certificate with its private key, for <see cref="NbdServerOptions.Certificate"/>: the first
    /// certificate of <c>server-cert.pem</c> and the (unencrypted) key of <c>server-key.pem</c> in
    /// <paramref name="directory"/>.
    /// </summary>
    /// <param name="directory">The certificates folder (nbdkit's <c>--tls-certificates</c>).</param>
    /// <returns>The certificate, which the caller disposes when the server no longer needs it.</returns>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is empty.</exception>
    /// <exception cref="DirectoryNotFoundException"><paramref name="directory"/> does not exist.</exception>
    /// <exception cref="FileNotFoundException"><c>server-cert.pem</c> or <c>server-key.pem</c> is missing.</exception>
    /// <exception cref="CryptographicException">A file holds no certificate or key, or the key is not the certificate's.</exception>
    public static X509Certificate2 LoadCertificate(string directory)
    {
        RequireDirectory(directory);
        string certificatePath = Path.Combine(directory, "server-cert.pem");
        string keyPath = Path.Combine(directory, "server-key.pem");
        RequireFile(certificatePath);
        RequireFile(keyPath);
        X509Certificate2 certificate;
        try
        {
            certificate = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            // A key that is not the certificate's is an ArgumentException.
            throw new CryptographicException(certificatePath + " with " + keyPath + ": " + e.Message, e);
        }
        if (!OperatingSystem.IsWindows())
            return certificate;
        // Windows' TLS cannot use a key that lives only in memory ("the platform does not support ephemeral keys"):
        // give it one it imported.
        using (certificate)
            return X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);
    }

    /// <summary>
    /// The certificate authorities of <c>ca-cert.pem</c> in <paramref name="directory"/> (every certificate in it),
    /// for <see cref="NbdServerOptions.ClientCertificateAuthorities"/>; null when there is no such file.
    /// </summary>
    /// <param name="directory">The certificates folder (nbdkit's <c>--tls-certificates</c>).</param>
    /// <returns>The authorities, or null without <c>ca-cert.pem</c>.</returns>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is empty.</exception>
    /// <exception cref="DirectoryNotFoundException"><paramref name="directory"/> does not exist.</exception>
    /// <exception cref="CryptographicException"><c>ca-cert.pem</c> holds no certificate, or a malformed one.</exception>
    public static X509Certificate2Collection? LoadAuthorities(string directory)
    {
        RequireDirectory(directory);
        string path = Path.Combine(directory, "ca-cert.pem");
        if (!File.Exists(path))
            return null;
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(path);
        }
        catch (CryptographicException e)
        {
            throw new CryptographicException(path + ": " + e.Message, e);
        }
        if (authorities.Count == 0)
            throw new CryptographicException(path + ": no certificate found");
        return authorities;
    }

    /// <summary>
    /// The identities and keys of a PSK file, for <see cref="NbdServerOptions.PskKeys"/>: one
    /// <c>username:hexkey</c> per line, as <c>psktool</c> writes them. Empty lines are skipped; if a username
    /// appears twice, its first key is used, as GnuTLS does.
    /// </summary>
    /// <param name="path">The PSK file (nbdkit's <c>--tls-psk</c>).</param>
    /// <returns>The keys by identity (case-sensitive).</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty.</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="FormatException">A line is not <c>username:hexkey</c> (the message names the file and the line), or the file holds no key.</exception>
    public static IReadOnlyDictionary<string, byte[]> LoadPskFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        RequireFile(path);
        string[] lines = File.ReadAllLines(path);
        var keys = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].TrimEnd();
            if (line.Length == 0)
                continue;
            string where = path + ":" + (i + 1).ToString(CultureInfo.InvariantCulture);
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
                throw new FormatException(where + ": expected username:hexkey");
            if (colon == 0)
                throw new FormatException(where + ": the username is empty");
            byte[] key;
            try
            {
                key = Convert.FromHexString(line.AsSpan(colon + 1));
            }
            catch (FormatException e)
            {
                throw new FormatException(where + ": the key of '" + line[..colon] + "' is not hexadecimal", e);
            }
            if (key.Length == 0)
                throw new FormatException(where + ": the key of '" + line[..colon] + "' is empty");
            keys.TryAdd(line[..colon], key);
        }
        if (keys.Count == 0)
            throw new FormatException(path + ": no keys (expected username:hexkey lines)");
        return keys;
    }

    private static void RequireDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException(directory + ": no such directory");
    }

    private static void RequireFile(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException(path + ": no such file", path);
    }
}
