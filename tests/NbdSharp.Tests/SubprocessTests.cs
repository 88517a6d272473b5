using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipes;
using System.Runtime.Versioning;
using NbdSharp.Transport;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>The posix_spawn wrapper behind ConnectCommand and socket activation (Linux and macOS).</summary>
[Trait("Tier", "Unit")]
public class SubprocessTests
{
    /// <summary>
    /// A descriptor handed to the child under its own number goes through a spare number (dup2 onto itself would keep
    /// its close-on-exec flag on macOS): the child must still find it open.
    /// </summary>
    [Fact]
    [SupportedOSPlatform("linux")]
    public void DescriptorMappedToItsOwnNumber_ReachesTheChild() =>
        Assert.Equal("routed\n", WrittenByChild(fd => $"echo routed > /dev/fd/{fd}", []));

    /// <summary>Variables given replace those of the same name; the rest of the environment is inherited.</summary>
    [Fact]
    [SupportedOSPlatform("linux")]
    public void Environment_GivenVariablesReplaceInheritedOnes() =>
        Assert.Equal("/nowhere|given\n", WrittenByChild(fd => $"echo \"$HOME|$NBDSHARP_SPAWN_TEST\" > /dev/fd/{fd}",
            [new("NBDSHARP_SPAWN_TEST", "given"), new("HOME", "/nowhere")]));

    /// <summary>
    /// Runs <paramref name="script"/> (given the descriptor's number) under sh, with the write end of a pipe handed on
    /// under its own number, and returns what the child wrote into it.
    /// </summary>
    [SupportedOSPlatform("linux")]
    private static string WrittenByChild(Func<int, string> script, KeyValuePair<string, string>[] environment)
    {
        using var pipe = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.None);
        int fd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        Subprocess child = Subprocess.Spawn(["sh", "-c", script(fd)], [(fd, fd)], environment, terminateOnClose: false, "test");
        pipe.DisposeLocalCopyOfClientHandle();
        using var reader = new StreamReader(pipe);
        string written = reader.ReadToEnd();
        child.Reap(TimeSpan.FromSeconds(10), terminate: false);
        return written;
    }
}
