using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>Every libnbd 1.24 call has its NbdSharp counterpart, named by API.md's rule (libnbd-api.tsv lists all 165).</summary>
[Trait("Tier", "Unit")]
public class ApiCoverageTests
{
    public static TheoryData<string, string> Calls()
    {
        var data = new TheoryData<string, string>();
        foreach (string line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "libnbd-api.tsv")))
        {
            if (line.StartsWith('#') || line.Length == 0)
                continue;
            string[] fields = line.Split('\t');
            data.Add(fields[0], fields[3]);
        }
        return data;
    }

    [Fact]
    public void TheListHasAll165Calls() => Assert.Equal(165, Calls().Count);

    [Theory]
    [MemberData(nameof(Calls))]
    public void Call_HasItsCounterpart(string libnbdName, string member)
    {
        Type handle = typeof(NbdHandle);
        switch (member)
        {
            case "Create":
                Assert.NotNull(handle.GetConstructor(Type.EmptyTypes));
                return;
            case "Close":
                Assert.True(typeof(IDisposable).IsAssignableFrom(handle));
                return;
        }
        List<MethodInfo> methods = handle.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static)
            .Where(m => m.Name == member).ToList();
        Assert.True(methods.Count > 0, $"{libnbdName}: NbdHandle has no public member {member}");
    }
}
