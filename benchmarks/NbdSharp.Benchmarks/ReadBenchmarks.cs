using System;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using NbdSharp.Testing;

namespace NbdSharp.Benchmarks;

/// <summary>
/// 4 KiB reads against nbdkit (memory plugin) on a Unix socket, in each API form at queue depth 1 and 64.
/// The figure that matters here is Allocated: 0 B per command in steady state. (Rates are the business of
/// nbd-iops, which runs beside libnbd's iops.c in the same run.)
/// </summary>
[Config(typeof(Config))]
public class ReadBenchmarks
{
    private const int BlockSize = 4096;
    private const int QueueDepth = 64;

    private ServerProcess? _server;
    private NbdHandle? _handle;
    private byte[] _buffers = [];
    private CompletionCallback[] _callbacks = [];
    private int _pending;
    private ulong _blocks;
    private ulong _next;

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddDiagnoser(MemoryDiagnoser.Default);
            AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(10).WithInvocationCount(1024).WithUnrollFactor(1));
        }
    }

    [GlobalSetup]
    public void Setup()
    {
        _server = Peers.Nbdkit("memory", "1G");
        _handle = new NbdHandle();
        _handle.ConnectUri(_server.Uri);
        _blocks = (ulong)_handle.GetSize() / BlockSize;
        _buffers = GC.AllocateArray<byte>(BlockSize * QueueDepth, pinned: true);
        _callbacks = new CompletionCallback[QueueDepth];
        for (int i = 0; i < QueueDepth; i++)
        {
            _callbacks[i] = (ref int error) =>
            {
                if (error != 0)
                    throw new InvalidOperationException("read failed: " + error);
                _pending--;
                return 1;
            };
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _handle?.Dispose();
        _server?.Dispose();
    }

    // The array is pinned already: a Memory made with CreateFromPinnedArray is not pinned again per command (as nbd-iops).
    private Memory<byte> Block(int i) => MemoryMarshal.CreateFromPinnedArray(_buffers, i * BlockSize, BlockSize);

    private ulong NextOffset()
    {
        _next = (_next * 6364136223846793005UL) + 1442695040888963407UL;
        return (_next >> 20) % _blocks * BlockSize;
    }

    [Benchmark(Description = "Pread (sync) QD1")]
    public void PreadSync() => _handle!.Pread(_buffers.AsSpan(0, BlockSize), NextOffset());

    [Benchmark(Description = "AioPread + Poll QD1")]
    public void AioPreadQd1()
    {
        _pending = 1;
        _handle!.AioPread(Block(0), NextOffset(), _callbacks[0]);
        while (_pending > 0)
            _handle.Poll(-1);
    }

    [Benchmark(Description = "AioPread + Poll QD64", OperationsPerInvoke = QueueDepth)]
    public void AioPreadQd64()
    {
        _pending = QueueDepth;
        for (int i = 0; i < QueueDepth; i++)
            _handle!.AioPread(Block(i), NextOffset(), _callbacks[i]);
        while (_pending > 0)
            _handle!.Poll(-1);
    }

    /// <summary>One command at a time, awaited in a loop as user code would (the harness's own per-invocation cost is amortized).</summary>
    [Benchmark(Description = "PreadAsync QD1", OperationsPerInvoke = QueueDepth)]
    public async Task PreadAsyncQd1()
    {
        for (int i = 0; i < QueueDepth; i++)
            await _handle!.PreadAsync(Block(0), NextOffset());
    }

    [Benchmark(Description = "PreadAsync QD64", OperationsPerInvoke = QueueDepth)]
    public async Task PreadAsyncQd64()
    {
        ValueTask[] tasks = _tasks;
        // Each task is stored once and awaited once below: 64 commands in flight without a Task per command.
#pragma warning disable CA2012
        for (int i = 0; i < QueueDepth; i++)
            tasks[i] = _handle!.PreadAsync(Block(i), NextOffset());
#pragma warning restore CA2012
        for (int i = 0; i < QueueDepth; i++)
            await tasks[i];
    }

    private readonly ValueTask[] _tasks = new ValueTask[QueueDepth];
}
