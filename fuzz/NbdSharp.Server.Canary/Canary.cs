using System;

namespace NbdSharp.Server;

/// <summary>
/// Which planted bug of the server is live: the one named by NBDSHARP_FUZZ_CANARY (server-request or server-option),
/// so that each server target's canary run proves that target finds its own bug. With none named, every check here
/// behaves as the server's.
/// </summary>
internal static class Canary
{
    private static readonly string Active = Environment.GetEnvironmentVariable("NBDSHARP_FUZZ_CANARY") ?? "";

    public static bool Is(string target) => Active == target;
}
