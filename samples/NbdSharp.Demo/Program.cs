using System;
using System.IO;
using System.Security.Cryptography;
using System.Threading.Tasks;
using NbdSharp.Server;

namespace NbdSharp.Demo;

/// <summary>
/// The quick start's demo: serves a 64 MiB memory disk with NbdSharp.Server in this very process on a temporary Unix
/// socket, connects to it with NbdSharp's client, writes 4 MiB in three API styles (synchronous, libnbd's aio with
/// cookies, Task-based), reads it back, compares, and prints what the server said about the export.
/// </summary>
internal static class Program
{
    private static async Task<int> Main()
    {
        string dir = Directory.CreateTempSubdirectory("nbdsharp-demo-").FullName;
        string socket = Path.Combine(dir, "nbd.sock");
        using var disk = new MemoryExport(64 << 20);
        var server = new NbdServer();
        server.AddExport("", disk, "the demo's memory disk");
        string uri = server.ListenUnix(socket);
        try
        {
            using var h = new NbdHandle();
            h.AddMetaContext(MetaContext.BaseAllocation);
            h.ConnectUri(uri);

            Console.WriteLine($"connected to NbdSharp.Server (in this process) at {uri}");
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
            await server.DisposeAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}
