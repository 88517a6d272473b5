using System;
using System.Collections.Generic;
using System.Collections.Immutable;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Threading;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Scripting;
using Microsoft.CodeAnalysis.CSharp.Scripting.Hosting;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Emit;
using Microsoft.CodeAnalysis.Scripting;

namespace NbdSharp.Tools.Shell;

/// <summary>A piece of C# compiled as the next submission of a session, with what the compiler said.</summary>
internal sealed class Submission(Script<object> script, ImmutableArray<Diagnostic> diagnostics)
{
    public Script<object> Script { get; } = script;

    /// <summary>The compiler's errors, each as "source(line,col): error CSnnnn: message".</summary>
    public IReadOnlyList<string> Errors { get; } = diagnostics
        .Where(diagnostic => diagnostic.Severity == DiagnosticSeverity.Error)
        .Select(diagnostic => diagnostic.ToString())
        .ToArray();
}

/// <summary>What running a submission gave.</summary>
/// <param name="Value">The value of its trailing expression, formatted as <c>csi</c> does, or null when it has none.</param>
/// <param name="Exception">What the code threw, or null.</param>
internal sealed record SubmissionResult(string? Value, Exception? Exception);

/// <summary>
/// One scripting session (Roslyn's C# scripting): submissions run one after the other and share their variables, as
/// the commands of one nbdsh invocation or the lines of the interactive shell do. Every submission has
/// <c>using NbdSharp;</c> (and the usual System namespaces) and sees the members of <see cref="ShellGlobals"/>.
/// </summary>
internal sealed class ScriptSession
{
    private static readonly string[] Imports =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Text", "System.Threading", "System.Threading.Tasks", "NbdSharp"];

    /// <summary>
    /// The framework assemblies scripts see besides Roslyn's defaults: LINQ, and those NbdSharp's calls take types from
    /// (sockets, end points), and hashes for comparing what was read. Anything else is a <c>#r "System.Net.Http"</c> away, as in <c>csi</c>.
    /// </summary>
    private static readonly string[] FrameworkReferences =
        ["System.Linq", "System.Net.Primitives", "System.Net.Sockets", "System.Memory", "System.Security.Cryptography"];

    private readonly ShellGlobals _globals;
    private readonly ScriptCache? _cache;
    private readonly ScriptOptions _options;
    private Script<object>? _last;
    private ScriptState<object>? _state;

    /// <summary>A session for <paramref name="globals"/>; what compiles is kept in <paramref name="cache"/> when given a key.</summary>
    public ScriptSession(ShellGlobals globals, ScriptCache? cache = null)
    {
        _globals = globals;
        _cache = cache;
        _options = ScriptOptions.Default
            .AddReferences(FrameworkReferences)
            .AddReferences(typeof(NbdHandle).Assembly, typeof(ShellGlobals).Assembly, typeof(Microsoft.Extensions.Logging.ILogger).Assembly)
            .WithImports(Imports)
            .WithLanguageVersion(LanguageVersion.Latest)
            .WithOptimizationLevel(OptimizationLevel.Release);
        _options = _options.WithMetadataResolver(new ShellMetadataResolver(_options.MetadataResolver, _options.MetadataReferences));
    }

    /// <summary>The options submissions are parsed with, for telling whether a piece of input is complete.</summary>
    public static CSharpParseOptions ParseOptions { get; } = new(LanguageVersion.Latest, kind: SourceCodeKind.Script);

    /// <summary>
    /// Compiles <paramref name="code"/> as the submission after <paramref name="previous"/> (or after the last one run
    /// when null). <paramref name="source"/> names it in compiler messages ("" for none). When it compiles and
    /// <paramref name="cacheKey"/> is given, the assembly is stored in the cache under that key.
    /// </summary>
    public Submission Prepare(string code, string source, Submission? previous = null, string? cacheKey = null)
    {
        ScriptOptions options = _options.WithFilePath(source);
        Script<object>? after = previous?.Script ?? _last;
        Script<object> script = after == null
            ? CSharpScript.Create(code, options, typeof(ShellGlobals))
            : after.ContinueWith(code, options);
        var submission = new Submission(script, script.Compile());
        if (submission.Errors.Count == 0 && cacheKey != null && _cache != null)
            Store(script, cacheKey);
        return submission;
    }

    /// <summary>Emits the submission's assembly (with its debug information inside) into the cache.</summary>
    private void Store(Script<object> script, string key)
    {
        Compilation compilation = script.GetCompilation();
        IMethodSymbol? factory = compilation.GetEntryPoint(CancellationToken.None);
        if (factory == null)
            return;
        using var image = new MemoryStream();
        if (!compilation.Emit(image, options: new EmitOptions(debugInformationFormat: DebugInformationFormat.Embedded)).Success)
            return;
        INamedTypeSymbol type = factory.ContainingType;
        string typeName = type.ContainingNamespace is { IsGlobalNamespace: false } space
            ? space.ToDisplayString() + "." + type.MetadataName
            : type.MetadataName;
        _cache!.Store(key, new CachedEntry(image.ToArray(), typeName, factory.MetadataName, ShowsValue(script)));
    }

    /// <summary>Runs a submission that compiled; the session continues from it even when the code threw.</summary>
    public SubmissionResult Run(Submission submission)
    {
        if (submission.Errors.Count > 0)
            throw new InvalidOperationException("a submission with errors cannot run");
        _state = _state == null
            ? submission.Script.RunAsync(_globals, catchException: static _ => true).GetAwaiter().GetResult()
            : submission.Script.RunFromAsync(_state, catchException: static _ => true).GetAwaiter().GetResult();
        _last = submission.Script;
        if (_state.Exception != null)
            return new SubmissionResult(null, _state.Exception);
        return new SubmissionResult(ShowsValue(submission.Script) ? ValueFormatter.Format(_state.ReturnValue) : null, null);
    }

    /// <summary>Whether the submission ends with an expression without a semicolon whose type is not void.</summary>
    private static bool ShowsValue(Script<object> script)
    {
        Compilation compilation = script.GetCompilation();
        SyntaxTree tree = compilation.SyntaxTrees.Single();
        if (tree.GetRoot() is not CompilationUnitSyntax { Members: { Count: > 0 } members } ||
            members[^1] is not GlobalStatementSyntax { Statement: ExpressionStatementSyntax { SemicolonToken.IsMissing: true } statement })
            return false;
        ITypeSymbol? type = compilation.GetSemanticModel(tree).GetTypeInfo(statement.Expression).Type;
        return type is not { SpecialType: SpecialType.System_Void };
    }

    /// <summary>Whether <paramref name="code"/> is a complete submission (the interactive shell reads on otherwise).</summary>
    public static bool IsComplete(string code) => SyntaxFactory.IsCompleteSubmission(SyntaxFactory.ParseSyntaxTree(code, ParseOptions));
}

/// <summary>How the value of a trailing expression is printed: as <c>csi</c> prints it.</summary>
internal static class ValueFormatter
{
    /// <summary>
    /// The value as Roslyn's C# object formatter shows it. The commonest values (null, booleans, integers, plain
    /// ASCII strings) are written here as it writes them, which spares a run from the cache loading the compiler's C#
    /// assembly just to print a size.
    /// </summary>
    public static string Format(object? value) => value switch
    {
        null => "null",
        bool b => b ? "true" : "false",
        int or long or uint or ulong or short or ushort or byte or sbyte => ((IFormattable)value).ToString(null, CultureInfo.InvariantCulture),
        string text when IsPlain(text) => "\"" + text + "\"",
        _ => Roslyn(value),
    };

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static string Roslyn(object value) => CSharpObjectFormatter.Instance.FormatObject(value);

    private static bool IsPlain(string text)
    {
        foreach (char c in text)
        {
            if (c is < ' ' or > '~' or '"' or '\\')
                return false;
        }
        return true;
    }
}

/// <summary>
/// Roslyn's script resolver (so <c>#r</c> finds files, framework assemblies and their dependencies as in <c>csi</c>),
/// except that it does not chase the dependencies of the shell's own assemblies (NbdSharp, nbdsh): Roslyn would
/// otherwise read the metadata of every assembly they reach (the compiler itself and what it uses, the TLS-PSK library
/// inside NbdSharp), which doubled the first compile. Framework assemblies are followed as usual (a forwarded type such
/// as <see cref="Uri"/> needs its definition); the types scripts use from the shell's dependencies are referenced
/// directly.
/// </summary>
internal sealed class ShellMetadataResolver : MetadataReferenceResolver
{
    private static readonly string AppFolder = Path.TrimEndingDirectorySeparator(AppContext.BaseDirectory);

    private readonly MetadataReferenceResolver _inner;
    private readonly HashSet<string> _shells;

    /// <summary>Wraps <paramref name="inner"/>; <paramref name="shells"/> are the references every session starts with.</summary>
    public ShellMetadataResolver(MetadataReferenceResolver inner, IEnumerable<MetadataReference> shells)
    {
        _inner = inner;
        _shells = new HashSet<string>(StringComparer.Ordinal);
        foreach (MetadataReference reference in shells)
        {
            string? name = reference switch
            {
                PortableExecutableReference { FilePath: { } path } => Path.GetFileNameWithoutExtension(path),
                UnresolvedMetadataReference unresolved => unresolved.Reference,
                _ => null,
            };
            if (name != null)
                _shells.Add(name);
        }
    }

    /// <inheritdoc/>
    public override bool ResolveMissingAssemblies => _inner.ResolveMissingAssemblies;

    /// <inheritdoc/>
    public override PortableExecutableReference? ResolveMissingAssembly(MetadataReference definition, AssemblyIdentity referenceIdentity) =>
        IsTheShells(definition) ? null : _inner.ResolveMissingAssembly(definition, referenceIdentity);

    /// <inheritdoc/>
    public override ImmutableArray<PortableExecutableReference> ResolveReference(string reference, string? baseFilePath, MetadataReferenceProperties properties) =>
        _inner.ResolveReference(reference, baseFilePath, properties);

    /// <inheritdoc/>
    public override bool Equals(object? other) => ReferenceEquals(this, other);

    /// <inheritdoc/>
    public override int GetHashCode() => _inner.GetHashCode();

    private bool IsTheShells(MetadataReference definition) =>
        definition is PortableExecutableReference { FilePath: { } path } &&
        string.Equals(Path.GetDirectoryName(path), AppFolder, StringComparison.Ordinal) &&
        _shells.Contains(Path.GetFileNameWithoutExtension(path));
}
