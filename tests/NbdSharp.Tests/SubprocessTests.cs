using System;
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
    public void DescriptorMappedToItsOwnNumber_ReachesTheChild()
    {
        using var pipe = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.None);
        int fd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        Subprocess child = Subprocess.Spawn(["sh", "-c", $"echo routed > /dev/fd/{fd}"],
            [(fd, fd)], [], terminateOnClose: false, "test");
        pipe.DisposeLocalCopyOfClientHandle();
        using var reader = new StreamReader(pipe);
        string written = reader.ReadToEnd();
        child.Reap(TimeSpan.FromSeconds(10), terminate: false);
        Assert.Equal("routed\n", written);
    }

    /// <summary>Variables given replace those of the same name; the rest of the environment is inherited.</summary>
    [Fact]
    [SupportedOSPlatform("linux")]
    public void Environment_GivenVariablesReplaceInheritedOnes()
    {
        using var pipe = new AnonymousPipeServerStream(PipeDirection.In, HandleInheritability.None);
        int fd = (int)pipe.ClientSafePipeHandle.DangerousGetHandle();
        Subprocess child = Subprocess.Spawn(["sh", "-c", $"echo \"$HOME|$NBDSHARP_SPAWN_TEST\" > /dev/fd/{fd}"],
            [(fd, fd)], [new("NBDSHARP_SPAWN_TEST", "given"), new("HOME", "/nowhere")], terminateOnClose: false, "test");
        pipe.DisposeLocalCopyOfClientHandle();
        using var reader = new StreamReader(pipe);
        string written = reader.ReadToEnd();
        child.Reap(TimeSpan.FromSeconds(10), terminate: false);
        Assert.Equal("/nowhere|given\n", written);
    }
}
