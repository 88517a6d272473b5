using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;

namespace NbdSharp.Tools.Shell;

/// <summary>
/// What Tab offers in the interactive shell: after <c>h.</c> the handle's members, after the name of an NbdSharp type
/// its static members (<c>CmdFlag.</c>, <c>MetaContext.</c>, <c>Errno.</c>), elsewhere the shell's globals and the
/// NbdSharp types. Names are matched by their start.
/// </summary>
internal sealed class Completions
{
    private static readonly string[] Globals = ["h", "Args", "help", "hexdump", "exit"];

    private readonly Dictionary<string, Type> _types;

    public Completions()
    {
        _types = typeof(NbdHandle).Assembly.GetExportedTypes()
            .Where(type => type.Namespace == "NbdSharp" && !type.IsNested)
            .ToDictionary(type => type.Name, StringComparer.Ordinal);
    }

    /// <summary>For the text before the cursor: the word being typed and the names it may become, sorted.</summary>
    public (string Word, IReadOnlyList<string> Choices) For(string text)
    {
        int start = text.Length;
        while (start > 0 && (char.IsLetterOrDigit(text[start - 1]) || text[start - 1] == '_'))
            start--;
        string word = text[start..];
        IEnumerable<string> names;
        if (start > 0 && text[start - 1] == '.')
        {
            int receiverStart = start - 1;
            while (receiverStart > 0 && (char.IsLetterOrDigit(text[receiverStart - 1]) || text[receiverStart - 1] == '_'))
                receiverStart--;
            string receiver = text[receiverStart..(start - 1)];
            if (receiver == "h")
                names = Members(typeof(NbdHandle), BindingFlags.Instance);
            else if (_types.TryGetValue(receiver, out Type? type))
                names = Members(type, BindingFlags.Static);
            else
                names = [];
        }
        else
        {
            names = Globals.Concat(_types.Keys);
        }
        string[] choices = names.Where(name => name.StartsWith(word, StringComparison.Ordinal))
            .Distinct().Order(StringComparer.Ordinal).ToArray();
        return (word, choices);
    }

    private static IEnumerable<string> Members(Type type, BindingFlags kind) =>
        type.GetMembers(BindingFlags.Public | kind)
            .Where(member => member is MethodInfo { IsSpecialName: false } or PropertyInfo or FieldInfo)
            .Where(member => member.Name is not ("Equals" or "GetHashCode" or "GetType" or "ToString" or "ReferenceEquals"))
            .Select(member => member.Name);
}
