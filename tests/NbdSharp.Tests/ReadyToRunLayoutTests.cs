using System;
using System.Collections.Generic;
using System.Reflection;
using NbdSharp.Engine;
using NbdSharp.Transport;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The classes every command passes through keep layouts that ReadyToRun can fix when it compiles the library. A class
/// holding (directly, or in a struct of its own) a struct from another assembly (TimeSpan, Memory, MemoryHandle,
/// CancellationToken, a value-task source core) does not: the runtime may change that struct, so the precompiled code
/// looks up the offset of every field of the class at run time, on every access (docs/benchmarks.md). Such fields
/// live in small side objects instead (Command's StructFields) or are kept as ticks.
/// </summary>
public sealed class ReadyToRunLayoutTests
{
    public static TheoryData<Type> HotClasses() =>
    [
        typeof(NbdHandle),
        typeof(Command),
        typeof(CommandEngine),
        typeof(CommandPool),
        typeof(ReceiveBuffer),
        typeof(SocketTransport),
        typeof(RequestWatchdog),
        typeof(NbdSharp.Protocol.Coverage),
    ];

    [Theory]
    [MemberData(nameof(HotClasses))]
    public void HotClass_HoldsNoStructOfAnotherAssembly(Type type)
    {
        var found = new List<string>();
        Collect(type, type.Name, found, depth: 0);
        Assert.True(found.Count == 0, type.Name + " holds " + string.Join(", ", found));
    }

    private static void Collect(Type type, string path, List<string> found, int depth)
    {
        for (Type? t = type; t != null && t != typeof(object); t = t.BaseType)
        {
            foreach (FieldInfo field in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                Type f = field.FieldType;
                if (!f.IsValueType || f.IsPrimitive || f.IsEnum || f.IsPointer || f.IsFunctionPointer)
                    continue;
                if (f.Assembly != typeof(NbdHandle).Assembly)
                    found.Add($"{path}.{field.Name} ({f.Name})");
                else if (depth < 8)
                    Collect(f, path + "." + field.Name, found, depth + 1);
            }
        }
    }
}
