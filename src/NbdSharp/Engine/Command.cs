using System;
using System.Buffers;
using System.Threading;
using System.Threading.Tasks;
using System.Threading.Tasks.Sources;
using NbdSharp.Protocol;

namespace NbdSharp.Engine;

/// <summary>How the issuer of a command waits for it.</summary>
internal enum CommandKind : byte
{
    /// <summary>A synchronous call: the caller waits, driving the socket when nobody else does.</summary>
    Sync,
    /// <summary>libnbd's aio API: a completion callback and/or <c>AioCommandCompleted</c>.</summary>
    Aio,
    /// <summary>A <see cref="ValueTask"/>: the reader thread completes it.</summary>
    Async,
}

/// <summary>Why a command failed, which decides the exception type it surfaces as.</summary>
internal enum FailureKind : byte
{
    None,
    /// <summary>The server replied with an error.</summary>
    Server,
    /// <summary>The connection died (disconnect, transport error, timeout, cancel, close).</summary>
    Connection,
    /// <summary>The connection died because the server broke the protocol.</summary>
    Protocol,
    /// <summary>A user callback asked for the failure.</summary>
    Callback,
}

/// <summary>
/// One NBD command from issue to retirement. Pooled per engine and reused, so that steady-state traffic
/// allocates nothing; for the Task-based API it is also the <see cref="IValueTaskSource"/> the caller awaits.
/// Fields are written by the issuer before the command is published and by the thread holding the reader
/// role afterwards; the few that cross threads later are read under the engine lock.
/// </summary>
internal sealed unsafe class Command : IValueTaskSource
{
    private readonly StructFields _structs = new();
    private int _completed;
    private int _references;

    public Command(CommandEngine owner)
    {
        Owner = owner;
    }

    public CommandEngine Owner { get; }

    /// <summary>Wakes a synchronous waiter: its command completed, or the reader role is free to take.</summary>
    public ManualResetEventSlim Signal { get; } = new(false, 1);

    /// <summary>Which parts of a structured read have arrived.</summary>
    public Coverage Coverage { get; } = new();

    public ulong Cookie;
    /// <summary>When the command was issued (<see cref="System.Diagnostics.Stopwatch"/> ticks), for the request timeout.</summary>
    public long IssuedAt;
    public NbdCommand Type;
    public CommandFlags WireFlags;
    public ulong Offset;
    public ulong Count;

    /// <summary>The read destination or write source (pinned for the command's life), or null.</summary>
    public byte* Data;

    /// <summary>The pin on a caller's <see cref="Memory{T}"/>, released when the command completes.</summary>
    public ref MemoryHandle Pin => ref _structs.Pin;

    public CommandKind Kind;

    /// <summary>
    /// A request payload other than write data (the context ids of a filtered block status), rented from the
    /// shared pool; the header's length field then carries its length while <see cref="Count"/> keeps the
    /// length of interest that replies are checked against.
    /// </summary>
    public byte[]? RequestPayload;

    /// <summary>The used length of <see cref="RequestPayload"/>.</summary>
    public int RequestPayloadLength;

    /// <summary>The libnbd call name used in this command's error messages, e.g. <c>nbd_pread</c>.</summary>
    public string CallName = "";
    public CompletionCallback? Completion;
    public ChunkCallback? Chunk;
    public ExtentCallback? Extent;
    public Extent64Callback? Extent64;

    /// <summary>The caller's buffer was zeroed before the command was sent (pread_initialize).</summary>
    public bool Initialized;

    /// <summary>Content chunks (data or hole) seen so far, for the DF rule.</summary>
    public int ContentChunks;

    /// <summary>Block status chunks seen so far.</summary>
    public int StatusChunks;

    public int Error;
    public FailureKind Failure;
    public string? ErrorDetail;

    /// <summary>Set (under the engine lock) once the command has completed.</summary>
    public volatile bool Done;

    /// <summary>A synchronous waiter is queued as a volunteer to read (under the engine lock).</summary>
    public bool QueuedAsVolunteer;

    /// <summary>The awaiter gave up (cancellation): the reply is drained, never written to the caller's memory.</summary>
    public bool Abandoned;

    /// <summary>The reader is writing a payload into <see cref="Data"/> right now; cancellation must wait for it.</summary>
    public bool ReaderBusy;

    /// <summary>Cancellation was requested while the reader was busy.</summary>
    public bool CancelPending;

    public ref CancellationToken CancellationToken => ref _structs.CancellationToken;
    public ref CancellationTokenRegistration Registration => ref _structs.Registration;

    /// <summary>
    /// The command's fields whose types are structs of .NET's own assemblies, in an object of their own. A class with
    /// such a field has no layout ReadyToRun can fix when it compiles this library (the struct may change with the
    /// runtime), so its code would look up the offset of every field of <see cref="Command"/> at run time, on every
    /// access in the engine's hot path (docs/benchmarks.md).
    /// </summary>
    private sealed class StructFields
    {
        public ManualResetValueTaskSourceCore<bool> Core = new() { RunContinuationsAsynchronously = true };
        public MemoryHandle Pin;
        public CancellationToken CancellationToken;
        public CancellationTokenRegistration Registration;
    }

    /// <summary>Records the first error only, as libnbd does.</summary>
    public void SetError(int errno, FailureKind kind, string? detail)
    {
        if (Error != 0 || errno == 0)
            return;
        Error = errno;
        Failure = kind;
        ErrorDetail = detail;
    }

    /// <summary>True exactly once: the caller of this completes the command.</summary>
    public bool TryMarkCompleted() => Interlocked.Exchange(ref _completed, 1) == 0;

    /// <summary>The exception a failed command surfaces as, naming <paramref name="call"/>.</summary>
    public NbdException ToException(string call)
    {
        string detail = ErrorDetail ?? NbdProtocol.CommandName(Type) + ": command failed";
        string message = NbdException.Format(call, detail, Error);
        return Failure switch
        {
            FailureKind.Server => new NbdServerException(Error, message),
            FailureKind.Connection => new NbdConnectionException(Error, message),
            FailureKind.Protocol => new NbdProtocolException(Error, message),
            _ => new NbdException(Error, message),
        };
    }

    /// <summary>Prepares a pooled command for a new use.</summary>
    public void Reset()
    {
        Cookie = 0;
        Type = NbdCommand.Read;
        WireFlags = CommandFlags.None;
        Offset = 0;
        Count = 0;
        Data = null;
        Pin = default;
        Kind = CommandKind.Sync;
        if (RequestPayload != null)
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(RequestPayload);
            RequestPayload = null;
        }
        RequestPayloadLength = 0;
        CallName = "";
        Completion = null;
        Chunk = null;
        Extent = null;
        Extent64 = null;
        Initialized = false;
        ContentChunks = 0;
        StatusChunks = 0;
        Error = 0;
        Failure = FailureKind.None;
        ErrorDetail = null;
        Done = false;
        QueuedAsVolunteer = false;
        Abandoned = false;
        ReaderBusy = false;
        CancelPending = false;
        CancellationToken = default;
        Registration = default;
        Coverage.Reset();
        Signal.Reset();
        _completed = 0;
        _references = 1;
        _structs.Core.Reset();
    }

    /// <summary>Adds an owner (the awaiter of an async command) who must <see cref="Release"/> it too.</summary>
    public void AddReference() => Interlocked.Increment(ref _references);

    /// <summary>Drops one owner; the last returns the command to the pool.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _references) == 0)
            Owner.ReturnToPool(this);
    }

    /// <summary>Releases the pin on the caller's memory.</summary>
    public void Unpin()
    {
        Pin.Dispose();
        Pin = default;
        Data = null;
    }

    /// <summary>Completes the awaiter of an async command, once.</summary>
    public void SetAsyncResult(Exception? exception)
    {
        if (exception == null)
            _structs.Core.SetResult(true);
        else
            _structs.Core.SetException(exception);
    }

    public short Version => _structs.Core.Version;

    void IValueTaskSource.GetResult(short token)
    {
        try
        {
            _structs.Core.GetResult(token);
        }
        finally
        {
            Release();
        }
    }

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _structs.Core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token,
        ValueTaskSourceOnCompletedFlags flags) => _structs.Core.OnCompleted(continuation, state, token, flags);
}
