using System;

namespace NbdSharp.Fuzzing;

/// <summary>What a run did: whether it got connected, and how the commands it issued ended.</summary>
public sealed record FuzzOutcome(bool Connected, int Issued, int Succeeded, int Failed);

/// <summary>A broken promise of the library, found by a harness check: the fuzzer reports it as a crash.</summary>
public sealed class FuzzInvariantException : Exception
{
    /// <summary>Creates the exception.</summary>
    public FuzzInvariantException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public FuzzInvariantException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public FuzzInvariantException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The transmission-phase workload of the reply and client targets, on a connected 1 MiB export: one
/// synchronous read, then every command type in flight at once through libnbd's aio calls (read, structured
/// read, write, flush, trim, zero, cache, block status with both callbacks, a DF read), driven by
/// <see cref="NbdHandle.Poll"/> until none is left. (Nothing is issued after that: the script is not reactive,
/// so a reply to a later command could arrive before the command exists.) It checks what the library
/// promises whatever the server sends: every aio command completes exactly once, no chunk lands outside its
/// request, no byte is written outside the caller's buffers (guard zones), completed commands retire once.
/// </summary>
internal static class Scenario
{
    /// <summary>The export size the canned handshakes and seeds announce.</summary>
    public const ulong ExportSize = 1 << 20;

    private const int Guard = 64;
    private const byte GuardByte = 0xA5;
    private const int PollLimit = 100_000;

    /// <summary>One aio command of the workload.</summary>
    internal enum Kind
    {
        Pread,
        PreadStructured,
        Pwrite,
        Flush,
        Trim,
        Zero,
        Cache,
        BlockStatus,
        BlockStatus64,
        PreadDf,
    }

    /// <summary>
    /// The aio commands in the order they are issued, with their offset and length. Reads are short so that
    /// inputs stay small: the fewer bytes, the likelier a mutation lands on a header field.
    /// </summary>
    internal static readonly (Kind Kind, ulong Offset, uint Count)[] AioCommands =
    [
        (Kind.Pread, 4096, 128),
        (Kind.PreadStructured, 65536, 128),
        (Kind.Pwrite, 8192, 128),
        (Kind.Flush, 0, 0),
        (Kind.Trim, 16384, 4096),
        (Kind.Zero, 20480, 4096),
        (Kind.Cache, 0, 4096),
        (Kind.BlockStatus, 0, 65536),
        (Kind.BlockStatus64, 65536, 65536),
        (Kind.PreadDf, ExportSize - 64, 64),
    ];

    /// <summary>The synchronous read that comes first (cookie 1).</summary>
    internal const ulong FirstReadOffset = 0;
    internal const int SyncReadLength = 64;

    /// <summary>Runs the workload; throws <see cref="FuzzInvariantException"/> on a broken promise.</summary>
    public static FuzzOutcome Run(NbdHandle h)
    {
        int issued = 0, succeeded = 0, failed = 0;
        void Sync(Action call)
        {
            issued++;
            try
            {
                call();
                succeeded++;
            }
            catch (NbdException)
            {
                failed++;
            }
        }

        byte[] syncBuffer = NewGuarded(SyncReadLength);
        Sync(() => h.Pread(syncBuffer.AsSpan(Guard, SyncReadLength), FirstReadOffset));

        int n = AioCommands.Length;
        var cookies = new long[n];
        var completions = new int[n];
        var errors = new int[n];
        var buffers = new byte[n][];
        string? violation = null;
        for (int i = 0; i < n; i++)
        {
            (Kind kind, ulong offset, uint count) = AioCommands[i];
            int index = i;
            int Completed(ref int error)
            {
                completions[index]++;
                errors[index] = error;
                return index % 2; // odd commands retire here, even ones through AioCommandCompleted
            }
            int Chunk(ReadOnlySpan<byte> subbuf, ulong chunkOffset, uint status, ref int error)
            {
                if (chunkOffset < offset || chunkOffset - offset > count || (ulong)subbuf.Length > count - (chunkOffset - offset))
                    violation ??= $"chunk callback at offset {chunkOffset} length {subbuf.Length} outside the read at {offset} length {count}";
                return 0;
            }
            int Extent(string context, ulong extentOffset, ReadOnlySpan<uint> entries, ref int error)
            {
                if (entries.Length % 2 != 0)
                    violation ??= "extent callback with an odd number of entries";
                return 0;
            }
            int Extent64(string context, ulong extentOffset, ReadOnlySpan<NbdExtent> entries, ref int error) => 0;
            buffers[i] = NewGuarded((int)count);
            Memory<byte> memory = buffers[i].AsMemory(Guard, (int)count);
            try
            {
                cookies[i] = kind switch
                {
                    Kind.Pread => h.AioPread(memory, offset, Completed),
                    Kind.PreadStructured => h.AioPreadStructured(memory, offset, Chunk, Completed),
                    Kind.Pwrite => h.AioPwrite(memory, offset, Completed, CmdFlag.Fua),
                    Kind.Flush => h.AioFlush(Completed),
                    Kind.Trim => h.AioTrim(count, offset, Completed),
                    Kind.Zero => h.AioZero(count, offset, Completed, CmdFlag.NoHole),
                    Kind.Cache => h.AioCache(count, offset, Completed),
                    Kind.BlockStatus => h.AioBlockStatus(count, offset, Extent, Completed),
                    Kind.BlockStatus64 => h.AioBlockStatus64(count, offset, Extent64, Completed),
                    _ => h.AioPread(memory, offset, Completed, CmdFlag.Df),
                };
                issued++;
            }
            catch (NbdException)
            {
                cookies[i] = 0; // refused before it was sent (dead connection, no context negotiated...)
            }
        }

        for (int spins = 0; !h.AioIsDead() && h.AioInFlight() > 0; spins++)
        {
            if (spins > PollLimit)
                throw new FuzzInvariantException($"{h.AioInFlight()} commands still in flight after {PollLimit} polls");
            try
            {
                h.Poll(-1);
            }
            catch (NbdException)
            {
            }
        }

        for (int i = 0; i < n; i++)
        {
            if (cookies[i] == 0)
            {
                if (completions[i] != 0)
                    throw new FuzzInvariantException($"command {i} was refused but its completion callback ran");
                continue;
            }
            if (completions[i] != 1)
                throw new FuzzInvariantException($"command {i} ({AioCommands[i].Kind}) completed {completions[i]} times");
            if (errors[i] == 0)
                succeeded++;
            else
                failed++;
            if (i % 2 == 0)
                RetireOnce(h, cookies[i], errors[i]);
            CheckGuards(buffers[i], $"command {i} ({AioCommands[i].Kind})");
        }
        if (h.AioInFlight() != 0)
            throw new FuzzInvariantException($"every command completed, yet {h.AioInFlight()} are in flight");
        if (violation != null)
            throw new FuzzInvariantException(violation);

        CheckGuards(syncBuffer, "the synchronous read");
        return new FuzzOutcome(true, issued, succeeded, failed);
    }

    /// <summary>A command not retired by its callback is retired by AioCommandCompleted, once.</summary>
    private static void RetireOnce(NbdHandle h, long cookie, int error)
    {
        try
        {
            if (!h.AioCommandCompleted(cookie))
                throw new FuzzInvariantException($"cookie {cookie}: completed, yet AioCommandCompleted says in flight");
            if (error != 0)
                throw new FuzzInvariantException($"cookie {cookie}: failed with errno {error}, yet AioCommandCompleted says success");
        }
        catch (NbdException e) when (error != 0 && e.Errno != 0)
        {
        }
        try
        {
            h.AioCommandCompleted(cookie);
        }
        catch (NbdException e) when (e.Errno == Errno.EINVAL)
        {
            return;
        }
        throw new FuzzInvariantException($"cookie {cookie} could be retired twice");
    }

    private static byte[] NewGuarded(int count)
    {
        byte[] buffer = GC.AllocateArray<byte>(count + (2 * Guard), pinned: true);
        buffer.AsSpan().Fill(GuardByte);
        return buffer;
    }

    private static void CheckGuards(byte[] buffer, string what)
    {
        if (buffer.AsSpan(0, Guard).IndexOfAnyExcept(GuardByte) >= 0 ||
            buffer.AsSpan(buffer.Length - Guard).IndexOfAnyExcept(GuardByte) >= 0)
            throw new FuzzInvariantException($"bytes written outside the buffer of {what}");
    }

    /// <summary>Exercises what the handshake left: sizes, flags, names (each may fail, none may crash).</summary>
    public static void Inspect(NbdHandle h)
    {
        Try(() => h.GetSize());
        for (int kind = 0; kind <= 3; kind++)
        {
            int k = kind;
            Try(() => h.GetBlockSize((SizeKind)k));
        }
        Try(() => h.IsReadOnly());
        Try(() => h.CanFlush());
        Try(() => h.CanFua());
        Try(() => h.CanTrim());
        Try(() => h.CanZero());
        Try(() => h.CanFastZero());
        Try(() => h.CanDf());
        Try(() => h.CanMultiConn());
        Try(() => h.CanCache());
        Try(() => h.CanMetaContext("base:allocation"));
        Try(() => h.GetProtocol());
        Try(() => h.GetCanonicalExportName());
        Try(() => h.GetExportDescription());
        Try(() => h.GetStructuredRepliesNegotiated());
        Try(() => h.GetExtendedHeadersNegotiated());
    }

    /// <summary>Runs a call that may fail with an <see cref="NbdException"/>; anything else escapes.</summary>
    public static bool Try(Action call)
    {
        try
        {
            call();
            return true;
        }
        catch (NbdException)
        {
            return false;
        }
    }

    private static void Try<T>(Func<T> call) => Try(() => { _ = call(); });
}
