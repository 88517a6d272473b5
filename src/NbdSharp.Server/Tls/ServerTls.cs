using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using System.Threading.Tasks;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace NbdSharp.Server.Tls;

/// <summary>
/// The server's side of NBD_OPT_STARTTLS: X.509 over the platform's TLS (<see cref="SslStream"/>), optionally
/// requiring client certificates from given authorities, or TLS-PSK through BouncyCastle, which
/// <see cref="SslStream"/> lacks (TLS 1.3 with the key as an external PSK, or TLS 1.2 (EC)DHE-PSK suites).
/// </summary>
internal static class ServerTls
{
    private static readonly ConditionalWeakTable<X509Certificate2, SslStreamCertificateContext> Contexts = new();

    /// <summary>
    /// Runs the server's side of the TLS handshake over <paramref name="transport"/>, which is past the reply to
    /// NBD_OPT_STARTTLS, and returns the encrypted stream; that stream owns <paramref name="transport"/>, and on
    /// failure <paramref name="transport"/> has been disposed. The returned stream allows one reader and one writer
    /// at the same time.
    /// </summary>
    /// <exception cref="AuthenticationException">The handshake failed; the message says why (for the log).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (the transport is then closed).</exception>
    public static Task<Stream> AcceptAsync(Stream transport, NbdServerOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Certificate != null)
            return AcceptX509Async(transport, options.Certificate, options.ClientCertificateAuthorities, cancellationToken);
        if (options.PskKeys is { Count: > 0 } keys)
            return AcceptPskAsync(transport, keys, cancellationToken);
        transport.Dispose();
        return Task.FromException<Stream>(new AuthenticationException("the server has neither a certificate nor PSK keys"));
    }

    private static async Task<Stream> AcceptX509Async(Stream transport, X509Certificate2 certificate,
        X509Certificate2Collection? authorities, CancellationToken cancellationToken)
    {
        string? failure = null;
        var ssl = new SslStream(transport, leaveInnerStreamOpen: false);
        try
        {
            var settings = new SslServerAuthenticationOptions
            {
                // Built once per certificate (offline: the chain is not fetched from the network).
                ServerCertificateContext = Contexts.GetValue(certificate,
                    static c => SslStreamCertificateContext.Create(c, additionalCertificates: null, offline: true)),
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = authorities != null,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                AllowRenegotiation = false,
            };
            if (authorities != null)
            {
                settings.RemoteCertificateValidationCallback = (_, presented, chain, _) =>
                {
                    failure = VerifyClient(presented, chain, authorities);
                    return failure == null;
                };
            }
            using (cancellationToken.Register(static s => ((Stream)s!).Dispose(), transport))
                await ssl.AuthenticateAsServerAsync(settings, cancellationToken).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            return ssl;
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested && Expected(e))
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            throw new OperationCanceledException("the TLS handshake was cancelled", e, cancellationToken);
        }
        catch (Exception e) when (Expected(e))
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            if (failure != null)
                throw new AuthenticationException("client certificate rejected: " + failure, e);
            throw new AuthenticationException("X.509: " + Detail(e), e);
        }
    }

    /// <summary>
    /// Null when <paramref name="certificate"/> chains to one of <paramref name="authorities"/> (the only trust
    /// anchors; no revocation check) and may be used for client authentication, else why not.
    /// </summary>
    internal static string? VerifyClient(X509Certificate? certificate, X509Chain? presented, X509Certificate2Collection authorities)
    {
        if (certificate == null)
            return "the client sent no certificate, and one is required";
        X509Certificate2 leaf = certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        try
        {
            using var chain = new X509Chain();
            X509ChainPolicy policy = chain.ChainPolicy;
            policy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            policy.CustomTrustStore.AddRange(authorities);
            policy.RevocationMode = X509RevocationMode.NoCheck;
            policy.VerificationFlags = X509VerificationFlags.NoFlag;
            // A certificate restricted to other purposes (an extended key usage without clientAuth) is refused.
            policy.ApplicationPolicy.Add(new Oid("1.3.6.1.5.5.7.3.2", null));
            // The intermediates the client sent along.
            if (presented != null)
                policy.ExtraStore.AddRange(presented.ChainPolicy.ExtraStore);
            if (chain.Build(leaf))
                return null;
            return "\"" + leaf.Subject + "\" is not trusted: " + Describe(chain);
        }
        finally
        {
            if (!ReferenceEquals(leaf, certificate))
                leaf.Dispose();
        }
    }

    private static string Describe(X509Chain chain)
    {
        var statuses = new List<string>();
        foreach (X509ChainStatus status in chain.ChainStatus)
        {
            string text = status.StatusInformation.Trim();
            statuses.Add(text.Length > 0 ? text : status.Status.ToString());
        }
        return statuses.Count == 0 ? "the chain is incomplete" : string.Join("; ", statuses);
    }

    private static async Task<Stream> AcceptPskAsync(Stream transport, IReadOnlyDictionary<string, byte[]> keys,
        CancellationToken cancellationToken)
    {
        var server = new PskServer(new BcTlsCrypto(new SecureRandom()), keys);
        var stream = new PskServerStream(transport);
        bool connected = false;
        try
        {
            using (cancellationToken.Register(static s => ((Stream)s!).Dispose(), transport))
                await stream.HandshakeAsync(server, cancellationToken).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            connected = true;
            return stream;
        }
        catch (Exception e) when (cancellationToken.IsCancellationRequested && Expected(e))
        {
            throw new OperationCanceledException("the TLS handshake was cancelled", e, cancellationToken);
        }
        catch (Exception e) when (Expected(e))
        {
            if (stream.AlertSent)
                await stream.DrainAsync(cancellationToken).ConfigureAwait(false);
            throw new AuthenticationException(DescribePskFailure(server, e), e);
        }
        finally
        {
            if (!connected)
                await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Why, for the server's "TLS handshake failed: " log line.</summary>
    private static string DescribePskFailure(PskServer server, Exception e)
    {
        string what = server.Identity != null ? "TLS-PSK, identity '" + server.Identity + "': " : "TLS-PSK: ";
        if (server.AlertReceived >= 0)
            return what + "the client sent alert " + AlertDescription.GetText(server.AlertReceived);
        if (server.AlertRaised is { } raised)
        {
            // A key that differs shows as a binder (TLS 1.3) or a Finished message (TLS 1.2) that does not verify.
            bool key = raised.StartsWith(AlertDescription.GetName(AlertDescription.decrypt_error), StringComparison.Ordinal) ||
                       raised.StartsWith(AlertDescription.GetName(AlertDescription.bad_record_mac), StringComparison.Ordinal);
            return what + raised + (key && server.Identity != null ? " (the client's key differs)" : "");
        }
        return what + Detail(e);
    }

    private static bool Expected(Exception e) =>
        e is IOException or AuthenticationException or ObjectDisposedException or OperationCanceledException or
            System.Net.Sockets.SocketException or CryptographicException;

    private static string Detail(Exception e) =>
        e.InnerException is { } inner && inner.Message != e.Message ? e.Message + ": " + inner.Message : e.Message;
}
