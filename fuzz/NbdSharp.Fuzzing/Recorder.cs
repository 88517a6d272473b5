using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using NbdSharp.Transport;

namespace NbdSharp.Fuzzing;

/// <summary>
/// Records what a real server sends while a target's workload runs against it, as an input of that target
/// (its split byte first): seeds from nbdkit, qemu-nbd and nbd-server, replayed byte for byte because the
/// client's requests, cookies included, are deterministic.
/// </summary>
public static class Recorder
{
    /// <summary>Runs the client or handshake workload against the server on a Unix socket and returns its input.</summary>
    public static byte[] Record(string target, string unixSocket)
    {
        OpenedTransport opened = Connectors.ConnectUnixAsync(unixSocket, async: false, "record", CancellationToken.None)
            .AsTask().GetAwaiter().GetResult();
        var recording = new RecordingTransport(opened.Transport);
        switch (target)
        {
            case "client":
                using (NbdHandle h = FuzzTargets.NewClient())
                {
                    h.ConnectTransport(recording);
                    Scenario.Inspect(h);
                    Scenario.Run(h);
                    Scenario.Try(() => h.Shutdown());
                }
                break;
            case "handshake":
                using (NbdHandle h = FuzzTargets.NewOptClient())
                {
                    FuzzTargets.OptScenario(h, recording);
                    Scenario.Try(() => h.Shutdown());
                }
                break;
            default:
                throw new ArgumentException("only the client and handshake targets can be recorded", nameof(target));
        }
        return [0, .. recording.Received];
    }

    private sealed class RecordingTransport(NbdSharp.Transport.Transport inner) : NbdSharp.Transport.Transport
    {
        private readonly List<byte> _received = new();

        public byte[] Received
        {
            get
            {
                lock (_received)
                    return _received.ToArray();
            }
        }

        private int Keep(ReadOnlySpan<byte> bytes)
        {
            lock (_received)
            {
                foreach (byte b in bytes)
                    _received.Add(b);
            }
            return bytes.Length;
        }

        public override int Receive(Span<byte> buffer) => Keep(buffer[..inner.Receive(buffer)]);

        public override async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            int count = await inner.ReceiveAsync(buffer, cancellationToken).ConfigureAwait(false);
            return Keep(buffer.Span[..count]);
        }

        public override void Send(ReadOnlySpan<byte> data) => inner.Send(data);

        public override ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => inner.SendAsync(data, cancellationToken);

        public override int TrySend(ReadOnlySpan<byte> first, ReadOnlySpan<byte> second) => inner.TrySend(first, second);

        public override bool PrefersBlockingSend => inner.PrefersBlockingSend;

        public override bool WaitReadable(int timeoutMs) => inner.WaitReadable(timeoutMs);

        public override bool WaitWritable(int timeoutMs) => inner.WaitWritable(timeoutMs);

        public override (bool Readable, bool Writable) WaitReadableOrWritable(int timeoutMs) => inner.WaitReadableOrWritable(timeoutMs);

        public override void ShutdownSend() => inner.ShutdownSend();

        public override void Abort() => inner.Abort();

        protected override void Dispose(bool disposing) => inner.Dispose();
    }
}
