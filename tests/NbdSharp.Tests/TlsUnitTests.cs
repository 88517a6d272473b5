using System;
using System.IO;
using System.Security.Authentication;
using NbdSharp.Testing;
using NbdSharp.Tls;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>GnuTLS priority strings and PSK key files, without a server.</summary>
[Trait("Tier", "Unit")]
public class TlsUnitTests
{
    [Theory]
    [InlineData("NORMAL", SslProtocols.None)]
    [InlineData("SECURE256", SslProtocols.None)]
    [InlineData("@SYSTEM", SslProtocols.None)]
    [InlineData("NORMAL:+ECDHE-PSK:+PSK:%COMPAT", SslProtocols.None)]
    [InlineData("NORMAL:-VERS-ALL:+VERS-TLS1.3", SslProtocols.Tls13)]
    [InlineData("NORMAL:-VERS-TLS1.3", SslProtocols.Tls12)]
    [InlineData("NONE:+VERS-TLS1.2:+AES-128-GCM", SslProtocols.Tls12)]
    [InlineData("NORMAL:-VERS-TLS1.0:-VERS-TLS1.1", SslProtocols.None)] // nothing .NET offers was removed
    public void Priority_ChoosesVersions(string priority, SslProtocols expected) =>
        Assert.Equal(expected, TlsPriority.Protocols(priority));

    [Theory]
    [InlineData("BOGUS")]
    [InlineData("NORMAL:VERS-TLS1.2")]
    [InlineData("NORMAL::+VERS-TLS1.2")]
    [InlineData("NORMAL:+VERS-TLS9.9")]
    [InlineData("NORMAL:-VERS-ALL")]
    public void Priority_RejectsWhatGnutlsWouldNot(string priority) =>
        Assert.Throws<FormatException>(() => TlsPriority.Protocols(priority));

    [Fact]
    public void PskFile_FindsTheUser_AndSaysWhatIsWrong()
    {
        using var dir = new TempDirectory();
        string path = dir.File("keys.psk");
        File.WriteAllText(path, "al:00\r\nalice:0a0B\nbob:zz\n");
        Assert.Equal(new byte[] { 0x0a, 0x0b }, PskFile.Lookup(path, "alice"));
        Assert.Equal(new byte[] { 0 }, PskFile.Lookup(path, "al"));
        TlsFailure missing = Assert.Throws<TlsFailure>(() => PskFile.Lookup(path, "carol"));
        Assert.Equal(Errno.EINVAL, missing.Errno);
        Assert.Contains("username carol was not found in PSK file", missing.Message, StringComparison.Ordinal);
        Assert.Equal(Errno.EINVAL, Assert.Throws<TlsFailure>(() => PskFile.Lookup(path, "bob")).Errno);
        Assert.Equal(Errno.ENOENT, Assert.Throws<TlsFailure>(() => PskFile.Lookup(dir.File("none"), "alice")).Errno);
    }
}
