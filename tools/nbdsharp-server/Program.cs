using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;
using Microsoft.Extensions.Logging;
using NbdSharp.Server;

namespace NbdSharp.Tools.Server;

/// <summary>
/// <c>nbdsharp-server</c>: NbdSharp.Server as a command with nbdkit's habits (options, export parameters, forking into
/// the background once listening, <c>-P</c>, <c>-s</c>, socket activation, <c>--run</c>, <c>--exit-with-parent</c>).
/// </summary>
internal static class Program
{
    public const string Name = "nbdsharp-server";

    /// <summary>How long a stop waits for requests in flight before cutting the connections still open.</summary>
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(5);

    /// <summary>Set in the background copy that the first process starts and waits for.</summary>
    private const string DaemonVariable = "NBDSHARP_SERVER_DAEMON";

    private static int Main(string[] args) => ToolMain.Run(Name, () => Run(args));

    private static int Run(string[] args)
    {
        ServerSettings settings = ServerCommandLine.Parse(args);
        if (settings.Help)
        {
            Console.Out.Write("usage: " + ServerCommandLine.Usage);
            return 0;
        }
        if (settings.Version)
        {
            Console.Out.Write(Name + " " + typeof(Program).Assembly.GetName().Version?.ToString(3) + "\n");
            return 0;
        }

        bool activated = Environment.GetEnvironmentVariable("LISTEN_PID") == Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        bool daemon = Environment.GetEnvironmentVariable(DaemonVariable) == "1";
        bool foreground = settings.Foreground || settings.Single || settings.Run != null || settings.ExitWithParent || activated;
        if (!foreground && !daemon && (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()))
            return StartInBackground(args);

        if (settings.ExitWithParent && OperatingSystem.IsLinux())
            ExitWithParent();

        using NbdExport export = ExportFactory.Create(settings.Plugin, settings.PluginArgs, settings.ReadOnly);
        var options = Options(settings);
        var logger = new StderrLogger(settings.Verbose ? LogLevel.Debug : LogLevel.Error);
        var server = new NbdServer(options, logger);
        using var stop = new CancellationTokenSource();
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Stop(c, stop));
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Stop(c, stop));
        using PosixSignalRegistration sighup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => Stop(c, stop));
        try
        {
            server.AddExport(settings.ExportName, export, settings.Description);
            if (settings.Single)
            {
                Console.SetOut(TextWriter.Null);
                server.ServeStdioAsync(stop.Token).GetAwaiter().GetResult();
                return 0;
            }

            string? tempDir = null;
            string? uri = null;
            int? port = null;
            string? unixSocket = null;
            try
            {
                if (activated && server.ListenSystemdActivation() > 0)
                {
                    uri = null;
                }
                else if (settings.UnixSocket != null || (settings.Run != null && settings.Port == null && settings.Address == null))
                {
                    unixSocket = settings.UnixSocket;
                    if (unixSocket == null || unixSocket == "-")
                    {
                        tempDir = Directory.CreateTempSubdirectory("nbdsharp-server-").FullName;
                        unixSocket = Path.Combine(tempDir, "socket");
                    }
                    unixSocket = Path.GetFullPath(unixSocket);
                    uri = server.ListenUnix(unixSocket);
                }
                else
                {
                    IPEndPoint bound = ListenTcp(server, settings);
                    port = bound.Port;
                    string host = bound.Address.Equals(IPAddress.IPv6Any) || bound.Address.Equals(IPAddress.Any) ? "localhost"
                        : bound.AddressFamily == AddressFamily.InterNetworkV6 ? "[" + bound.Address + "]" : bound.Address.ToString();
                    uri = "nbd://" + host + (bound.Port == 10809 ? "" : ":" + bound.Port.ToString(CultureInfo.InvariantCulture)) + "/";
                }
                if (uri != null && settings.ExportName.Length > 0)
                    uri = InsertExportName(uri, settings.ExportName);

                if (settings.PidFile != null)
                    WritePidFile(settings.PidFile);
                if (daemon)
                    SignalReady(keepStderr: settings.Verbose);

                if (settings.Run != null)
                    return RunCommand(settings, server, uri!, unixSocket, port, stop);
                server.RunAsync(stop.Token).GetAwaiter().GetResult();
                return 0;
            }
            finally
            {
                // Requests in flight get a moment to finish; a client that reads no replies does not hold the exit.
                using var grace = new CancellationTokenSource(StopGrace);
                server.StopAsync(grace.Token).GetAwaiter().GetResult();
                if (tempDir != null)
                    Directory.Delete(tempDir, recursive: true);
            }
        }
        catch (SocketException e)
        {
            throw new ToolException(e.Message);
        }
        catch (ArgumentException e)
        {
            throw new ToolException(e.Message);
        }
        finally
        {
            server.Dispose();
        }
    }

    private static void Stop(PosixSignalContext context, CancellationTokenSource stop)
    {
        context.Cancel = true;
        try
        {
            stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private static NbdServerOptions Options(ServerSettings settings)
    {
        var options = new NbdServerOptions
        {
            Tls = settings.Tls,
            Oldstyle = settings.Oldstyle,
            StructuredReplies = !settings.NoStructuredReplies,
            ExtendedHeaders = !settings.NoExtendedHeaders,
        };
        if (settings.Threads is int threads)
            options.MaxRequestsInFlight = threads;
        try
        {
            if (settings.TlsCertificates != null)
            {
                options.Certificate = ServerTlsFiles.LoadCertificate(settings.TlsCertificates);
                if (settings.TlsVerifyPeer)
                {
                    options.ClientCertificateAuthorities = ServerTlsFiles.LoadAuthorities(settings.TlsCertificates) ??
                        throw new ToolException("--tls-verify-peer: " + Path.Combine(settings.TlsCertificates, "ca-cert.pem") + " is missing");
                }
            }
            else if (settings.TlsPsk != null)
            {
                options.PskKeys = ServerTlsFiles.LoadPskFile(settings.TlsPsk);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or
            System.Security.Cryptography.CryptographicException)
        {
            throw new ToolException("tls: " + e.Message);
        }
        return options;
    }

    private static IPEndPoint ListenTcp(NbdServer server, ServerSettings settings)
    {
        int port = settings.Port ?? 10809;
        if (settings.Address == null)
        {
            if (Socket.OSSupportsIPv6)
            {
                try
                {
                    return server.ListenTcp(new IPEndPoint(IPAddress.IPv6Any, port));
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressFamilyNotSupported)
                {
                    // No IPv6 on this machine after all: IPv4 alone.
                }
            }
            return server.ListenTcp(new IPEndPoint(IPAddress.Any, port));
        }
        string text = settings.Address.StartsWith('[') && settings.Address.EndsWith(']') ? settings.Address[1..^1] : settings.Address;
        if (!IPAddress.TryParse(text, out IPAddress? address))
        {
            IPAddress[] found;
            try
            {
                found = Dns.GetHostAddresses(text);
            }
            catch (SocketException e)
            {
                throw new ToolException("-i " + settings.Address + ": " + e.Message);
            }
            if (found.Length == 0)
                throw new ToolException("-i " + settings.Address + ": no address");
            address = found[0];
        }
        return server.ListenTcp(new IPEndPoint(address, port));
    }

    private static string InsertExportName(string uri, string name)
    {
        string escaped = Uri.EscapeDataString(name);
        int query = uri.IndexOf('?', StringComparison.Ordinal);
        return query >= 0 ? uri[..query].TrimEnd('/') + "/" + escaped + uri[query..] : uri.TrimEnd('/') + "/" + escaped;
    }

    private static void WritePidFile(string path)
    {
        string full = Path.GetFullPath(path);
        string temp = full + ".tmp" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        File.WriteAllText(temp, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        File.Move(temp, full, overwrite: true);
    }

    private static int RunCommand(ServerSettings settings, NbdServer server, string uri, string? unixSocket, int? port, CancellationTokenSource stop)
    {
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(settings.Run!);
        start.Environment["uri"] = uri;
        start.Environment["nbd"] = uri;
        start.Environment["exportname"] = settings.ExportName;
        start.Environment["unixsocket"] = unixSocket ?? "";
        start.Environment["port"] = port?.ToString(CultureInfo.InvariantCulture) ?? "";
        using Process child = Process.Start(start) ?? throw new ToolException("--run: could not start /bin/sh");
        using (stop.Token.Register(static c => TryKill((Process)c!), child))
            child.WaitForExit();
        using var grace = new CancellationTokenSource(StopGrace);
        server.StopAsync(grace.Token).GetAwaiter().GetResult();
        return child.ExitCode;
    }

    private static void TryKill(Process child)
    {
        try
        {
            child.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
    }

    /// <summary>
    /// nbdkit forks into the background once it listens. .NET cannot fork, so this starts a second copy of the
    /// command in its own session and exits once that copy reports it is listening (or with its status if it fails).
    /// </summary>
    private static int StartInBackground(string[] args)
    {
        string process = Environment.ProcessPath ?? throw new ToolException("cannot find this program to start it in the background");
        var start = new ProcessStartInfo(process) { UseShellExecute = false, RedirectStandardOutput = true };
        string[] commandLine = Environment.GetCommandLineArgs();
        if (string.Equals(Path.GetFileNameWithoutExtension(process), "dotnet", StringComparison.Ordinal) && commandLine.Length > 0 &&
            commandLine[0].EndsWith(".dll", StringComparison.Ordinal))
            start.ArgumentList.Add(commandLine[0]);
        foreach (string arg in args)
            start.ArgumentList.Add(arg);
        start.Environment[DaemonVariable] = "1";
        using Process child = Process.Start(start) ?? throw new ToolException("could not start in the background");
        string? line = child.StandardOutput.ReadLine();
        if (line == "ready")
            return 0;
        child.WaitForExit();
        return child.ExitCode == 0 ? 1 : child.ExitCode;
    }

    /// <summary>
    /// Tells the launcher this copy listens, then detaches from it as nbdkit's background process does: a session of its
    /// own, standard input and output (and standard error, unless -v) on /dev/null, so that nobody waiting for the
    /// launcher's output waits for the server.
    /// </summary>
    private static void SignalReady(bool keepStderr)
    {
        Console.Out.Write("ready\n");
        Console.Out.Flush();
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            Native.SetSid();
            int devNull = Native.Open("/dev/null", 2);
            if (devNull >= 0)
            {
                Native.Dup2(devNull, 0);
                Native.Dup2(devNull, 1);
                if (!keepStderr)
                    Native.Dup2(devNull, 2);
                Native.Close(devNull);
            }
        }
        Console.SetOut(TextWriter.Null);
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static void ExitWithParent()
    {
        if (Native.Prctl(Native.PrSetPdeathsig, Native.SigTerm, 0, 0, 0) != 0)
            throw new ToolException("--exit-with-parent: prctl: " + Marshal.GetLastPInvokeError());
        // The parent may have gone before prctl: then this process was re-parented already.
        if (Native.GetPpid() == 1)
            throw new ToolException("--exit-with-parent: the parent process has already exited");
    }
}
