using Xunit;

namespace NbdSharp.Tests;

[Trait("Tier", "Unit")]
public class NbdUriTests
{
    [Theory]
    [InlineData("nbd://example.com/disk", NbdUriTransport.Tcp, false, "example.com", null, "disk")]
    [InlineData("nbd://example.com:10810/", NbdUriTransport.Tcp, false, "example.com", 10810, "")]
    [InlineData("nbd://example.com", NbdUriTransport.Tcp, false, "example.com", null, "")]
    [InlineData("nbd://h//disk", NbdUriTransport.Tcp, false, "h", null, "/disk")]
    [InlineData("nbd://h/my%20disk", NbdUriTransport.Tcp, false, "h", null, "my disk")]
    [InlineData("nbds://[::1]:1234/e", NbdUriTransport.Tcp, true, "::1", 1234, "e")]
    [InlineData("NBD+UNIX:///e?socket=/tmp/s", NbdUriTransport.Unix, false, null, null, "e")]
    [InlineData("nbd+vsock://1:10809", NbdUriTransport.Vsock, false, "1", 10809, "")]
    public void Parse_Components(string text, NbdUriTransport transport, bool tls, string? host, int? port, string export)
    {
        NbdUri uri = NbdUri.Parse(text);
        Assert.Equal(transport, uri.Transport);
        Assert.Equal(tls, uri.Tls);
        Assert.Equal(host, uri.Host);
        Assert.Equal(port, uri.Port);
        Assert.Equal(export, uri.ExportName);
    }

    [Fact]
    public void Parse_NbdkitRunFormWithoutSlash()
    {
        NbdUri uri = NbdUri.Parse("nbd+unix://?socket=/tmp/nbdkitXXX/socket");
        Assert.Equal(NbdUriTransport.Unix, uri.Transport);
        Assert.Equal("/tmp/nbdkitXXX/socket", uri.Socket);
        Assert.Equal("", uri.ExportName);
    }

    [Fact]
    public void Parse_QueryValuesAreDecodedAndUserIsKept()
    {
        NbdUri uri = NbdUri.Parse("nbds+unix://alice@/e?socket=/tmp/a%20b&tls-psk-file=/k.psk");
        Assert.Equal("alice", uri.User);
        Assert.Equal("/tmp/a b", uri.Socket);
        Assert.Equal("/k.psk", uri.GetQueryParameter("TLS-PSK-FILE"));
    }

    [Theory]
    [InlineData("/tmp/socket", "to open a local socket")]
    [InlineData("localhost:10809", "to open a local port")]
    [InlineData("http://example.com/", "unknown NBD URI scheme")]
    [InlineData("nbd:example.com", "URI must begin with 'nbd://'")]
    [InlineData("nbd://h:99999/", "invalid port")]
    [InlineData("nbd://h/%zz", "invalid percent-encoding")]
    [InlineData("nbd://[::1/", "unterminated IPv6")]
    public void Parse_BadUris_GiveEinvalNamingTheProblem(string text, string expected)
    {
        var e = Assert.Throws<NbdException>(() => NbdUri.Parse(text));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains(expected, e.Message, System.StringComparison.Ordinal);
    }

    [Fact]
    public void ToString_RoundTrips()
    {
        NbdUri uri = NbdUri.Parse("nbd+unix:///my%20disk?socket=/tmp/s");
        Assert.Equal("nbd+unix:///my%20disk?socket=/tmp/s", uri.ToString());
        Assert.Equal("my disk", NbdUri.Parse(uri.ToString()).ExportName);
    }

    /// <summary>What libnbd 1.14 (libxml2's RFC 3986 parser) refuses with "unable to parse URI", found by the uri fuzz target.</summary>
    [Theory]
    [InlineData("nbd://h/a b")]
    [InlineData("nbd://h/\u00e9")]
    [InlineData("nbd://a b/")]
    [InlineData("nbd://|::1]:9/a")]
    [InlineData("nbd://H::1]:9/a")]
    [InlineData("nbd://1]:[::9/ 2Fb")]
    [InlineData("nbd+unix:///x?socket=/a b")]
    [InlineData("nbd://h/x#a b")]
    [InlineData("nbd://[[0]/")]
    public void Parse_CharactersRfc3986Forbids_AreRefusedAsLibnbdDoes(string text)
    {
        var e = Assert.Throws<NbdException>(() => NbdUri.Parse(text));
        Assert.Equal(Errno.EINVAL, e.Errno);
        Assert.Contains("unable to parse URI", e.Message, System.StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nbd://a%2Fb", "a/b", "nbd://a%2Fb/")]
    [InlineData("nbd://a%41/", "aA", "nbd://aA/")]
    [InlineData("nbd://[fe80::1%25eth0]:10809/e", "fe80::1%25eth0", "nbd://[fe80::1%25eth0]:10809/e")]
    [InlineData("nbd://[]/", "", "nbd://[]/")]
    [InlineData("nbd://us%40er:x@h/", "h", "nbd://us%40er:x@h/")]
    public void ToString_PrintsAUriThatParsesBackToTheSameParts(string text, string host, string printed)
    {
        NbdUri uri = NbdUri.Parse(text);
        Assert.Equal(host, uri.Host);
        Assert.Equal(printed, uri.ToString());
        NbdUri again = NbdUri.Parse(printed);
        Assert.Equal((uri.Host, uri.User, uri.Port, uri.ExportName), (again.Host, again.User, again.Port, again.ExportName));
    }
}
