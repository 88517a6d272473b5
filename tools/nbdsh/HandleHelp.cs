using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Text;
using System.Xml.Linq;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// <c>help()</c>: the calls of <see cref="NbdHandle"/> grouped as libnbd's manual groups them, and <c>help("Name")</c>:
/// the signatures of one call with its documentation (from NbdSharp.xml beside the tool, when it is there).
/// </summary>
internal static class HandleHelp
{
    /// <summary>The data commands, whose Task-based forms end in Async.</summary>
    private static readonly HashSet<string> Commands =
        ["Pread", "PreadStructured", "Pwrite", "Flush", "Trim", "Cache", "Zero", "BlockStatus", "BlockStatus64", "BlockStatusFilter"];

    /// <summary>The groups, in order; a call goes to the first group whose test it passes.</summary>
    private static readonly (string Title, Func<string, bool> Holds)[] Groups =
    [
        ("Errors, versions and features", name => name is "GetErrno" or "GetError" or "GetVersion" or "GetVersionExtra" or "GetPackageName" ||
            name.StartsWith("Supports", StringComparison.Ordinal)),
        ("Connecting", name => (name.StartsWith("Connect", StringComparison.Ordinal) && name != "ConnectionState") || name.StartsWith("AioConnect", StringComparison.Ordinal) ||
            name is "GetUri" or "KillSubprocess" or "GetSubprocessPid" or "SetSocketActivationName" or "GetSocketActivationName" or
            "SetUriAllowLocalFile" or "GetUriAllowLocalFile" or "SetUriAllowTransports" or "SetUriAllowTls" or "IsUri"),
        ("Option negotiation (opt mode)", name => name.StartsWith("Opt", StringComparison.Ordinal) || name.StartsWith("AioOpt", StringComparison.Ordinal) ||
            name is "SetOptMode" or "GetOptMode"),
        ("TLS", name => name.Contains("Tls", StringComparison.Ordinal)),
        ("Commands", name => Commands.Contains(name.EndsWith("Async", StringComparison.Ordinal) ? name[..^5] : name) || name is "Shutdown" or "Cancel"),
        ("Asynchronous commands and the event loop", name => name.StartsWith("Aio", StringComparison.Ordinal) || name is "Poll" or "Poll2" or "ConnectionState"),
        ("About the export", name => name.StartsWith("Can", StringComparison.Ordinal) || name.StartsWith("Is", StringComparison.Ordinal) ||
            name is "GetSize" or "GetBlockSize" or "GetProtocol" or "GetCanonicalExportName" or "GetExportDescription" ||
            name.EndsWith("Negotiated", StringComparison.Ordinal) || name.StartsWith("Stats", StringComparison.Ordinal) || name == "GetMetaContext" ||
            name == "GetNrMetaContexts"),
        ("Settings before connecting", name => name.StartsWith("Set", StringComparison.Ordinal) || name.StartsWith("Get", StringComparison.Ordinal) ||
            name.StartsWith("Add", StringComparison.Ordinal) || name.StartsWith("Clear", StringComparison.Ordinal)),
        ("Other", _ => true),
    ];

    /// <summary>Every public call of the handle, grouped, a few names to a line.</summary>
    public static string Overview()
    {
        var text = new StringBuilder();
        text.Append("The handle h is an NbdHandle: every libnbd call nbd_foo_bar(h, ...) is h.FooBar(...).\n");
        text.Append("help(\"Pread\") shows one call; hexdump(bytes) shows bytes as nbddump does.\n");
        var seen = new HashSet<string>();
        var byGroup = Groups.ToDictionary(group => group.Title, _ => new List<string>());
        foreach (string name in CallNames())
        {
            if (seen.Add(name))
                byGroup[Groups.First(group => group.Holds(name)).Title].Add(name);
        }
        foreach ((string title, _) in Groups)
        {
            List<string> names = byGroup[title];
            if (names.Count == 0)
                continue;
            text.Append('\n').Append(title).Append(":\n");
            var line = new StringBuilder("   ");
            foreach (string name in names)
            {
                if (line.Length + name.Length + 1 > 100)
                {
                    text.Append(line.ToString().TrimEnd()).Append('\n');
                    line.Clear().Append("   ");
                }
                line.Append(' ').Append(name);
            }
            text.Append(line.ToString().TrimEnd()).Append('\n');
        }
        return text.ToString();
    }

    /// <summary>The signatures of the calls named <paramref name="name"/> (any case), each with its summary.</summary>
    public static string Describe(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        MethodInfo[] methods = typeof(NbdHandle).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly)
            .Where(method => !method.IsSpecialName && string.Equals(method.Name, name, StringComparison.OrdinalIgnoreCase))
            .ToArray();
        if (methods.Length == 0)
            return "NbdHandle has no call named " + name + "; help() lists them.\n";
        XDocument? docs = Documentation.Value;
        var text = new StringBuilder();
        foreach (MethodInfo method in methods)
        {
            text.Append(Signature(method)).Append('\n');
            string? summary = Summary(docs, method);
            if (summary != null)
                text.Append("    ").Append(summary).Append('\n');
        }
        return text.ToString();
    }

    private static IEnumerable<string> CallNames() =>
        typeof(NbdHandle).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly)
            .Where(method => !method.IsSpecialName)
            .Select(method => method.Name)
            .Where(name => name is not ("Dispose" or "DisposeAsync" or "Equals" or "GetHashCode" or "ToString" or "GetType"))
            .Order(StringComparer.Ordinal);

    private static string Signature(MethodInfo method)
    {
        var text = new StringBuilder();
        if (method.IsStatic)
            text.Append("static ");
        text.Append(TypeName(method.ReturnType)).Append(' ').Append(method.Name).Append('(');
        ParameterInfo[] parameters = method.GetParameters();
        for (int i = 0; i < parameters.Length; i++)
        {
            if (i > 0)
                text.Append(", ");
            ParameterInfo parameter = parameters[i];
            Type type = parameter.ParameterType;
            if (type.IsByRef)
            {
                text.Append(parameter.IsOut ? "out " : "ref ");
                type = type.GetElementType()!;
            }
            text.Append(TypeName(type)).Append(' ').Append(parameter.Name);
            if (parameter.HasDefaultValue)
                text.Append(" = ").Append(parameter.DefaultValue switch
                {
                    null => "null",
                    string s => "\"" + s + "\"",
                    bool b => b ? "true" : "false",
                    Enum e => e.GetType().Name + "." + e,
                    object o => Convert.ToString(o, System.Globalization.CultureInfo.InvariantCulture),
                });
        }
        return text.Append(')').ToString();
    }

    /// <summary>A type as C# spells it: keywords for the built-in types, generic arguments in angle brackets.</summary>
    private static string TypeName(Type type)
    {
        if (Nullable.GetUnderlyingType(type) is { } underlying)
            return TypeName(underlying) + "?";
        if (type.IsArray)
            return TypeName(type.GetElementType()!) + "[]";
        if (type.IsGenericType)
        {
            string name = type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)];
            return name + "<" + string.Join(", ", type.GetGenericArguments().Select(TypeName)) + ">";
        }
        return type.FullName switch
        {
            "System.Void" => "void",
            "System.Boolean" => "bool",
            "System.Byte" => "byte",
            "System.Int32" => "int",
            "System.UInt32" => "uint",
            "System.Int64" => "long",
            "System.UInt64" => "ulong",
            "System.String" => "string",
            "System.Object" => "object",
            _ => type.Name,
        };
    }

    private static readonly Lazy<XDocument?> Documentation = new(() =>
    {
        string path = Path.Combine(AppContext.BaseDirectory, "NbdSharp.xml");
        try
        {
            return File.Exists(path) ? XDocument.Load(path) : null;
        }
        catch (Exception e) when (e is IOException or System.Xml.XmlException)
        {
            return null;
        }
    });

    /// <summary>The method's summary from the XML documentation, on one line, or null.</summary>
    private static string? Summary(XDocument? docs, MethodInfo method)
    {
        if (docs == null)
            return null;
        string prefix = "M:NbdSharp.NbdHandle." + method.Name;
        int count = method.GetParameters().Length;
        foreach (XElement member in docs.Descendants("member"))
        {
            string id = (string?)member.Attribute("name") ?? "";
            bool matches = count == 0 ? id == prefix : id.StartsWith(prefix + "(", StringComparison.Ordinal) && id.Count(c => c == ',') == count - 1 - Nested(id);
            if (!matches)
                continue;
            XElement? summary = member.Element("summary");
            if (summary == null)
                return null;
            string text = string.Concat(summary.Nodes().Select(node => node switch
            {
                XText t => t.Value,
                XElement e when (string?)e.Attribute("cref") is { } cref => MemberName(cref),
                XElement e when (string?)e.Attribute("name") is { } name => name,
                XElement e => e.Value,
                _ => "",
            }));
            return string.Join(' ', text.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries));
        }
        return null;
    }

    /// <summary>The member a documentation reference names ("M:NbdSharp.NbdHandle.Poll(System.Int32)" is "Poll").</summary>
    private static string MemberName(string cref)
    {
        int parameters = cref.IndexOf('(', StringComparison.Ordinal);
        string path = parameters < 0 ? cref : cref[..parameters];
        return path[(path.LastIndexOf('.') + 1)..];
    }

    /// <summary>Commas inside generic arguments ({...}) of a documentation id, which do not separate parameters.</summary>
    private static int Nested(string id)
    {
        int depth = 0, commas = 0;
        foreach (char c in id)
        {
            if (c == '{')
                depth++;
            else if (c == '}')
                depth--;
            else if (c == ',' && depth > 0)
                commas++;
        }
        return commas;
    }
}
