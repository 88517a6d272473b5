#if FUZZ_CANARY
using System;

namespace NbdSharp;

/// <summary>
/// Planted bugs that prove a fuzzing target can find a crash. They exist only in the Canary build configuration
/// (fuzz/fuzz.sh canary), never in a Release or Debug build, and only the one named by NBDSHARP_FUZZ_CANARY
/// (reply, client, handshake or uri) is live.
/// </summary>
internal static class FuzzCanary
{
    private static readonly string Active = Environment.GetEnvironmentVariable("NBDSHARP_FUZZ_CANARY") ?? "";

    /// <summary>A data or hole chunk running up to 64 bytes past the end of its read is accepted.</summary>
    public static bool Reply => Active == "reply";

    /// <summary>A block status chunk whose payload is not a whole number of descriptors is accepted and rounded up.</summary>
    public static bool Client => Active == "client";

    /// <summary>The NBD_REP_SERVER name length is not checked against the reply length.</summary>
    public static bool Handshake => Active == "handshake";

    /// <summary>A percent escape cut short at the end of a URI component is read past the end.</summary>
    public static bool Uri => Active == "uri";
}
#endif
