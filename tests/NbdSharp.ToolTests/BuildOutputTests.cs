using System;
using System.IO;
using System.Reflection.PortableExecutable;
using System.Runtime.InteropServices;
using Xunit;

namespace NbdSharp.ToolTests;

/// <summary>
/// What <c>dotnet build -c Release</c> gives on a Linux host (tools/ReadyToRunBuild.targets): each tool's own assembly
/// and the library and ToolSupport beside it are ReadyToRun images, and nbdcopy runs them without tiering. The tests
/// run these very binaries, so every other tool test runs the precompiled code.
/// </summary>
public class BuildOutputTests
{
    private static readonly string[] Tools = ["nbdcopy", "nbdinfo", "nbddump", "nbddiscard", "nbdzero", "nbdsh", "nbdfuse", "nbdsharp-server"];

    private static string OutputFolder(string tool)
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.OSArchitecture is not (Architecture.X64 or Architecture.Arm64))
            Assert.Skip("the build precompiles for linux-x64 and linux-arm64 hosts only");
        string folder = Path.GetDirectoryName(ToolProcess.Ours(tool))!;
        if (!string.Equals(Path.GetFileName(folder), "release", StringComparison.Ordinal))
            Assert.Skip("only Release builds are precompiled");
        return folder;
    }

    private static bool IsReadyToRun(string path)
    {
        using var pe = new PEReader(File.OpenRead(path));
        return pe.PEHeaders.CorHeader is { } cor && cor.ManagedNativeHeaderDirectory.Size > 0;
    }

    [Fact]
    public void ReleaseBuild_PrecompilesTheToolsAndTheLibrary()
    {
        foreach (string tool in Tools)
        {
            string folder = OutputFolder(tool);
            foreach (string assembly in new[] { tool, "NbdSharp", "NbdSharp.ToolSupport" })
                Assert.True(IsReadyToRun(Path.Combine(folder, assembly + ".dll")), $"{tool}: {assembly}.dll is not ReadyToRun");
        }
    }

    [Fact]
    public void ReleaseBuild_LeavesTheLibraryProjectsOwnOutputAsIL()
    {
        // Only the copies in the tools' folders are precompiled: the library's package and its consumers get IL.
        string library = Path.Combine(Path.GetDirectoryName(OutputFolder("nbdcopy"))!, "..", "NbdSharp", "release", "NbdSharp.dll");
        Assert.False(IsReadyToRun(library), library + " is ReadyToRun");
    }

    [Fact]
    public void ReleaseBuild_NbdcopyRunsWithoutTiering_OthersWithIt()
    {
        string nbdcopy = File.ReadAllText(Path.Combine(OutputFolder("nbdcopy"), "nbdcopy.runtimeconfig.json"));
        Assert.Contains("\"System.Runtime.TieredCompilation\": false", nbdcopy, StringComparison.Ordinal);
        string nbdinfo = File.ReadAllText(Path.Combine(OutputFolder("nbdinfo"), "nbdinfo.runtimeconfig.json"));
        Assert.DoesNotContain("System.Runtime.TieredCompilation\"", nbdinfo, StringComparison.Ordinal);
    }
}
