using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection.PortableExecutable;
using System.Runtime.InteropServices;
using NbdSharp.Testing;
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

    [Fact]
    public void ReleaseBuild_NbdcopyStartCompilesNoGenericCodeOverOurTypes()
    {
        // .NET's generic code instantiated over the library's or nbdcopy's types is left out of ReadyToRun images and
        // compiled when first called: the Start of every async method of a synchronous connect, List and Queue of
        // nbdcopy's extents, the negotiated metadata contexts' collections. Those were 80 of the 93 methods the JIT
        // compiled for a 1 MiB copy; the runtime's own list of what it compiled must now hold none of them.
        string folder = OutputFolder("nbdcopy");
        using var dir = new TempDirectory();
        using ServerProcess source = Peers.Nbdkit("-r", "sparse-random", "4M", "percent=25");
        using ServerProcess target = Peers.Nbdkit("memory", "4M");
        string list = dir.File("jit.txt");
        ToolResult result = ToolProcess.Run(Path.Combine(folder, "nbdcopy"), [source.Uri, target.Uri], environment: new Dictionary<string, string>
        {
            ["DOTNET_JitStdOutFile"] = list,
            ["DOTNET_JitDisasmSummary"] = "1",
        });
        Assert.True(result.ExitCode == 0, result.Stderr);
        string[] compiled = File.ReadAllLines(list).Where(line => line.Contains("JIT compiled", StringComparison.Ordinal)).ToArray();
        Assert.NotEmpty(compiled); // the list is written (a few of .NET's and System.CommandLine's methods always are)
        string[] ours =
        [
            "AsyncMethodBuilderCore:Start[NbdSharp.", "MethodBuilder`1[NbdSharp.", "NbdSharp.Tools.Copy.Extent]",
            "KeyValuePair`2[uint,", "Dictionary`2[uint,", "Array:Empty[NbdSharp.", "Array:Empty[uint]",
        ];
        foreach (string pattern in ours)
            Assert.DoesNotContain(compiled, line => line.Contains(pattern, StringComparison.Ordinal));
    }
}
