using System;
using System.Diagnostics;
using System.IO;
using System.Security.Cryptography;
using System.Threading;
using System.Threading.Tasks;

namespace NbdSharp.Demo;

/// <summary>
/// The quick start's demo: starts <c>nbdkit memory 64M</c> on a temporary Unix socket, connects with NbdSharp,
/// writes 4 MiB in three API styles (synchronous, libnbd's aio with cookies, Task-based), reads it back,
/// compares, and prints what the server said about the export.
/// </summary>
internal static class Program
{
    private static async Task<int> Main()
    {
        string dir = Directory.CreateTempSubdirectory("nbdsharp-demo-").FullName;
        string socket = Path.Combine(dir, "nbdkit.sock");
        using Process? nbdkit = StartNbdkit(socket);
        if (nbdkit == null)
            return 1;
        try
        {
            using var h = new NbdHandle();
            h.AddMetaContext(MetaContext.BaseAllocation);
            h.ConnectUri("nbd+unix:///?socket=" + socket);

            Console.WriteLine($"connected to nbdkit on {socket}");
            Console.WriteLine($"  protocol:        {h.GetProtocol()}, structured replies: {h.GetStructuredRepliesNegotiated()}");
            Console.WriteLine($"  export size:     {h.GetSize()} bytes");
            Console.WriteLine($"  read-only:       {h.IsReadOnly()}");
            Console.WriteLine($"  can flush/fua:   {h.CanFlush()}/{h.CanFua()}");
            Console.WriteLine($"  can trim/zero:   {h.CanTrim()}/{h.CanZero()} (fast zero: {h.CanFastZero()})");
            Console.WriteLine($"  can cache/df:    {h.CanCache()}/{h.CanDf()}");
            Console.WriteLine($"  multi-conn:      {h.CanMultiConn()}");
            Console.WriteLine($"  base:allocation: {h.CanMetaContext(MetaContext.BaseAllocation)}");

            byte[] data = new byte[4 << 20];
            RandomNumberGenerator.Fill(data);
            const int chunk = 1 << 20;

            // libnbd's synchronous call.
            h.Pwrite(data.AsSpan(0, chunk), 0);
            // libnbd's asynchronous calls: cookies, completion callbacks, Poll.
            int completed = 0;
            for (int i = 1; i < 3; i++)
            {
                h.AioPwrite(data.AsMemory(i * chunk, chunk), (ulong)(i * chunk), (ref int error) =>
                {
                    if (error != 0)
                        throw new IOException("write failed: " + Errno.Describe(error));
                    completed++;
                    return 1;
                });
            }
            while (h.AioInFlight() > 0)
                h.Poll(-1);
            // The Task-based call.
            await h.PwriteAsync(data.AsMemory(3 * chunk, chunk), 3 * chunk);
            await h.FlushAsync();

            byte[] back = new byte[data.Length];
            await h.PreadAsync(back, 0);
            bool same = back.AsSpan().SequenceEqual(data);
            Console.WriteLine($"wrote 4 MiB (sync, {completed} aio, async), read it back: {(same ? "identical" : "DIFFERENT")}");

            ulong allocated = 0;
            h.BlockStatus((ulong)h.GetSize(), 0, (string _, ulong _, ReadOnlySpan<uint> entries, ref int _) =>
            {
                for (int i = 0; i < entries.Length; i += 2)
                {
                    if ((entries[i + 1] & (uint)BlockStatusFlag.Hole) == 0)
                        allocated += entries[i];
                }
                return 0;
            });
            Console.WriteLine($"block status: {allocated} bytes allocated of {h.GetSize()}");
            Console.WriteLine($"statistics: {h.StatsBytesSent()} bytes sent, {h.StatsBytesReceived()} received");
            h.Shutdown();
            return same ? 0 : 1;
        }
        catch (NbdException e)
        {
            Console.Error.WriteLine("nbdsharp-demo: " + e.Message);
            return 1;
        }
        finally
        {
            if (!nbdkit.HasExited)
                nbdkit.Kill();
            nbdkit.WaitForExit();
            Directory.Delete(dir, recursive: true);
        }
    }

    private static Process? StartNbdkit(string socket)
    {
        var info = new ProcessStartInfo("nbdkit") { UseShellExecute = false };
        foreach (string arg in new[] { "-f", "--exit-with-parent", "-U", socket, "memory", "64M" })
            info.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.Error.WriteLine("nbdsharp-demo: cannot start nbdkit (apt-get install nbdkit): " + e.Message);
            return null;
        }
        for (int i = 0; i < 500 && !File.Exists(socket); i++)
            Thread.Sleep(10);
        if (File.Exists(socket))
            return process;
        Console.Error.WriteLine("nbdsharp-demo: nbdkit did not start");
        process.Kill();
        process.Dispose();
        return null;
    }
}
