using System;
using System.Globalization;
using System.IO;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Async;
using NbdSharp.Transport;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace NbdSharp.Tls;

/// <summary>
/// Turns the plaintext connection into a TLS one after the server accepted NBD_OPT_STARTTLS: X.509 with
/// <see cref="SslStream"/> (the platform's TLS), or TLS-PSK with BouncyCastle, which <see cref="SslStream"/> lacks.
/// </summary>
internal static class TlsUpgrade
{
    /// <summary>Runs the TLS handshake over <paramref name="inner"/> and returns the encrypted transport.</summary>
    /// <exception cref="TlsFailure">The handshake failed, with an errno and what went wrong.</exception>
    public static ValueTask<Transport.Transport> StartAsync(Transport.Transport inner, TlsCredentials credentials, bool async,
        CancellationToken cancellationToken)
    {
        SslProtocols protocols;
        try
        {
            protocols = TlsPriority.Protocols(credentials.Priority);
        }
        catch (FormatException e)
        {
            throw new TlsFailure(Errno.EINVAL, "tls priority \"" + credentials.Priority + "\": " + e.Message);
        }
        return credentials.PskFile != null
            ? StartPskAsync(inner, credentials, protocols, async, cancellationToken)
            : StartX509Async(inner, credentials, protocols, async, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<Transport.Transport> StartX509Async(Transport.Transport inner, TlsCredentials credentials,
        SslProtocols protocols, bool async, CancellationToken cancellationToken)
    {
        X509Files files = X509Files.Load(credentials.FindCertificates());
        string? failure = null;
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = credentials.ServerName ?? "",
            EnabledSslProtocols = protocols,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
            {
                failure = files.Verify(credentials, certificate, chain, errors);
                return failure == null;
            },
        };
        if (files.Client != null)
            options.ClientCertificates = [files.Client];
        // With a ca-cert.pem, SslStream builds the one chain with it as the only anchor.
        options.CertificateChainPolicy = files.ChainPolicy();
        var ssl = new SslStream(new TransportStream(inner), leaveInnerStreamOpen: false);
        try
        {
            if (async)
                await ssl.AuthenticateAsClientAsync(options, cancellationToken).ConfigureAwait(false);
            else
                ssl.AuthenticateAsClient(options);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            ssl.Dispose();
            files.Dispose();
            if (failure != null)
                throw new TlsFailure(Errno.EACCES, "server certificate verification failed: " + failure, e);
            throw Handshake(e);
        }
        files.DisposeTrust();
        return new StreamTransport(ssl, ssl.SslProtocol + ", " + ssl.NegotiatedCipherSuite + ", X.509", inner,
            () => new ValueTask(ssl.ShutdownAsync()));
    }

    [AsyncMethodBuilder(typeof(SyncPathBuilder<>))]
    private static async ValueTask<Transport.Transport> StartPskAsync(Transport.Transport inner, TlsCredentials credentials,
        SslProtocols protocols, bool async, CancellationToken cancellationToken)
    {
        byte[] key = PskFile.Lookup(credentials.PskFile!, credentials.Username);
        var client = new PskClient(new BcTlsCrypto(new SecureRandom()), credentials.Username, key, protocols);
        var protocol = new TlsClientProtocol(new TransportStream(inner));
        try
        {
            if (async)
                await Task.Run(() => protocol.Connect(client), cancellationToken).ConfigureAwait(false);
            else
                protocol.Connect(client);
        }
        catch (TlsFatalAlertReceived e) when (e.AlertDescription is AlertDescription.decrypt_error or AlertDescription.bad_record_mac
                                                  or AlertDescription.unknown_psk_identity or AlertDescription.handshake_failure)
        {
            throw new TlsFailure(Errno.EACCES, "TLS-PSK handshake failed: the server refused user '" + credentials.Username +
                                               "' or its key (" + AlertDescription.GetText(e.AlertDescription) + ")", e);
        }
        catch (TlsFatalAlert e) when (e.AlertDescription is AlertDescription.decrypt_error or AlertDescription.bad_record_mac)
        {
            throw new TlsFailure(Errno.EACCES, "TLS-PSK handshake failed: the server's key for user '" + credentials.Username +
                                               "' differs (" + AlertDescription.GetText(e.AlertDescription) + ")", e);
        }
        catch (IOException e)
        {
            // GnuTLS servers drop the connection, without an alert, when the client's Finished does not decrypt.
            TlsFailure failure = Handshake(e);
            throw new TlsFailure(failure.Errno, failure.Message + " (the server ended the TLS-PSK handshake: does it hold the same key for user '" +
                                                credentials.Username + "'?)", e);
        }
        finally
        {
            Array.Clear(key);
        }
        SecurityParameters negotiated = client.Negotiated;
        return new StreamTransport(new PskStream(protocol), negotiated.NegotiatedVersion + ", cipher suite 0x" +
            negotiated.CipherSuite.ToString("x4", CultureInfo.InvariantCulture) + ", PSK", inner, () =>
            {
                protocol.Close();
                return default;
            });
    }

    private static TlsFailure Handshake(Exception e)
    {
        for (Exception? inner = e; inner != null; inner = inner.InnerException)
        {
            if (inner is TransportException transport)
                return new TlsFailure(transport.Errno, "TLS handshake: " + transport.Message, e);
        }
        string detail = e.InnerException is { } cause && cause.Message != e.Message ? e.Message + ": " + cause.Message : e.Message;
        return new TlsFailure(Errno.ECONNRESET, "TLS handshake failed: " + detail, e);
    }
}

