using System;
using System.IO;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

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

    /// <summary>
    /// A server folder (ca-cert.pem, server-cert.pem, server-key.pem) and a client folder trusting its authority,
    /// where the server's certificate (localhost, 127.0.0.1) is valid only from <paramref name="notBefore"/> to
    /// <paramref name="notAfter"/>, inside the authority's own 60 days around today: an expired or not yet valid
    /// certificate from an otherwise trusted authority, which openssl x509 here cannot date.
    /// </summary>
    public (string Server, string Client) DirectoriesValid(string name, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        string server = Directory.CreateDirectory(_dir.File("server-dir-" + name)).FullName;
        string client = Directory.CreateDirectory(_dir.File("client-dir-" + name)).FullName;
        DateTimeOffset now = DateTimeOffset.UtcNow;

        using ECDsa caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=NbdSharp dated test CA " + name, caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(now.AddDays(-30), now.AddDays(30));

        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using X509Certificate2 certificate = request.Create(ca, notBefore, notAfter, RandomNumberGenerator.GetBytes(16));

        string caPem = ca.ExportCertificatePem() + "\n";
        System.IO.File.WriteAllText(System.IO.Path.Combine(server, "ca-cert.pem"), caPem);
        System.IO.File.WriteAllText(System.IO.Path.Combine(server, "server-cert.pem"), certificate.ExportCertificatePem() + "\n");
        System.IO.File.WriteAllText(System.IO.Path.Combine(server, "server-key.pem"), key.ExportPkcs8PrivateKeyPem() + "\n");
        System.IO.File.WriteAllText(System.IO.Path.Combine(client, "ca-cert.pem"), caPem);
        return (server, client);
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
