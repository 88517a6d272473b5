using System;
using System.Buffers.Binary;
using System.Text;
using NbdSharp.Protocol;

namespace NbdSharp.Server.Negotiation;

/// <summary>
/// Decoders for the option payloads a client sends (proto.md, "Option types"). They read a span the server has
/// already bounded, check every length against what is left before using it, and never allocate by a count the
/// client sent. Pure functions: unit-tested and fuzzed on bytes.
/// </summary>
internal static class OptionPayloads
{
    /// <summary>The <c>base:allocation</c> context, the one metadata context this server offers.</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>
    /// <c>NBD_OPT_INFO</c> / <c>NBD_OPT_GO</c>: a 32-bit name length, the name, a 16-bit count of information
    /// requests and that many 16-bit types. Returns null when well formed, else why not.
    /// </summary>
    public static string? TryReadInfoRequest(ReadOnlySpan<byte> payload, out string name, out bool wantsName, out bool wantsDescription,
        out bool wantsBlockSize)
    {
        name = "";
        wantsName = wantsDescription = wantsBlockSize = false;
        if (payload.Length < 6)
            return "option payload too short";
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (nameLength > NbdProtocol.MaxString)
            return "export name too long";
        // The server-option canary: a name running up to 64 bytes past the option is not refused.
        if (nameLength > (uint)(payload.Length - 6) && !(Canary.Is("server-option") && nameLength - (uint)(payload.Length - 6) <= 64))
            return "export name length past the end of the option";
        ReadOnlySpan<byte> rest = payload[(4 + (int)nameLength)..];
        int count = BinaryPrimitives.ReadUInt16BigEndian(rest);
        rest = rest[2..];
        if (rest.Length != count * 2)
            return "number of information requests does not match the option's length";
        if (!TryDecodeName(payload.Slice(4, (int)nameLength), out name))
            return "export name is not valid UTF-8";
        for (int i = 0; i < count; i++)
        {
            switch ((NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(rest[(i * 2)..]))
            {
                case NbdInfoType.Name:
                    wantsName = true;
                    break;
                case NbdInfoType.Description:
                    wantsDescription = true;
                    break;
                case NbdInfoType.BlockSize:
                    wantsBlockSize = true;
                    break;
                default:
                    // proto.md: unknown information requests are ignored.
                    break;
            }
        }
        return null;
    }

    /// <summary><c>NBD_OPT_EXPORT_NAME</c>: the whole payload is the name. False when too long or not UTF-8.</summary>
    public static bool TryReadExportName(ReadOnlySpan<byte> payload, out string name)
    {
        name = "";
        return payload.Length <= NbdProtocol.MaxString && TryDecodeName(payload, out name);
    }

    /// <summary>
    /// <c>NBD_OPT_LIST_META_CONTEXT</c> / <c>NBD_OPT_SET_META_CONTEXT</c>: a 32-bit name length, the name, a 32-bit
    /// query count and that many (32-bit length, query) pairs, exactly filling the payload. Reports whether a query
    /// names <c>base:allocation</c> exactly (<paramref name="exactBase"/>), whether one is the <c>base:</c> wildcard
    /// (<paramref name="baseWildcard"/>), and how many queries there were. Returns null when well formed, else why not.
    /// </summary>
    public static string? TryReadMetaContextRequest(ReadOnlySpan<byte> payload, out string name, out uint queries,
        out bool exactBase, out bool baseWildcard)
    {
        name = "";
        queries = 0;
        exactBase = baseWildcard = false;
        if (payload.Length < 8)
            return "option payload too short";
        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (nameLength > NbdProtocol.MaxString)
            return "export name too long";
        if (nameLength > (uint)(payload.Length - 8))
            return "export name length past the end of the option";
        if (!TryDecodeName(payload.Slice(4, (int)nameLength), out name))
            return "export name is not valid UTF-8";
        ReadOnlySpan<byte> rest = payload[(4 + (int)nameLength)..];
        queries = BinaryPrimitives.ReadUInt32BigEndian(rest);
        rest = rest[4..];
        for (uint i = 0; i < queries; i++)
        {
            if (rest.Length < 4)
                return "query count past the end of the option";
            uint length = BinaryPrimitives.ReadUInt32BigEndian(rest);
            rest = rest[4..];
            if (length > NbdProtocol.MaxString)
                return "query too long";
            // The server-option canary: a query running up to 64 bytes past the option is not refused.
            if (length > (uint)rest.Length && !(Canary.Is("server-option") && length - (uint)rest.Length <= 64))
                return "query length past the end of the option";
            ReadOnlySpan<byte> query = rest[..(int)length];
            rest = rest[(int)length..];
            if (query.IndexOf((byte)':') < 0)
                return "query without a namespace";
            if (query.SequenceEqual("base:allocation"u8))
                exactBase = true;
            else if (query.SequenceEqual("base:"u8))
                baseWildcard = true;
        }
        if (!rest.IsEmpty)
            return "bytes after the last query";
        return null;
    }

    private static bool TryDecodeName(ReadOnlySpan<byte> bytes, out string name)
    {
        try
        {
            name = StrictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            name = "";
            return false;
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
}
