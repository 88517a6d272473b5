using System;

namespace NbdSharp;

/// <summary>
/// Which planted bug is live: the one named by NBDSHARP_FUZZ_CANARY (reply, client, handshake or uri), so that each
/// target's canary run proves that target finds its own bug. With none named, every check here behaves as the
/// library's.
/// </summary>
internal static class Canary
{
    private static readonly string Active = Environment.GetEnvironmentVariable("NBDSHARP_FUZZ_CANARY") ?? "";

    public static bool Is(string target) => Active == target;
}
