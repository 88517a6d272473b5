using NbdSharp.Protocol;

namespace NbdSharp.Server.Negotiation;

/// <summary>An export as the server lists and serves it: its name, description and the disk behind it.</summary>
internal sealed class ServedExport(string name, string? description, NbdExport export)
{
    public string Name { get; } = name;
    public string? Description { get; } = description;
    public NbdExport Export { get; } = export;

    /// <summary>The block sizes advertised and enforced: the export's, capped at the server's largest request.</summary>
    public ExportBlockSize BlockSize => Transmission.RequestRules.Served(Export.BlockSize);

    /// <summary>The transmission flags for a client that negotiated structured replies or not.</summary>
    public TransmissionFlags Flags(bool structured)
    {
        var flags = TransmissionFlags.HasFlags;
        NbdExport e = Export;
        if (e.IsReadOnly)
            flags |= TransmissionFlags.ReadOnly;
        else
        {
            // Write-zeroes is always offered on a writable export: without ZeroAsync the server writes zeroes. Fast
            // zero as nbdkit decides it: where the export zeroes faster than writing, or has no ZeroAsync at all (a
            // fast-zero request then fails at once with ENOTSUP, which is all the flag promises).
            flags |= TransmissionFlags.SendWriteZeroes;
            if (!e.CanZero || e.CanFastZero)
                flags |= TransmissionFlags.SendFastZero;
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
