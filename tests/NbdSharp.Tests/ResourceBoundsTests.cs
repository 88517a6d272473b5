using System;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Diagnostics.Tracing;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Testing;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The R group of the hostile-server matrix: what a server can make the client allocate or compute. Chunk
/// payloads are bounded (64 MiB, as libnbd), a huge extent list is handled in linear time, a list of 100,000
/// exports streams through the callback, and 1024 commands in flight at a disconnect all complete once with
/// every pooled buffer given back.
/// </summary>
[Collection(nameof(SerialCollection))]
public class ResourceBoundsTests
{
    [Fact]
    public async Task OneBlockStatusChunkWithAMillionExtents_IsDeliveredWhole()
    {
        const int Extents = 1 << 20;
        var export = new ScriptedExport { Size = 1UL << 40 };
        await using var server = Scripted.Serve(async c =>
        {
            ScriptedRequest r = await c.ReadRequestAsync();
            byte[] payload = new byte[4 + (8 * Extents)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, 1);
            for (int i = 0; i < Extents; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + (8 * i)), 512);
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + (8 * i)), (uint)(i & 3));
            }
            await c.SendChunkAsync(r.Cookie, 1, 5, payload);
            await c.DrainAsync();
        }, export);
        using NbdHandle h = Scripted.Connect(server);
        int entries = 0;
        var clock = Stopwatch.StartNew();
        Scripted.Within(() =>
        {
            h.BlockStatus(1UL << 30, 0, (string _, ulong _, ReadOnlySpan<uint> e, ref int _) =>
            {
                entries += e.Length;
                return 0;
            });
            return 0;
        });
        Assert.Equal(2 * Extents, entries);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task ABlockStatusChunkOverTheCap_KillsTheConnectionWithoutAllocating()
    {
        long allocated = 0;
        await Scripted.BadReplyKillsAsync((c, r) => c.SendChunkAsync(r.Cookie, 1, 5, new byte[12], claimedLength: (64UL << 20) + 16),
            h =>
            {
                long before = GC.GetTotalAllocatedBytes(precise: true);
                try
                {
                    h.BlockStatus(4096, 0, (string _, ulong _, ReadOnlySpan<uint> _, ref int _) => 0);
                }
                finally
                {
                    allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
                }
            }, "invalid server reply length");
        Assert.True(allocated < 1024 * 1024, $"allocated {allocated} bytes");
    }

    [Fact]
    public async Task AListOf100000Exports_StreamsThroughTheCallback()
    {
        const int Exports = 100_000;
        await using var server = ScriptedServer.Start(async c =>
        {
            await c.SendNewstyleGreetingAsync();
            await c.ReadClientFlagsAsync();
            (uint option, _) = await c.ReadOptionAsync();
            var all = new List<byte>(Exports * 40);
            for (int i = 0; i < Exports; i++)
            {
                byte[] name = System.Text.Encoding.UTF8.GetBytes("export" + i.ToString(System.Globalization.CultureInfo.InvariantCulture));
                byte[] reply = new byte[20 + 4 + name.Length];
                BinaryPrimitives.WriteUInt64BigEndian(reply, 0x0003e889045565a9);
                BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
                BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), 2);
                BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)(4 + name.Length));
                BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(20), (uint)name.Length);
                name.CopyTo(reply, 24);
                all.AddRange(reply);
            }
            await c.WriteAsync(all.ToArray());
            await c.ReplyOptionAsync(option, 1);
            await c.DrainAsync();
        });
        using var h = new NbdHandle();
        h.SetOptMode(true);
        h.SetRequestExtendedHeaders(false);
        h.SetRequestStructuredReplies(false);
        h.ConnectUri(server.Uri);
        int seen = 0;
        string last = "";
        int count = Scripted.Within(() => h.OptList((name, _) =>
        {
            seen++;
            last = name;
            return 0;
        }));
        Assert.Equal((Exports, Exports, "export99999"), (count, seen, last));
    }

    [Fact]
    public async Task ThousandCommandsInFlightThenEndOfStream_CompleteOnce_AndThePooledBuffersComeBack()
    {
        const int InFlight = 1024;
        using var pool = new PoolWatcher();
        await using (var server = Scripted.Serve(async c =>
        {
            for (int i = 0; i < InFlight; i++)
                await c.ReadRequestAsync();
            c.Close();
        }))
        {
            using NbdHandle h = Scripted.Connect(server);
            var calls = new int[InFlight];
            var errors = new int[InFlight];
            for (int i = 0; i < InFlight; i++)
            {
                int index = i;
                h.AioPread(new byte[512], (ulong)i * 512, (ref int error) =>
                {
                    Interlocked.Increment(ref calls[index]);
                    errors[index] = error;
                    return 1;
                });
            }
            Scripted.PollUntilDone(h);
            Assert.All(calls, c => Assert.Equal(1, c));
            Assert.All(errors, e => Assert.Equal(Errno.ENOTCONN, e));
        }
        Assert.True(pool.Rented > 0, "no pooled buffer was seen: the watcher is not working");
        Assert.Empty(pool.Outstanding());
    }

    /// <summary>Counts ArrayPool rents and returns (the runtime's ArrayPoolEventSource) of the buffers NbdSharp rents.</summary>
    private sealed class PoolWatcher : EventListener
    {
        private readonly ConcurrentDictionary<int, int> _outstanding = new();
        private int _rented;

        public int Rented => Volatile.Read(ref _rented);

        public List<(int Id, int Size)> Outstanding()
        {
            var left = new List<(int, int)>();
            foreach (KeyValuePair<int, int> pair in _outstanding)
                left.Add((pair.Key, pair.Value));
            return left;
        }

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "System.Buffers.ArrayPoolEventSource")
                EnableEvents(eventSource, EventLevel.Verbose);
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.Payload == null || eventData.Payload.Count < 2)
                return;
            int id = (int)eventData.Payload[0]!;
            int size = (int)eventData.Payload[1]!;
            // The engine's receive buffer (256 KiB) and send buffer: sizes no other code in this test rents.
            if (size < 64 * 1024)
                return;
            if (eventData.EventName == "BufferRented")
            {
                Interlocked.Increment(ref _rented);
                _outstanding[id] = size;
            }
            else if (eventData.EventName == "BufferReturned")
            {
                _outstanding.TryRemove(id, out _);
            }
        }
    }
}
