using System.Collections.Generic;
using System.IO;

namespace NbdSharp.Testing;

/// <summary>How tests start the real servers (as ../shared/reference/PEERS.md describes).</summary>
public static class Peers
{
    /// <summary>Starts <c>nbdkit -f -U SOCKET --exit-with-parent ARGS...</c>; e.g. <c>Nbdkit("memory", "64M")</c>.</summary>
    public static ServerProcess Nbdkit(params string[] args)
    {
        string program = Requires.Program("nbdkit");
        var dir = new TempDirectory();
        string socket = dir.File("nbdkit.sock");
        var all = new List<string> { "-f", "-U", socket, "--exit-with-parent" };
        all.AddRange(args);
        return ServerProcess.Start(dir, socket, program, all);
    }

    /// <summary>
    /// Starts NbdSharp's own server, <paramref name="program"/> (a built <c>nbdsharp-server</c>), as
    /// <c>nbdsharp-server -f -U SOCKET --exit-with-parent ARGS...</c>: nbdkit's arguments, e.g. <c>("memory", "64M")</c>.
    /// </summary>
    public static ServerProcess NbdSharpServer(string program, params string[] args)
    {
        var dir = new TempDirectory();
        string socket = dir.File("nbdsharp-server.sock");
        var all = new List<string> { "-f", "-U", socket, "--exit-with-parent" };
        all.AddRange(args);
        return ServerProcess.Start(dir, socket, program, all);
    }

    /// <summary>Starts <c>nbdkit -f -i 127.0.0.1 -p PORT --exit-with-parent ARGS...</c> (TCP on loopback only).</summary>
    public static ServerProcess NbdkitTcp(int port, params string[] args) => NbdkitTcpOn("127.0.0.1", port, args);

    /// <summary>Starts <c>nbdkit -f -i ADDRESS -p PORT --exit-with-parent ARGS...</c>.</summary>
    public static ServerProcess NbdkitTcpOn(string address, int port, params string[] args)
    {
        string program = Requires.Program("nbdkit");
        var dir = new TempDirectory();
        string pidFile = dir.File("nbdkit.pid");
        var all = new List<string> { "-f", "-i", address, "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-P", pidFile, "--exit-with-parent" };
        all.AddRange(args);
        return ServerProcess.StartTcp(dir, port, pidFile, program, all);
    }

    /// <summary>A loopback TCP port nobody listens on at the moment.</summary>
    public static int FreePort()
    {
        using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        return ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
    }

    /// <summary>As <see cref="NbdkitTcp"/> on a free loopback port, which it returns in <paramref name="port"/>.</summary>
    public static ServerProcess NbdkitOnFreePort(out int port, params string[] args)
    {
        for (int attempt = 0; ; attempt++)
        {
            port = FreePort();
            try
            {
                return NbdkitTcp(port, args);
            }
            catch (System.InvalidOperationException) when (attempt < 3)
            {
                // The port was taken between probing and binding: try another.
            }
        }
    }

    /// <summary>Starts qemu-nbd on the image <paramref name="prepare"/> creates in the server's folder.</summary>
    /// <param name="format">raw or qcow2.</param>
    /// <param name="prepare">Creates the image: gets the folder, returns the image path.</param>
    /// <param name="extraArgs">More qemu-nbd arguments (e.g. -B bitmap, -A, -r).</param>
    public static ServerProcess QemuNbd(string format, System.Func<TempDirectory, string> prepare, params string[] extraArgs)
    {
        string program = Requires.Program("qemu-nbd");
        var dir = new TempDirectory();
        string image = prepare(dir);
        string socket = dir.File("qemu.sock");
        var all = new List<string> { "-t", "-e", "16", "-k", socket, "-f", format };
        all.AddRange(extraArgs);
        all.Add(image);
        return ServerProcess.Start(dir, socket, program, all);
    }

    /// <summary>Starts nbd-server (simple replies only) exporting the file <paramref name="prepare"/> creates as <paramref name="exportName"/>.</summary>
    public static ServerProcess NbdServer(string exportName, System.Func<TempDirectory, string> prepare)
    {
        string program = Requires.Program("nbd-server");
        var dir = new TempDirectory();
        string file = prepare(dir);
        string socket = dir.File("ns.sock");
        string config = dir.File("nbd-server.conf");
        string pidFile = dir.File("ns.pid");
        File.WriteAllText(config,
            "[generic]\n" +
            $"    unixsock = {socket}\n" +
            "    allowlist = true\n" +
            $"[{exportName}]\n" +
            $"    exportname = {file}\n");
        return ServerProcess.Start(dir, socket, program, new[] { "-C", config, "-p", pidFile }, pidFile);
    }

    /// <summary>Runs a program to completion (e.g. qemu-img) and returns its stdout; throws on failure.</summary>
    public static string Run(string program, params string[] args)
    {
        string path = Requires.Program(program);
        var info = new System.Diagnostics.ProcessStartInfo(path)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string arg in args)
            info.ArgumentList.Add(arg);
        using var process = System.Diagnostics.Process.Start(info)!;
        var stderrTask = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = stderrTask.GetAwaiter().GetResult();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new System.InvalidOperationException($"{program} {string.Join(' ', args)} failed ({process.ExitCode}): {stderr}");
        return stdout;
    }
}
