using System;
using System.Linq;
using System.Threading;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.InteropTests;

/// <summary>Many threads on one handle, in every API form at once; sync calls without the thread pool.</summary>
[Collection(nameof(ThreadPoolCollection))]
public class ConcurrencyTests
{
    /// <summary>
    /// A thread that waits to send on one handle (its socket is full) reads that handle's replies meanwhile; their
    /// callbacks issue a command on a second handle and another on the first (which must wait for the request
    /// being sent). The second handle's send must not make the first forget it is mid-request: its deferred command
    /// would be written into the middle of the other's payload (nbdcopy found this; the server then saw garbage
    /// where a request header belongs and hung up).
    /// </summary>
    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void CallbacksSendingOnAnotherHandle_WhileThisOneWaitsToSend_KeepRequestsWhole(Peer peer)
    {
        using var first = WellBehavedServer.Start(peer, "memory", "64M");
        using var second = WellBehavedServer.Start(peer, "memory", "64M");
        using var x = new NbdHandle();
        using var y = new NbdHandle();
        x.ConnectUri(first.Uri);
        y.ConnectUri(second.Uri);
        byte[] big = new byte[256 * 1024];
        new Random(5).NextBytes(big);
        byte[] small = new byte[4096];
        Array.Fill(small, (byte)0xa8);
        int callbacks = 0;
        CompletionCallback onWrite = (ref int error) =>
        {
            Assert.Equal(0, error);
            int n = Interlocked.Increment(ref callbacks);
            y.AioPwrite(small, (ulong)(n % 1024) * 4096, null);
            x.AioZero(4096, 48UL * 1024 * 1024 + (ulong)(n % 1024) * 4096, null);
            return 1;
        };
        for (int round = 0; round < 40; round++)
        {
            for (int i = 0; i < 64; i++)
                x.AioPwrite(big, (ulong)(i % 160) * (ulong)big.Length, onWrite);
            while (x.AioInFlight() > 0 || y.AioInFlight() > 0)
            {
                if (x.AioInFlight() > 0)
                    x.Poll(10);
                if (y.AioInFlight() > 0)
                    y.Poll(10);
            }
        }
        Assert.Equal(40 * 64, callbacks);
        byte[] back = new byte[big.Length];
        x.Pread(back, 0);
        Assert.Equal(big, back);
        y.Pread(back.AsSpan(0, 4096), 4096);
        Assert.Equal(small, back[..4096]);
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void ManyThreads_SyncAioAndAsyncTogether_OnOneHandle(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        const int threads = 12, rounds = 150, block = 16384;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            try
            {
                var random = new Random(t);
                byte[] data = new byte[block], back = new byte[block];
                for (int r = 0; r < rounds; r++)
                {
                    random.NextBytes(data);
                    ulong offset = (ulong)((t * rounds) + r) * block;
                    switch (t % 3)
                    {
                        case 0:
                            h.Pwrite(data, offset);
                            h.Pread(back, offset);
                            break;
                        case 1:
                            h.PwriteAsync(data, offset).AsTask().GetAwaiter().GetResult();
                            h.PreadAsync(back, offset).AsTask().GetAwaiter().GetResult();
                            break;
                        default:
                            long w = h.AioPwrite(data, offset);
                            while (!h.AioCommandCompleted(w))
                                h.Poll(-1);
                            long rd = h.AioPread(back, offset);
                            while (!h.AioCommandCompleted(rd))
                                h.Poll(-1);
                            break;
                    }
                    if (!data.AsSpan().SequenceEqual(back))
                        failures.Enqueue($"thread {t} round {r}: data mismatch");
                }
            }
#pragma warning disable CA1031
            catch (Exception e)
#pragma warning restore CA1031
            {
                failures.Enqueue($"thread {t}: {e}");
            }
        })).ToArray();
        foreach (Thread worker in workers)
            worker.Start();
        foreach (Thread worker in workers)
            Assert.True(worker.Join(TimeSpan.FromSeconds(60)), "a worker did not finish");
        Assert.Empty(failures);
        Assert.Equal(0, h.AioInFlight());
    }

    [Fact]
    public void AioCallbacks_RunOnThePollingThread_EvenWhenTheSocketFills()
    {
        // 64 writes of 256 KiB fill the socket; libnbd runs completion callbacks only inside the calls of the
        // thread that drives the handle, and code ported from libnbd (like iops.c) relies on that.
        using ServerProcess server = Peers.Nbdkit("memory", "64M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        byte[] data = new byte[256 * 1024];
        new Random(3).NextBytes(data);
        int me = Environment.CurrentManagedThreadId;
        var threads = new System.Collections.Concurrent.ConcurrentBag<int>();
        int pending = 0;
        for (int round = 0; round < 4; round++)
        {
            for (int i = 0; i < 64; i++)
            {
                pending++;
                h.AioPwrite(data, (ulong)i * (ulong)data.Length, (ref int error) =>
                {
                    Assert.Equal(0, error);
                    threads.Add(Environment.CurrentManagedThreadId);
                    pending--;
                    return 1;
                });
            }
            while (pending > 0)
                h.Poll(-1);
        }
        Assert.Equal(256, threads.Count);
        Assert.All(threads, t => Assert.Equal(me, t));
        byte[] back = new byte[data.Length];
        h.Pread(back, 63UL * (ulong)data.Length);
        Assert.Equal(data, back);
    }

    [Theory]
    [InlineData(Peer.Nbdkit)]
    [InlineData(Peer.Embedded)]
    public void SyncCalls_CompleteWhileTheThreadPoolIsSaturated(Peer peer)
    {
        using var server = WellBehavedServer.Start(peer, "memory", "16M");
        using var h = new NbdHandle();
        h.ConnectUri(server.Uri);
        // Start with a Task-based command so the handle's reader thread exists and has been used.
        h.PreadAsync(new byte[512], 0).AsTask().GetAwaiter().GetResult();
        int mismatches = 0;
        RunWhileThreadPoolIsSaturated(() =>
        {
            byte[] data = new byte[4096], back = new byte[4096];
            for (int i = 0; i < 500; i++)
            {
                data[0] = (byte)i;
                h.Pwrite(data, (ulong)i * 4096);
                h.Pread(back, (ulong)i * 4096);
                if (back[0] != data[0])
                    mismatches++;
            }
            h.Flush();
        });
        Assert.Equal(0, mismatches);
    }

    /// <summary>
    /// The synchronous paths that once leaned on the thread pool: a connect with a connect timeout, the TLS handshakes
    /// (X.509 and PSK), the TLS close at shutdown, and closing a handle that started its server.
    /// </summary>
    [Fact]
    public void SyncConnectsWithTimeout_TlsAndClose_CompleteWhileTheThreadPoolIsSaturated()
    {
        using var files = new TlsFiles();
        using ServerProcess x509 = Peers.Nbdkit("--tls=require", "--tls-certificates=" + files.ServerDirectory, "memory", "1M");
        using ServerProcess psk = Peers.Nbdkit("--tls=require", "--tls-psk=" + files.PskFile, "memory", "1M");
        using ServerProcess plain = Peers.NbdkitOnFreePort(out int port, "memory", "1M");
        RunWhileThreadPoolIsSaturated(() =>
        {
            foreach (Action<NbdHandle> connect in new Action<NbdHandle>[]
            {
                h =>
                {
                    h.SetTls(TlsMode.Require);
                    h.SetTlsCertificates(files.TrustOnlyDirectory);
                    h.ConnectUnix(x509.Socket);
                },
                h =>
                {
                    h.SetTls(TlsMode.Require);
                    h.SetTlsPskFile(files.PskFile);
                    h.SetTlsUsername("alice");
                    h.ConnectUnix(psk.Socket);
                },
                h => h.ConnectTcp("127.0.0.1", port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                h => h.ConnectCommand(["nbdkit", "-s", "--exit-with-parent", "memory", "1M"]),
            })
            {
                using var h = new NbdHandle();
                h.SetConnectTimeout(TimeSpan.FromSeconds(30));
                connect(h);
                h.Pwrite(new byte[4096], 0);
                h.Pread(new byte[4096], 0);
                h.Shutdown();
            }
        });
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a thread of its own while every thread-pool thread is blocked and more work
    /// waits in the pool's queue; fails if it does not finish within 30 s or throws.
    /// </summary>
    private static void RunWhileThreadPoolIsSaturated(Action work)
    {
        // Not disposed: queued blockers may only start after the test has finished.
        var release = new ManualResetEventSlim(false);
        ThreadPool.GetMinThreads(out int workers, out _);
        int blockers = Math.Max(workers, ThreadPool.ThreadCount) + 256;
        int started = 0;
        for (int i = 0; i < blockers; i++)
        {
            ThreadPool.UnsafeQueueUserWorkItem(_ =>
            {
                Interlocked.Increment(ref started);
                release.Wait();
            }, null);
        }
        try
        {
            Exception? failure = null;
            // What the thread finds is asserted here, on the test's thread.
            var caller = new Thread(() =>
            {
                try
                {
                    work();
                }
#pragma warning disable CA1031 // Reported on the test's thread.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    failure = e;
                }
            });
            caller.Start();
            Assert.True(caller.Join(TimeSpan.FromSeconds(30)), "synchronous calls stalled behind the saturated thread pool");
            Assert.True(failure == null, failure?.ToString());
            Assert.True(ThreadPool.PendingWorkItemCount > 0, $"the pool was not saturated during the test ({Volatile.Read(ref started)} of {blockers} blockers ran)");
        }
        finally
        {
            release.Set();
        }
    }
}

[CollectionDefinition(nameof(ThreadPoolCollection), DisableParallelization = true)]
public class ThreadPoolCollection
{
}
