namespace NbdSharp.Tools.Copy;

/// <summary>nbdcopy: copies between NBD servers, local files, block devices and pipes, as libnbd's nbdcopy.</summary>
internal static class Program
{
    private static int Main(string[] args) => ToolMain.Run("nbdcopy", () =>
    {
        CopyOptions? options = CopyOptions.Parse(args);
        if (options == null)
            return 0;
        return new CopyJob(options).Run();
    });
}
