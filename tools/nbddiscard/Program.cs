using System;

namespace NbdSharp.Tools.Discard;

/// <summary>
/// nbddiscard and nbdzero of libnbd 1.24: discard or zero a range of an NBD export after a y/N question, or
/// (--check) only tell whether it already reads as a hole or as zeroes.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        // One program under two names, as libnbd installs one script twice: the name picks the default mode.
        string program = typeof(Program).Assembly.GetName().Name ?? "nbddiscard";
        return ToolMain.Run(program, () => Run(program, args));
    }

    private static int Run(string program, string[] args)
    {
        DiscardOptions? options = DiscardOptions.Parse(program, args);
        if (options == null)
            return 0;

        using var handle = new NbdHandle();
        if (options.Verbose)
            handle.SetDebug(true);
        handle.AddMetaContext(MetaContext.BaseAllocation);
        options.Endpoint.Connect(handle);
        bool blockStatus = handle.CanMetaContext(MetaContext.BaseAllocation);
        if (options.Verbose)
        {
            // The spelling of libnbd's Python tool.
            Console.WriteLine("extended headers = " + (handle.GetExtendedHeadersNegotiated() ? "True" : "False"));
            Console.WriteLine("block status = " + (blockStatus ? "True" : "False"));
        }
        RequireServerSupport(handle, options, blockStatus);

        ExportRange? found = ExportRange.Within(handle.GetSize(), options.Offset, options.Length, options.Quiet);
        if (found is not ExportRange range)
            return 0;

        if (options.Check)
            return Check(handle, range, options);

        if (!options.Yes)
            Confirm(options.Endpoint, range);
        range.Erase(handle, options.Zero, options.FastZero ? CmdFlag.FastZero : CmdFlag.None);
        // As in libnbd's tool: a server that can flush is asked to, so the erasure is durable when we exit.
        if (handle.CanFlush())
            handle.Flush();
        return 0;
    }

    /// <summary>Fails before touching anything when the server cannot do what was asked.</summary>
    private static void RequireServerSupport(NbdHandle handle, DiscardOptions options, bool blockStatus)
    {
        if (options.Check)
        {
            if (!blockStatus)
                throw new ToolException("this server does not support the block status operation");
        }
        else if (!options.Zero)
        {
            if (!handle.CanTrim())
                throw new ToolException("this server does not support the trim/discard operation");
        }
        else
        {
            if (!handle.CanZero())
                throw new ToolException("this server does not support the zero operation");
            if (options.FastZero && !handle.CanFastZero())
                throw new ToolException("fast zeroing is not supported by this server");
        }
    }

    /// <summary>--check: exit 0 when the range already reads as wanted, 1 (naming the first data) when not.</summary>
    private static int Check(NbdHandle handle, ExportRange range, DiscardOptions options)
    {
        long? data = range.FindData(handle, options.Zero);
        if (data != null)
        {
            if (!options.Quiet)
                Console.WriteLine("image has data at offset " + data.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
            return 1;
        }
        if (options.Verbose)
            Console.WriteLine(options.Zero ? "image is already zero" : "image is already sparse");
        return 0;
    }

    /// <summary>Asks on stdout and reads one character: anything but y or Y (or end of input) cancels.</summary>
    private static void Confirm(ServerEndpoint endpoint, ExportRange range)
    {
        Console.Out.Write(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"PERMANENTLY ERASE everything on {endpoint} bytes {range.Offset} - {range.Last} (y/N)? "));
        Console.Out.Flush();
        int answer = Console.In.Read();
        if (answer is not ('y' or 'Y'))
            throw new ToolException("operation cancelled");
    }
}
