using System;
using System.Globalization;

namespace NbdSharp.Tools.Copy;

/// <summary>The one line nbdcopy prints for a failed request.</summary>
internal static class CopyFailure
{
    /// <summary>One line for a failed request, libnbd's words: "read at offset N failed: strerror".</summary>
    public static string Describe(string what, long offset, Exception e) => Describe(what, offset, e switch
    {
        ToolException t => t.Message,
        NbdException n => n.Errno != 0 ? Errno.Describe(n.Errno) + DetailOf(n) : n.Message,
        _ => e.Message,
    });

    /// <summary>The same line for a request whose completion callback reported <paramref name="errno"/>.</summary>
    public static string Describe(string what, long offset, int errno) => Describe(what, offset, Errno.Describe(errno));

    private static string Describe(string what, long offset, string reason) =>
        what + " at offset " + offset.ToString(CultureInfo.InvariantCulture) + " failed: " + reason;

    /// <summary>When the connection itself failed, what happened to it (libnbd's strerror alone would hide it).</summary>
    private static string DetailOf(NbdException e) => e is NbdConnectionException ? " (" + e.Message + ")" : "";
}
