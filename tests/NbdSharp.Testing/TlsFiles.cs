using System;
using System.IO;
using System.Security.Cryptography;

namespace NbdSharp.Testing;

/// <summary>
/// X.509 and PSK material for TLS tests, made with openssl in a temporary folder: a certificate authority, a server
/// certificate for <c>localhost</c> and 127.0.0.1, a client certificate, the folders nbdkit and libnbd expect, a
/// second authority that signed nothing of ours, and a PSK file.
/// </summary>
public sealed class TlsFiles : IDisposable
{
    private readonly TempDirectory _dir = new();

    /// <summary>Creates everything; needs openssl.</summary>
    public TlsFiles()
    {
        Requires.Program("openssl");
        string Path(string name) => _dir.File(name);
        MakeAuthority("ca", "NbdSharp test CA");
        MakeAuthority("other-ca", "Some other CA");
        MakeLeaf("server", "ca", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
        MakeLeaf("client", "ca", "nbdsharp-client", "extendedKeyUsage=clientAuth\n");

        ServerDirectory = Directory.CreateDirectory(Path("server-dir")).FullName;
        System.IO.File.Copy(Path("ca-cert.pem"), System.IO.Path.Combine(ServerDirectory, "ca-cert.pem"));
        System.IO.File.Copy(Path("server-cert.pem"), System.IO.Path.Combine(ServerDirectory, "server-cert.pem"));
        System.IO.File.Copy(Path("server-key.pem"), System.IO.Path.Combine(ServerDirectory, "server-key.pem"));

        ClientDirectory = Directory.CreateDirectory(Path("client-dir")).FullName;
        System.IO.File.Copy(Path("ca-cert.pem"), System.IO.Path.Combine(ClientDirectory, "ca-cert.pem"));
        System.IO.File.Copy(Path("client-cert.pem"), System.IO.Path.Combine(ClientDirectory, "client-cert.pem"));
        System.IO.File.Copy(Path("client-key.pem"), System.IO.Path.Combine(ClientDirectory, "client-key.pem"));

        TrustOnlyDirectory = Directory.CreateDirectory(Path("trust-only-dir")).FullName;
        System.IO.File.Copy(Path("ca-cert.pem"), System.IO.Path.Combine(TrustOnlyDirectory, "ca-cert.pem"));

        WrongAuthorityDirectory = Directory.CreateDirectory(Path("wrong-ca-dir")).FullName;
        System.IO.File.Copy(Path("other-ca-cert.pem"), System.IO.Path.Combine(WrongAuthorityDirectory, "ca-cert.pem"));

        PskFile = Path("keys.psk");
        PskKey = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        System.IO.File.WriteAllText(PskFile, $"someone:{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32))}\nalice:{PskKey}\n");
    }

    /// <summary>For nbdkit's --tls-certificates: ca-cert.pem, server-cert.pem, server-key.pem.</summary>
    public string ServerDirectory { get; }

    /// <summary>For the client: ca-cert.pem, client-cert.pem, client-key.pem.</summary>
    public string ClientDirectory { get; }

    /// <summary>For the client: ca-cert.pem only (no client certificate).</summary>
    public string TrustOnlyDirectory { get; }

    /// <summary>For the client: the ca-cert.pem of an authority that did not sign the server's certificate.</summary>
    public string WrongAuthorityDirectory { get; }

    /// <summary>A PSK file with users "someone" and "alice".</summary>
    public string PskFile { get; }

    /// <summary>Alice's key, in hexadecimal.</summary>
    public string PskKey { get; }

    /// <summary>The test folder (for more files).</summary>
    public string File(string name) => _dir.File(name);

    /// <summary>Writes ca-crl.pem revoking the server's certificate into a copy of the trust-only folder; returns the folder.</summary>
    public string RevokingDirectory()
    {
        string dir = Directory.CreateDirectory(_dir.File("revoking-dir")).FullName;
        string db = _dir.File("ca-index.txt");
        System.IO.File.WriteAllText(db, "");
        System.IO.File.WriteAllText(_dir.File("crlnumber"), "01\n");
        string config = _dir.File("ca.cnf");
        System.IO.File.WriteAllText(config,
            "[ca]\ndefault_ca = test\n[test]\n" +
            $"database = {db}\ncrlnumber = {_dir.File("crlnumber")}\ndefault_md = sha256\ndefault_crl_days = 30\n" +
            $"certificate = {_dir.File("ca-cert.pem")}\nprivate_key = {_dir.File("ca-key.pem")}\n");
        OpenSsl("ca", "-config", config, "-revoke", _dir.File("server-cert.pem"));
        OpenSsl("ca", "-config", config, "-gencrl", "-out", System.IO.Path.Combine(dir, "ca-crl.pem"));
        System.IO.File.Copy(_dir.File("ca-cert.pem"), System.IO.Path.Combine(dir, "ca-cert.pem"));
        return dir;
    }

    private void MakeAuthority(string name, string subject)
    {
        OpenSsl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=" + subject, "-keyout", _dir.File(name + "-key.pem"), "-out", _dir.File(name + "-cert.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    }

    private void MakeLeaf(string name, string authority, string commonName, string extensions)
    {
        string extFile = _dir.File(name + ".ext");
        System.IO.File.WriteAllText(extFile, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" + extensions);
        OpenSsl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + commonName,
            "-keyout", _dir.File(name + "-key.pem"), "-out", _dir.File(name + ".csr"));
        OpenSsl("x509", "-req", "-in", _dir.File(name + ".csr"), "-CA", _dir.File(authority + "-cert.pem"),
            "-CAkey", _dir.File(authority + "-key.pem"), "-CAcreateserial", "-days", "2", "-extfile", extFile,
            "-out", _dir.File(name + "-cert.pem"));
    }

    private static void OpenSsl(params string[] args) => Peers.Run("openssl", args);

    /// <summary>Deletes the folder.</summary>
    public void Dispose() => _dir.Dispose();
}
