
namespace NbdSharp.Tools.Info;

/// <summary>nbdinfo: what an NBD server and its exports offer, as libnbd's nbdinfo prints it.</summary>
internal static class Program
{
    private static int Main(string[] args) => ToolMain.Run("nbdinfo", () =>
    {
        InfoOptions? options = InfoOptions.Parse(args);
        if (options == null)
            return 0;
        return new InfoCommand(options).Run();
    });
}
