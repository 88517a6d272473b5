using System;
using System.Globalization;

namespace NbdSharp.Tools.Copy;

/// <summary>
/// One nbdcopy run, in libnbd's order: open both ends, refuse a read-only or too small destination, settle the
/// connections, threads and sizes, size a file destination, copy (multi-connection or synchronous), then close the
/// source, flush if asked and close the destination. Any failure ends it with one line and exit code 1.
/// </summary>
internal sealed class CopyJob(CopyOptions options)
{
    /// <summary>How long the workers get to unwind after a failure, once both ends are torn down.</summary>
    private static readonly TimeSpan UnwindTimeout = TimeSpan.FromSeconds(10);

    public int Run()
    {
        CopyEnd? source = null;
        CopyEnd? destination = null;
        try
        {
            source = OpenSource();
            destination = OpenDestination();
            Copy(source, destination);
            return 0;
        }
        finally
        {
            source?.Dispose();
            destination?.Dispose();
        }
    }

    private CopyEnd OpenSource()
    {
        if (options.SourceCommand is { } command)
        {
            options.Connections = 1; // one server process per socket: no multi-conn
            return new NbdEnd(command[0], ServerEndpoint.FromCommand(command), reading: true, options);
        }
        string name = options.Source!;
        if (NbdHandle.IsUri(name))
            return new NbdEnd(name, ServerEndpoint.FromUri(name), reading: true, options);
        return OpenLocal(name, writing: false);
    }

    private CopyEnd OpenDestination()
    {
        if (options.DestinationCommand is { } command)
        {
            options.Connections = 1;
            return new NbdEnd(command[0], ServerEndpoint.FromCommand(command), reading: false, options);
        }
        string name = options.Destination!;
        if (name == "null:")
            return new NullEnd(name);
        if (NbdHandle.IsUri(name))
            return new NbdEnd(name, ServerEndpoint.FromUri(name), reading: false, options);
        return OpenLocal(name, writing: true);
    }

    private CopyEnd OpenLocal(string name, bool writing)
    {
        CopyEnd end = OperatingSystem.IsLinux() && !PortableFileEnd.Requested ? FileEnd.Open(name, writing) : PortableFileEnd.Open(name, writing);
        if (name == "-" || end is PipeEnd)
            options.Synchronous = true; // a stream can only go in order
        return end;
    }

    private void Copy(CopyEnd source, CopyEnd destination)
    {
        if (destination.IsReadOnly)
            throw new ToolException(destination.Name + ": the destination is read-only, cannot write to it");

        if (!source.CanMultiConn || !destination.CanMultiConn)
            options.Connections = 1;
        if (options.Threads == 0)
            options.Threads = (uint)Math.Max(1, Environment.ProcessorCount);
        if (options.Synchronous)
            options.Connections = 1;
        uint workers = Math.Min(options.Connections, options.Threads);
        options.Connections = options.Threads = workers;

        options.RequestSize = (int)Math.Min(CopyOptions.MaxRequestSize,
            Math.Max(options.RequestSize, Math.Max(source.Preferred, destination.Preferred)));
        if (options.RequestSize > options.QueueSize)
            options.QueueSize = options.RequestSize;
        if (options.SparseSize > 0 && options.SparseSize < destination.Preferred)
            options.SparseSize = destination.Preferred;

        // A regular file destination takes the source's size and then reads as zeroes throughout.
        if (source.Size >= 0 && destination.Truncate(source.Size))
            options.DestinationIsZero = true;

        if (source.Size >= 0 && destination.Size >= 0 && source.Size > destination.Size)
        {
            throw new ToolException(string.Create(CultureInfo.InvariantCulture,
                $"error: destination size ({destination.Size}) is smaller than source size ({source.Size})"));
        }

        if (options.Verbose)
        {
            Describe(source, "nbdcopy: src");
            Describe(destination, "nbdcopy: dst");
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"nbdcopy: connections={options.Connections} requests={options.MaxRequests} threads={options.Threads} synchronous={(options.Synchronous ? "true" : "false")}"));
        }

        if (options.Connections > 1)
        {
            if (source.CanMultiConn)
                source.StartMultiConn((int)options.Connections);
            if (destination.CanMultiConn)
                destination.StartMultiConn((int)options.Connections);
        }
        if (!source.CanExtents)
            options.Extents = false;

        var progress = new ProgressBar(options.Progress, options.ProgressFd);
        progress.Update(0, 1);
        long copied = source.Size;
        if (options.Synchronous)
        {
            var copier = new SynchronousCopier(source, destination, options, progress);
            copier.RunSynchronous();
            if (copied < 0)
                copied = copier.CopiedSize;
        }
        else
        {
            var copier = new AioCopier(source, destination, options, progress);
            WaitForWorkers(copier, copier.Start((int)options.Connections), source, destination);
            copier.ReleaseBuffers();
        }
        progress.Update(1, 1);
        if (options.BlockHash is { } hash)
            PrintBlockHash(hash.Finish(copied));

        source.Close();
        if (options.Flush)
            destination.Flush();
        destination.Close();
    }

    /// <summary>Waits for the workers of the multi-connection copy; at the first failure tears both ends down (so
    /// that no poller waits on a server that stopped answering), lets the workers unwind and reports it.</summary>
    private static void WaitForWorkers(AioCopier copier, System.Threading.Thread[] workers, CopyEnd source, CopyEnd destination)
    {
        foreach (System.Threading.Thread worker in workers)
        {
            while (!worker.Join(50))
            {
                if (copier.Failure != null)
                    break;
            }
            if (copier.Failure != null)
                break;
        }
        if (copier.Failure is { } failure)
        {
            source.Dispose();
            destination.Dispose();
            long deadline = Environment.TickCount64 + (long)UnwindTimeout.TotalMilliseconds;
            foreach (System.Threading.Thread worker in workers)
                worker.Join((int)Math.Max(0, deadline - Environment.TickCount64));
            throw new ToolException(failure);
        }
    }

    private void PrintBlockHash(string digest)
    {
        if (options.BlockHashFile is not { } file)
        {
            Console.Out.Write(digest + "\n");
            Console.Out.Flush();
            return;
        }
        try
        {
            System.IO.File.WriteAllText(file, digest + "\n");
        }
        catch (Exception e) when (e is System.IO.IOException or UnauthorizedAccessException)
        {
            throw new ToolException(file + ": " + e.Message, e);
        }
    }

    private static void Describe(CopyEnd end, string prefix)
    {
        string human = end.Size >= 0 ? HumanSize.Format((ulong)end.Size) : "unknown";
        Console.Error.WriteLine(prefix + ": " + end.Kind + " \"" + end.Name + "\"");
        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{prefix}: size={end.Size} ({human}), preferred block size={end.Preferred}"));
    }
}
