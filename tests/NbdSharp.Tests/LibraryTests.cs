using System;
using Xunit;

namespace NbdSharp.Tests;

/// <summary>The calls about the library itself, which need no server.</summary>
[Trait("Tier", "Unit")]
public class LibraryTests
{
    [Fact]
    public void VersionAndPackage()
    {
        Assert.Equal("NbdSharp", NbdHandle.GetPackageName());
        Version assembly = typeof(NbdHandle).Assembly.GetName().Version!;
        Assert.Equal(assembly.ToString(3), NbdHandle.GetVersion());
        Assert.Matches(@"^\d+\.\d+\.\d+$", NbdHandle.GetVersion());
        Assert.Equal("", NbdHandle.GetVersionExtra());
    }

    [Theory]
    [InlineData("recv: Connection reset by peer", Errno.ECONNRESET, "nbd_shutdown: recv: Connection reset by peer")]
    [InlineData("recv: connection closed", Errno.ENOTCONN, "nbd_shutdown: recv: connection closed: Transport endpoint is not connected")]
    [InlineData("the server said no", 0, "nbd_shutdown: the server said no")]
    public void ErrorMessages_NameTheErrnoOnce(string detail, int errno, string expected) =>
        Assert.Equal(expected, NbdException.Format("nbd_shutdown", detail, errno));

    /// <summary>
    /// test.sh runs the unit tier a second time with NBDSHARP_PORTABLE_SOCKETS=1, over the data path
    /// macOS and Windows use: that run means something only if the variable takes effect.
    /// </summary>
    [Fact]
    public void PortableDataPath_FollowsTheVariable()
    {
        bool portable = Environment.GetEnvironmentVariable(NbdSharp.Transport.SocketTransport.PortableVariable) == "1";
        Assert.Equal(OperatingSystem.IsLinux() && !portable, NbdSharp.Transport.SocketTransport.UseLibC);
    }

    [Fact]
    public void Capabilities()
    {
        Assert.True(NbdHandle.SupportsTls());
        Assert.True(NbdHandle.SupportsUri());
        Assert.Equal(OperatingSystem.IsLinux() && System.IO.File.Exists("/dev/vsock"), NbdHandle.SupportsVsock());
    }

    [Theory]
    [InlineData("nbd://example.com/disk", true)]
    [InlineData("NBDS://example.com", true)]
    [InlineData("nbd+unix:///?socket=/tmp/s", true)]
    [InlineData("nbd+unix://?socket=/tmp/s", true)]
    [InlineData("nbds+unix:///e?socket=/tmp/s", true)]
    [InlineData("nbd+vsock://1:10809", true)]
    [InlineData("nbds+vsock://1", true)]
    [InlineData("nbd+ssh://host/", true)]
    [InlineData("nbds+ssh://host/", true)]
    [InlineData("disk.img", false)]
    [InlineData("/dev/sda", false)]
    [InlineData("nbd:", false)]
    [InlineData("http://example.com/", false)]
    [InlineData("", false)]
    public void IsUri_IsLibnbdsPrefixTest(string text, bool expected) => Assert.Equal(expected, NbdHandle.IsUri(text));

    [Fact]
    public void HandleSize_IsPositive_AndTlsPriority_DefaultsToNormal()
    {
        using var h = new NbdHandle();
        Assert.True(h.GetHandleSize() > 0);
        Assert.Equal("NORMAL", h.GetTlsPriority());
        h.SetTlsPriority("NORMAL:-VERS-TLS1.3");
        Assert.Equal("NORMAL:-VERS-TLS1.3", h.GetTlsPriority());
    }
}
