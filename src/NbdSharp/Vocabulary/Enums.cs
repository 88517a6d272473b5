using System;

namespace NbdSharp;

/// <summary>Command flags, libnbd's <c>LIBNBD_CMD_FLAG_*</c>.</summary>
[Flags]
public enum CmdFlag : uint
{
    /// <summary>No flag.</summary>
    None = 0,
    /// <summary>Force unit access: the command is durable when it completes (needs <see cref="NbdHandle.CanFua"/>).</summary>
    Fua = 0x01,
    /// <summary>For <see cref="NbdHandle.Zero"/>: keep the range allocated rather than punching a hole.</summary>
    NoHole = 0x02,
    /// <summary>For <see cref="NbdHandle.PreadStructured"/>: ask for the data in one chunk (needs <see cref="NbdHandle.CanDf"/>).</summary>
    Df = 0x04,
    /// <summary>For block status: at most one extent per metadata context.</summary>
    ReqOne = 0x08,
    /// <summary>For <see cref="NbdHandle.Zero"/>: fail fast with ENOTSUP unless zeroing is fast (needs <see cref="NbdHandle.CanFastZero"/>).</summary>
    FastZero = 0x10,
    /// <summary>Extended headers only: the length field is a payload length; managed automatically in strict mode.</summary>
    PayloadLen = 0x20,
    /// <summary>All flags this library knows.</summary>
    Mask = 0x3f,
}

/// <summary>Handshake flags the client is willing to use, libnbd's <c>LIBNBD_HANDSHAKE_FLAG_*</c>.</summary>
[Flags]
public enum HandshakeFlag : uint
{
    /// <summary>No flag: behave as an old newstyle client.</summary>
    None = 0,
    /// <summary>Fixed newstyle: needed for every option but <c>NBD_OPT_EXPORT_NAME</c>.</summary>
    FixedNewstyle = 0x01,
    /// <summary>Omit the 124 zero bytes after the <c>NBD_OPT_EXPORT_NAME</c> reply.</summary>
    NoZeroes = 0x02,
    /// <summary>Both flags (the default).</summary>
    Mask = 0x03,
}

/// <summary>Client-side checks of strict mode, libnbd's <c>LIBNBD_STRICT_*</c>; all are on by default.</summary>
[Flags]
public enum StrictFlag : uint
{
    /// <summary>No check: send whatever the caller asks for.</summary>
    None = 0,
    /// <summary>Refuse commands and flags the server did not advertise.</summary>
    Commands = 0x01,
    /// <summary>Refuse flags a command does not take.</summary>
    Flags = 0x02,
    /// <summary>Refuse requests past the end of the export.</summary>
    Bounds = 0x04,
    /// <summary>Refuse requests of length 0.</summary>
    ZeroSize = 0x08,
    /// <summary>Refuse requests not aligned to the server's minimum block size.</summary>
    Align = 0x10,
    /// <summary>Refuse writes larger than the payload maximum (<see cref="SizeKind.Payload"/>).</summary>
    Payload = 0x20,
    /// <summary>Manage <see cref="CmdFlag.PayloadLen"/> automatically.</summary>
    AutoFlag = 0x40,
    /// <summary>All checks (the default).</summary>
    Mask = 0x7f,
}

/// <summary>Transports <see cref="NbdHandle.ConnectUri(string)"/> may use, libnbd's <c>LIBNBD_ALLOW_TRANSPORT_*</c>.</summary>
[Flags]
public enum AllowTransport : uint
{
    /// <summary>No transport.</summary>
    None = 0,
    /// <summary>TCP (<c>nbd://</c>, <c>nbds://</c>).</summary>
    Tcp = 0x01,
    /// <summary>Unix domain sockets (<c>nbd+unix://</c>).</summary>
    Unix = 0x02,
    /// <summary>AF_VSOCK (<c>nbd+vsock://</c>).</summary>
    Vsock = 0x04,
    /// <summary>SSH tunnels (<c>nbd+ssh://</c>).</summary>
    Ssh = 0x08,
    /// <summary>Every transport (the default).</summary>
    Mask = 0x0f,
}

/// <summary>Flags of <see cref="NbdHandle.Shutdown"/>, libnbd's <c>LIBNBD_SHUTDOWN_*</c>.</summary>
[Flags]
#pragma warning disable CA1069 // libnbd defines the mask with the same value as its only flag.
public enum ShutdownFlag : uint
{
    /// <summary>Wait for every command in flight, then disconnect.</summary>
    None = 0,
    /// <summary>Drop commands not yet sent to the server (they complete with ENOTCONN).</summary>
    AbandonPending = 0x10000,
    /// <summary>All flags.</summary>
    Mask = 0x10000,
}
#pragma warning restore CA1069

/// <summary>TLS policy, libnbd's <c>LIBNBD_TLS_*</c>.</summary>
public enum TlsMode
{
    /// <summary>Never use TLS (the default).</summary>
    Disable = 0,
    /// <summary>Use TLS when the server offers it, otherwise continue in plaintext (downgradable).</summary>
    Allow = 1,
    /// <summary>Use TLS or fail; never fall back to plaintext.</summary>
    Require = 2,
}

/// <summary>Which block size <see cref="NbdHandle.GetBlockSize"/> returns, libnbd's <c>LIBNBD_SIZE_*</c>.</summary>
public enum SizeKind
{
    /// <summary>The server's minimum block size (0 if not advertised).</summary>
    Minimum = 0,
    /// <summary>The server's preferred block size (0 if not advertised).</summary>
    Preferred = 1,
    /// <summary>The server's maximum payload (0 if not advertised).</summary>
    Maximum = 2,
    /// <summary>The largest payload this client sends (between 1 MiB and 64 MiB).</summary>
    Payload = 3,
}

/// <summary>Status flags of the <c>base:allocation</c> metadata context, libnbd's <c>LIBNBD_STATE_*</c>.</summary>
[Flags]
public enum BlockStatusFlag : uint
{
    /// <summary>Allocated data.</summary>
    None = 0,
    /// <summary>The extent is not allocated.</summary>
    Hole = 0x01,
    /// <summary>The extent reads as zeroes.</summary>
    Zero = 0x02,
}

/// <summary>The <c>status</c> argument of a <see cref="ChunkCallback"/>, libnbd's <c>LIBNBD_READ_*</c>.</summary>
public static class ReadStatus
{
    /// <summary>The chunk carries data.</summary>
    public const uint Data = 1;
    /// <summary>The chunk is a hole that reads as zeroes.</summary>
    public const uint Hole = 2;
    /// <summary>The server reported an error at this offset.</summary>
    public const uint Error = 3;
}

/// <summary>What the connection waits for, libnbd's <c>LIBNBD_AIO_DIRECTION_*</c>.</summary>
[Flags]
public enum AioDirection : uint
{
    /// <summary>Nothing to wait for.</summary>
    None = 0,
    /// <summary>Waiting for the socket to be readable.</summary>
    Read = 1,
    /// <summary>Waiting for the socket to be writable.</summary>
    Write = 2,
    /// <summary>Both.</summary>
    Both = 3,
}

/// <summary>Names of metadata contexts and namespaces, libnbd's <c>LIBNBD_CONTEXT_*</c> and <c>LIBNBD_NAMESPACE_*</c>.</summary>
public static class MetaContext
{
    /// <summary>The <c>base:</c> namespace.</summary>
    public const string NamespaceBase = "base:";
    /// <summary>The allocation context every server with block status offers.</summary>
    public const string BaseAllocation = "base:allocation";
    /// <summary>The <c>qemu:</c> namespace.</summary>
    public const string NamespaceQemu = "qemu:";
    /// <summary>Prefix of qemu's dirty bitmap contexts: append the bitmap name.</summary>
    public const string QemuDirtyBitmap = "qemu:dirty-bitmap:";
    /// <summary>qemu's allocation depth context.</summary>
    public const string QemuAllocationDepth = "qemu:allocation-depth";
    /// <summary>The dirty flag of a <c>qemu:dirty-bitmap:</c> extent, libnbd's <c>LIBNBD_STATE_DIRTY</c>.</summary>
    public const uint StateDirty = 1;
}
