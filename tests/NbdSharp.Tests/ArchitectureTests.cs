using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Mono.Cecil;
using Mono.Cecil.Cil;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>
/// The library's layers (docs/design.md, "Layers"), checked on the compiled assembly: every type reference in
/// signatures, fields, attributes and method bodies, read with Mono.Cecil, must point to a layer the referring one may
/// use. The public vocabulary is what src/NbdSharp/Vocabulary declares; the facade is the rest of the root namespace.
/// </summary>
[Trait("Tier", "Unit")]
public partial class ArchitectureTests
{
    private const string Vocabulary = "Vocabulary";
    private const string Facade = "Facade";

    /// <summary>What each layer may use besides itself and the framework.</summary>
    private static readonly Dictionary<string, string[]> Allowed = new()
    {
        [Vocabulary] = [],
        ["Protocol"] = [],
        ["Async"] = [],
        ["Diagnostics"] = [Vocabulary],
        ["Transport"] = [Vocabulary, "Protocol", "Async"],
        ["Tls"] = [Vocabulary, "Protocol", "Transport", "Async"],
        ["Negotiation"] = [Vocabulary, "Protocol", "Transport", "Tls", "Diagnostics", "Async"],
        ["Engine"] = [Vocabulary, "Protocol", "Transport", "Diagnostics", "Async"],
        [Facade] = [Vocabulary, "Protocol", "Transport", "Tls", "Negotiation", "Engine", "Diagnostics", "Async"],
    };

    /// <summary>The transports Engine and Negotiation may name: the abstraction, never a concrete one.</summary>
    private static readonly HashSet<string> AbstractTransport = ["NbdSharp.Transport.Transport", "NbdSharp.Transport.TransportException"];

    private static readonly Lazy<Dictionary<string, HashSet<string>>> Dependencies = new(ReadDependencies);

    private static readonly Lazy<HashSet<string>> VocabularyTypes = new(ReadVocabulary);

    [Fact]
    public void EveryLayer_UsesOnlyTheLayersBelowIt()
    {
        var violations = new List<string>();
        foreach ((string from, HashSet<string> targets) in Dependencies.Value)
        {
            string fromLayer = LayerOf(from);
            foreach (string to in targets)
            {
                string toLayer = LayerOf(to);
                if (toLayer != fromLayer && !Allowed[fromLayer].Contains(toLayer))
                    violations.Add($"{from} ({fromLayer}) uses {to} ({toLayer})");
            }
        }
        Assert.True(violations.Count == 0, string.Join(Environment.NewLine, violations));
    }

    [Fact]
    public void EngineAndNegotiation_NeverNameAConcreteTransport()
    {
        var violations = new List<string>();
        foreach ((string from, HashSet<string> targets) in Dependencies.Value)
        {
            if (LayerOf(from) is not ("Engine" or "Negotiation"))
                continue;
            foreach (string to in targets)
            {
                if (LayerOf(to) == "Transport" && !AbstractTransport.Contains(to))
                    violations.Add($"{from} uses {to}");
            }
        }
        Assert.True(violations.Count == 0, string.Join(Environment.NewLine, violations));
    }

    [Fact]
    public void TheVocabulary_IsPublic_AndFoundWhereItIsDeclared()
    {
        Assert.NotEmpty(VocabularyTypes.Value);
        foreach (string name in VocabularyTypes.Value)
        {
            Type? type = typeof(NbdHandle).Assembly.GetType(name);
            Assert.True(type is { IsPublic: true }, name + " is declared in Vocabulary/ but is not a public type of the library");
        }
    }

    [Fact]
    public void TheRule_CatchesAViolation()
    {
        // The checker itself must see references: the facade certainly uses the engine, and the engine the protocol.
        Assert.Contains("NbdSharp.Engine.CommandEngine", Dependencies.Value["NbdSharp.NbdHandle"]);
        Assert.Contains("NbdSharp.Protocol.NbdCommand", Dependencies.Value["NbdSharp.Engine.CommandEngine"]);
        Assert.DoesNotContain(Facade, Allowed["Engine"]);
    }

    private static string LayerOf(string fullName)
    {
        if (VocabularyTypes.Value.Contains(fullName))
            return Vocabulary;
        int dot = fullName.LastIndexOf('.');
        string ns = dot < 0 ? "" : fullName[..dot];
        return ns == "NbdSharp" ? Facade : ns["NbdSharp.".Length..];
    }

    /// <summary>The types declared in the files of src/NbdSharp/Vocabulary.</summary>
    private static HashSet<string> ReadVocabulary()
    {
        string dir = Path.Combine(RepositoryRoot(), "src", "NbdSharp", "Vocabulary");
        var names = new HashSet<string>();
        foreach (string file in Directory.GetFiles(dir, "*.cs"))
        {
            foreach (Match m in Declaration().Matches(File.ReadAllText(file)))
                names.Add("NbdSharp." + m.Groups["name"].Value);
        }
        return names;
    }

    [GeneratedRegex(@"^public (?:sealed |static |abstract |readonly |record |partial )*(?:class|struct|enum|interface|delegate [\w<>\[\]]+|record struct|record) (?<name>\w+)", RegexOptions.Multiline)]
    private static partial Regex Declaration();

    private static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "NbdSharp.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException("the repository root (NbdSharp.slnx) was not found above " + AppContext.BaseDirectory);
    }

    /// <summary>For every type of the library (nested ones folded into their outermost type), the library types it names.</summary>
    private static Dictionary<string, HashSet<string>> ReadDependencies()
    {
        using var module = ModuleDefinition.ReadModule(typeof(NbdHandle).Assembly.Location);
        var result = new Dictionary<string, HashSet<string>>();
        foreach (TypeDefinition type in module.GetTypes())
        {
            TypeDefinition outer = Outermost(type);
            if (outer.Namespace.Length == 0)
                continue; // <Module>, <PrivateImplementationDetails>
            if (!result.TryGetValue(outer.FullName, out HashSet<string>? targets))
                result[outer.FullName] = targets = [];
            foreach (TypeReference used in Referenced(type))
                Add(targets, used, outer.FullName);
        }
        return result;
    }

    private static TypeDefinition Outermost(TypeDefinition type)
    {
        while (type.DeclaringType != null)
            type = type.DeclaringType;
        return type;
    }

    private static void Add(HashSet<string> targets, TypeReference? reference, string self)
    {
        switch (reference)
        {
            case null:
                return;
            case GenericInstanceType generic:
                Add(targets, generic.ElementType, self);
                foreach (TypeReference argument in generic.GenericArguments)
                    Add(targets, argument, self);
                return;
            case TypeSpecification specification: // arrays, pointers, by-ref, modifiers
                Add(targets, specification.ElementType, self);
                return;
            case GenericParameter:
                return;
        }
        if (reference.Scope is not ModuleDefinition)
            return; // the framework or a package
        TypeReference outer = reference;
        while (outer.DeclaringType != null)
            outer = outer.DeclaringType;
        if (outer.Namespace.Length > 0 && outer.FullName != self)
            targets.Add(outer.FullName);
    }

    private static IEnumerable<TypeReference> Referenced(TypeDefinition type)
    {
        yield return type.BaseType;
        foreach (InterfaceImplementation implemented in type.Interfaces)
            yield return implemented.InterfaceType;
        foreach (CustomAttribute attribute in type.CustomAttributes)
            yield return attribute.AttributeType;
        foreach (FieldDefinition field in type.Fields)
            yield return field.FieldType;
        foreach (PropertyDefinition property in type.Properties)
            yield return property.PropertyType;
        foreach (MethodDefinition method in type.Methods)
        {
            yield return method.ReturnType;
            foreach (ParameterDefinition parameter in method.Parameters)
                yield return parameter.ParameterType;
            if (!method.HasBody)
                continue;
            foreach (VariableDefinition variable in method.Body.Variables)
                yield return variable.VariableType;
            foreach (Instruction instruction in method.Body.Instructions)
            {
                switch (instruction.Operand)
                {
                    case TypeReference typeReference:
                        yield return typeReference;
                        break;
                    case MethodReference methodReference:
                        yield return methodReference.DeclaringType;
                        yield return methodReference.ReturnType;
                        foreach (ParameterDefinition parameter in methodReference.Parameters)
                            yield return parameter.ParameterType;
                        break;
                    case FieldReference fieldReference:
                        yield return fieldReference.DeclaringType;
                        yield return fieldReference.FieldType;
                        break;
                }
            }
        }
    }
}
