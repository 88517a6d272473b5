using System;

namespace NbdSharp.Tools.Info;

/// <summary>--can, --is, --has and their negations: no output, exit 0 when true, 2 when false.</summary>
internal static class FeatureTest
{
    public static int Run(NbdHandle h, string feature, bool negated)
    {
        Func<bool>? test = Lookup(h, feature.ToLowerInvariant());
        if (test == null)
        {
            string which = negated ? "--cannot/--isnt/--hasnt" : "--can/--is/--has";
            throw new ToolException("unknown " + which + " option: " + feature);
        }
        bool value = test();
        return value != negated ? 0 : 2;
    }

    /// <summary>The query for a feature name, in the spellings libnbd's nbdinfo accepts.</summary>
    private static Func<bool>? Lookup(NbdHandle h, string feature) => feature switch
    {
        "connect" or "read" => static () => true,
        "tls" => h.GetTlsNegotiated,
        "sr" or "structured" or "structured reply" or "structured-reply" or "structured_reply"
            or "structured replies" or "structured-replies" or "structured_replies" => h.GetStructuredRepliesNegotiated,
        "eh" or "extended header" or "extended-header" or "extended_header"
            or "extended headers" or "extended-headers" or "extended_headers" => h.GetExtendedHeadersNegotiated,
        "readonly" or "read-only" or "read_only" => h.IsReadOnly,
        "write" => () => !h.IsReadOnly(),
        "rotational" => h.IsRotational,
        "block status payload" or "block-status-payload" or "block_status_payload" => h.CanBlockStatusPayload,
        "cache" => h.CanCache,
        "df" => h.CanDf,
        "fastzero" or "fast-zero" or "fast_zero" => h.CanFastZero,
        "flush" => h.CanFlush,
        "fua" => h.CanFua,
        "multiconn" or "multi-conn" or "multi_conn" => h.CanMultiConn,
        "trim" => h.CanTrim,
        "zero" => h.CanZero,
        _ => null,
    };
}
