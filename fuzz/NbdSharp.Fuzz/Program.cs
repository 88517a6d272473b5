using System;
using System.Collections.Generic;
using System.IO;
using NbdSharp.Fuzzing;
using SharpFuzz;

namespace NbdSharp.Fuzz;

/// <summary>
/// The fuzz host. Under afl-fuzz (see fuzz/fuzz.sh): <c>NbdSharp.Fuzz TARGET</c>. By hand:
/// <c>replay TARGET FILE|DIR...</c> runs inputs and says how each ended (exit 1 if any broke a promise),
/// <c>seeds TARGET DIR</c> writes the well-formed seeds, <c>record TARGET SOCKET FILE</c> records a real server.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        if (args.Length == 1 && Array.IndexOf(FuzzTargets.Names, args[0]) >= 0)
        {
            string target = args[0];
            Fuzzer.OutOfProcess.Run(stream =>
            {
                using var input = new MemoryStream();
                stream.CopyTo(input);
                FuzzTargets.Run(target, input.GetBuffer().AsSpan(0, (int)input.Length));
            });
            return 0;
        }
        if (args.Length >= 3 && args[0] == "replay")
            return Replay(args[1], args[2..]);
        if (args.Length == 3 && args[0] == "seeds")
        {
            Directory.CreateDirectory(args[2]);
            foreach ((string name, byte[] input, _) in Seeds.For(args[1]))
                File.WriteAllBytes(Path.Combine(args[2], name), input);
            return 0;
        }
        if (args.Length == 4 && args[0] == "record")
        {
            File.WriteAllBytes(args[3], Recorder.Record(args[1], args[2]));
            return 0;
        }
        Console.Error.WriteLine("usage: NbdSharp.Fuzz reply|client|handshake|uri|server-request|server-option   (under afl-fuzz)");
        Console.Error.WriteLine("       NbdSharp.Fuzz replay TARGET FILE|DIR...");
        Console.Error.WriteLine("       NbdSharp.Fuzz seeds TARGET DIR");
        Console.Error.WriteLine("       NbdSharp.Fuzz record client|handshake UNIX-SOCKET FILE");
        return 2;
    }

    private static int Replay(string target, string[] paths)
    {
        var files = new List<string>();
        foreach (string path in paths)
        {
            if (Directory.Exists(path))
                files.AddRange(Directory.GetFiles(path));
            else
                files.Add(path);
        }
        files.Sort(StringComparer.Ordinal);
        int broken = 0;
        foreach (string file in files)
        {
            try
            {
                FuzzOutcome outcome = FuzzTargets.Run(target, File.ReadAllBytes(file));
                Console.WriteLine($"{file}: {outcome}");
            }
#pragma warning disable CA1031 // a replay reports every failure and goes on
            catch (Exception e)
#pragma warning restore CA1031
            {
                broken++;
                Console.WriteLine($"{file}: BROKEN: {e}");
            }
        }
        Console.WriteLine($"{files.Count} inputs, {broken} broken");
        return broken == 0 ? 0 : 1;
    }
}
