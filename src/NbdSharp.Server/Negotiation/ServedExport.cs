using NbdSharp.Protocol;

namespace NbdSharp.Server.Negotiation;

/// <summary>An export as the server lists and serves it: its name, description and the disk behind it.</summary>
internal sealed class ServedExport(string name, string? description, NbdExport export)
{
    public string Name { get; } = name;
    public string? Description { get; } = description;
    public NbdExport Export { get; } = export;

    /// <summary>The transmission flags for a client that negotiated structured replies or not.</summary>
    public TransmissionFlags Flags(bool structured)
    {
        var flags = TransmissionFlags.HasFlags;
        NbdExport e = Export;
        if (e.IsReadOnly)
            flags |= TransmissionFlags.ReadOnly;
        else
        {
            // Write-zeroes is always offered on a writable export: without ZeroAsync the server writes zeroes.
            flags |= TransmissionFlags.SendWriteZeroes | TransmissionFlags.SendFastZero;
            if (e.CanTrim)
                flags |= TransmissionFlags.SendTrim;
            if (e.CanFua)
                flags |= TransmissionFlags.SendFua;
        }
        if (e.CanFlush)
            flags |= TransmissionFlags.SendFlush;
        if (e.CanCache)
            flags |= TransmissionFlags.SendCache;
        if (e.CanMultiConn)
            flags |= TransmissionFlags.CanMultiConn;
        if (e.IsRotational)
            flags |= TransmissionFlags.Rotational;
        if (structured)
            flags |= TransmissionFlags.SendDf;
        return flags;
    }
}
