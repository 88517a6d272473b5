using System;
using System.Collections.Generic;

namespace NbdSharp.Server.Negotiation;

/// <summary>The server's exports by name, with the default that an empty name selects. Thread-safe.</summary>
internal sealed class ExportRegistry
{
    private readonly object _lock = new();
    private readonly List<ServedExport> _exports = [];
    private ServedExport? _default;

    public void Add(ServedExport export, bool isDefault)
    {
        lock (_lock)
        {
            foreach (ServedExport e in _exports)
            {
                if (string.Equals(e.Name, export.Name, StringComparison.Ordinal))
                    throw new ArgumentException("an export named \"" + export.Name + "\" already exists", nameof(export));
            }
            _exports.Add(export);
            if (isDefault || _default == null)
                _default = export;
        }
    }

    /// <summary>The export called <paramref name="name"/>; the empty name is the default export.</summary>
    public ServedExport? Find(string name)
    {
        lock (_lock)
        {
            if (name.Length == 0)
                return _default;
            foreach (ServedExport e in _exports)
            {
                if (string.Equals(e.Name, name, StringComparison.Ordinal))
                    return e;
            }
            return null;
        }
    }

    public ServedExport? Default
    {
        get
        {
            lock (_lock)
                return _default;
        }
    }

    public ServedExport[] Snapshot()
    {
        lock (_lock)
            return [.. _exports];
    }
}
