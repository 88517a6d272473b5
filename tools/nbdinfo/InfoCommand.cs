using System;
using System.Collections.Generic;

namespace NbdSharp.Tools.Info;

/// <summary>
/// One nbdinfo run: connects in opt mode, then prints the size, the URI, a feature test, the map, or the full
/// description of one export or of every export (--list), in libnbd's text or JSON layout.
/// </summary>
internal sealed class InfoCommand
{
    private readonly InfoOptions _options;
    private readonly Output _out;
    private readonly List<(string Name, string Description)> _exports = [];

    public InfoCommand(InfoOptions options)
    {
        _options = options;
        _out = new Output(new Ansi(options.Colour));
    }

    public int Run()
    {
        // As libnbd 1.14's nbdinfo: opt mode (to query exports without entering them) only for the displays that
        // use it; --size, --can and --map simply connect.
        bool display = _options.Can == null && _options.Map == null && !_options.SizeOnly;
        using NbdHandle h = Connect(optMode: display, fullInfo: display && !_options.UriOnly, _options.Map);
        if (_options.ListAll)
        {
            h.OptList((name, description) =>
            {
                _exports.Add((name, description));
                return 0;
            });
        }

        int exitCode = 0;
        if (_options.SizeOnly)
        {
            _out.Write(h.GetSize()).Write("\n");
        }
        else if (_options.UriOnly)
        {
            string uri = h.GetUri();
            (_options.Json ? _out.JsonString(uri) : _out.Write(uri)).Write("\n");
        }
        else if (_options.Can != null)
        {
            exitCode = FeatureTest.Run(h, _options.Can, _options.Cannot);
        }
        else if (_options.Map != null)
        {
            new MapCommand(h, _options, _out).Run();
        }
        else
        {
            ShowProtocol(h);
            bool okay = _options.ListAll ? ShowAllExports(h) : new ExportDisplay(_options, _out).Show(h, null, true, true);
            if (_options.Json)
                _out.Write("}\n");
            exitCode = okay ? 0 : 1;
        }

        CourtesyShutdown(h);
        Console.Out.Write(_out.ToString());
        return exitCode;
    }

    /// <summary>A handle connected to the endpoint, in opt mode when asked (left negotiating).</summary>
    private NbdHandle Connect(bool optMode, bool fullInfo, string? map)
    {
        var h = new NbdHandle();
        try
        {
            h.SetOptMode(optMode);
            if (fullInfo)
                h.SetFullInfo(true);
            if (map != null)
                h.AddMetaContext(map);
            _options.Endpoint.Connect(h, _options.Timeout);
            return h;
        }
        catch
        {
            h.Dispose();
            throw;
        }
    }

    private void ShowProtocol(NbdHandle h)
    {
        string protocol = h.GetProtocol();
        bool tls = h.GetTlsNegotiated();
        bool structured = h.GetStructuredRepliesNegotiated();
        bool extended = h.GetExtendedHeadersNegotiated();
        if (!_options.Json)
        {
            _out.Colour(Ansi.Grey)
                .Write("protocol: ").Write(protocol)
                .Write(tls ? " with TLS" : " without TLS")
                .Write(", using ").Write(extended ? "extended" : structured ? "structured" : "simple").Write(" packets\n")
                .Restore();
            return;
        }
        _out.Write("{\n\"protocol\": ").JsonString(protocol).Write(",\n")
            .Write("\"TLS\": ").Write(tls ? "true" : "false").Write(",\n")
            .Write("\"structured\": ").Write(structured ? "true" : "false").Write(",\n");
        // libnbd 1.14's layout; "extended" is added only where it can be true (libnbd 1.18+ always prints it).
        if (extended)
            _out.Write("\"extended\": true,\n");
    }

    /// <summary>--list: every export the server listed, each on its own connection when the content is probed.</summary>
    private bool ShowAllExports(NbdHandle h)
    {
        if (_exports.Count == 0 && _options.Json)
            _out.Write("\"exports\": []\n");
        bool okay = true;
        var display = new ExportDisplay(_options, _out);
        for (int i = 0; i < _exports.Count; i++)
        {
            (string name, string description) = _exports[i];
            bool first = i == 0, last = i + 1 == _exports.Count;
            if (_options.ProbeContent)
            {
                // Probing moves a connection to transmission: use a fresh one per export.
                using NbdHandle other = Connect(optMode: true, fullInfo: true, map: null);
                other.SetExportName(name);
                okay &= display.Show(other, description, first, last);
                CourtesyShutdown(other);
            }
            else
            {
                h.SetExportName(name);
                okay &= display.Show(h, description, first, last);
            }
        }
        return okay;
    }

    /// <summary>nbd_shutdown as libnbd's tools end: a courtesy to the server, whose failure changes nothing.</summary>
    private static void CourtesyShutdown(NbdHandle h)
    {
        try
        {
            h.Shutdown();
        }
        catch (NbdException)
        {
            // The answer is printed; the server going away first is not an error of ours.
        }
    }
}
