using System;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace NbdSharp.Tools.Iops;

/// <summary>
/// The C# twin of libnbd's bench/iops.c: the same command line, loops and one-line key=value output, so the
/// two can be run side by side on the same server.
/// <code>
/// nbd-iops URI read|write QD SECONDS [BS]   random BS-byte reads or writes, QD in flight (aio + Poll)
/// nbd-iops URI lat SECONDS [BS]             synchronous Pread round trips (QD1)
/// nbd-iops URI connect COUNT                connect + handshake + shutdown, COUNT times
/// </code>
/// Like libnbd 1.18+, NbdSharp asks for extended headers first, which costs a round trip on servers that
/// refuse them. NBD_IOPS_EXTENDED_HEADERS=0 skips that request, as libnbd before 1.18 (Debian 12's 1.14) does,
/// for like-for-like handshake comparisons.
/// </summary>
internal static class Program
{
    private const int MaxQueueDepth = 1024;
    private const ulong MaxOps = 200_000_000;
    private const int MaxSamples = 4_000_000;

    private static readonly bool RequestExtendedHeaders = Environment.GetEnvironmentVariable("NBD_IOPS_EXTENDED_HEADERS") != "0";

    private static ulong s_rngState = 0x9E3779B97F4A7C15UL;

    private static NbdHandle Connect(string uri)
    {
        var h = new NbdHandle();
        try
        {
            h.SetRequestExtendedHeaders(RequestExtendedHeaders);
            h.SetUriAllowLocalFile(true); // as nbdinfo and nbdcopy: TLS files named in the URI
            h.ConnectUri(uri);
            return h;
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    private static int Main(string[] args)
    {
        if (args.Length < 3)
            return Usage();
        string uri = args[0];
        string mode = args[1];
        try
        {
            if (mode == "connect")
                return RunConnect(uri, long.Parse(args[2], CultureInfo.InvariantCulture));

            using NbdHandle h = Connect(uri);
            int result;
            if (mode == "lat")
            {
                double secs = double.Parse(args[2], CultureInfo.InvariantCulture);
                int bs = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 4096;
                if (secs <= 0 || secs > 600 || bs <= 0 || bs > 32 << 20)
                    return Usage();
                result = RunLatency(h, secs, bs);
            }
            else if (mode is "read" or "write")
            {
                if (args.Length < 4)
                    return Usage();
                int qd = int.Parse(args[2], CultureInfo.InvariantCulture);
                double secs = double.Parse(args[3], CultureInfo.InvariantCulture);
                int bs = args.Length > 4 ? int.Parse(args[4], CultureInfo.InvariantCulture) : 4096;
                if (qd < 1 || qd > MaxQueueDepth || secs <= 0 || secs > 600 || bs <= 0 || bs > 32 << 20)
                    return Usage();
                result = RunAio(h, mode == "write", qd, secs, bs);
            }
            else
            {
                return Usage();
            }
            h.Shutdown();
            return result;
        }
        catch (NbdException e)
        {
            Console.Error.WriteLine("nbd-iops: " + e.Message);
            return 1;
        }
        catch (FormatException)
        {
            return Usage();
        }
    }

    private static int Usage()
    {
        Console.Error.WriteLine("usage: nbd-iops URI read|write QD SECONDS [BS]");
        Console.Error.WriteLine("       nbd-iops URI lat SECONDS [BS]");
        Console.Error.WriteLine("       nbd-iops URI connect COUNT");
        return 2;
    }

    /// <summary>xorshift64*, the generator iops.c uses, so both pick the same offsets.</summary>
    private static ulong NextRandom()
    {
        s_rngState ^= s_rngState >> 12;
        s_rngState ^= s_rngState << 25;
        s_rngState ^= s_rngState >> 27;
        return s_rngState * 0x2545F4914F6CDD1DUL;
    }

    private static double Now() => Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;

    private static int RunAio(NbdHandle h, bool write, int qd, double secs, int bs)
    {
        ulong blocks = (ulong)h.GetSize() / (ulong)bs;
        if (blocks == 0)
        {
            Console.Error.WriteLine("nbd-iops: export too small");
            return 1;
        }
        byte[] buffers = GC.AllocateArray<byte>(qd * bs, pinned: true);
        buffers.AsSpan().Fill(0xA5);
        int[] free = new int[qd];
        int freeTop = qd;
        ulong done = 0;
        int ioError = 0;
        var callbacks = new CompletionCallback[qd];
        for (int i = 0; i < qd; i++)
        {
            free[i] = i;
            int slot = i;
            callbacks[i] = (ref int error) =>
            {
                if (error != 0)
                    ioError = error;
                free[freeTop++] = slot;
                done++;
                return 1;
            };
        }

        ulong issued = 0;
        double t0 = Now(), deadline = t0 + secs;
        while (true)
        {
            while (freeTop > 0)
            {
                int i = free[--freeTop];
                ulong offset = NextRandom() % blocks * (ulong)bs;
                // The array is pinned already: a Memory that says so is not pinned again (no GC handle per command).
                var buffer = MemoryMarshal.CreateFromPinnedArray(buffers, i * bs, bs);
                if (write)
                    h.AioPwrite(buffer, offset, callbacks[i]);
                else
                    h.AioPread(buffer, offset, callbacks[i]);
                issued++;
            }
            h.Poll(-1);
            if (ioError != 0)
            {
                Console.Error.WriteLine("nbd-iops: I/O error " + ioError.ToString(CultureInfo.InvariantCulture));
                return 1;
            }
            if (issued >= MaxOps || Now() >= deadline)
                break;
        }
        while (h.AioInFlight() > 0)
            h.Poll(-1);
        double elapsed = Now() - t0;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"mode={(write ? "write" : "read")} qd={qd} bs={bs} secs={elapsed:F3} ops={done} iops={done / elapsed:F0} mibps={done * (double)bs / elapsed / 1048576.0:F1}"));
        return 0;
    }

    private static int RunLatency(NbdHandle h, double secs, int bs)
    {
        ulong blocks = (ulong)h.GetSize() / (ulong)bs;
        byte[] buffer = new byte[bs];
        double[] latencies = new double[MaxSamples];
        int n = 0;
        double t0 = Now(), deadline = t0 + secs, t = t0;
        while (n < MaxSamples && t < deadline)
        {
            ulong offset = NextRandom() % blocks * (ulong)bs;
            double a = Now();
            h.Pread(buffer, offset);
            t = Now();
            latencies[n++] = (t - a) * 1e6;
        }
        double elapsed = t - t0, sum = 0;
        for (int i = 0; i < n; i++)
            sum += latencies[i];
        Array.Sort(latencies, 0, n);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"mode=lat bs={bs} secs={elapsed:F3} ops={n} iops={n / elapsed:F0} p50_us={Percentile(latencies, n, .50):F1} p90_us={Percentile(latencies, n, .90):F1} p99_us={Percentile(latencies, n, .99):F1} mean_us={sum / n:F1} min_us={latencies[0]:F1}"));
        return 0;
    }

    private static int RunConnect(string uri, long count)
    {
        count = Math.Clamp(count, 1, 1_000_000);
        double[] latencies = new double[count];
        double t0 = Now();
        for (long i = 0; i < count; i++)
        {
            double a = Now();
            using (NbdHandle h = Connect(uri))
                h.Shutdown();
            latencies[i] = (Now() - a) * 1e6;
        }
        double elapsed = Now() - t0, sum = 0;
        foreach (double l in latencies)
            sum += l;
        Array.Sort(latencies);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"mode=connect count={count} secs={elapsed:F3} per_s={count / elapsed:F0} p50_us={Percentile(latencies, (int)count, .50):F1} p90_us={Percentile(latencies, (int)count, .90):F1} mean_us={sum / count:F1} min_us={latencies[0]:F1}"));
        return 0;
    }

    private static double Percentile(double[] values, int n, double p) =>
        n == 0 ? 0 : values[(int)((p * (n - 1)) + 0.5)];
}
