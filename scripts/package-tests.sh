#!/usr/bin/env bash
# package-tests.sh - what a .NET user does with NbdSharp's packages, checked end to end:
#   - scripts/pack.sh packs every package into a private folder;
#   - a new console project that references NbdSharp and NbdSharp.Server from that folder only (its own NuGet cache,
#     so no build of this tree can stand in for them) is built and run: an in-process server and the client, then
#     the client against nbdkit;
#   - every tool is installed from that folder with `dotnet tool install --tool-path`, run with --version and with
#     one real command against a server, its output checked; on linux-x64 the installed nbdcopy, nbdinfo, nbddump,
#     nbddiscard, nbdzero, nbdfuse and nbdsharp-server must be the Native AOT binaries; their linux-arm64 packages
#     too (cross-compiled; nbdinfo and nbdcopy run under qemu-user);
#   - the library builds to the same bytes from two clones at different paths (and to the packaged bytes in CI).
# Each check is one test; the last line is "packages: N passed, N failed".
# Usage: scripts/package-tests.sh [PACKAGE-FOLDER]   (packs into a temporary folder unless given one already packed;
#        PACK_RIDS chooses the tool packages' platforms, as pack.sh's --rids)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
T=$(mktemp -d /tmp/nbdsharp-packages.XXXXXX)
cleanup() { fusermount3 -u "$T/mnt" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
passed=0 failed=0

check() { # check NAME COMMAND...: one test
  local name=$1; shift
  if "$@" > "$T/out" 2> "$T/err"; then
    echo "package test: $name: ok"
    passed=$((passed + 1))
  else
    echo "package test: $name: FAILED" >&2
    sed 's/^/    /' "$T/out" "$T/err" | tail -20 >&2
    failed=$((failed + 1))
  fi
}
finish() { echo "packages: $passed passed, $failed failed"; exit $((failed > 0)); }

FEED=${1:-}
if [ -z "$FEED" ]; then
  FEED=$T/feed
  if [ -n "${PACK_RIDS:-}" ]; then
    check "pack every package (scripts/pack.sh --rids '$PACK_RIDS')" scripts/pack.sh --rids "$PACK_RIDS" "$FEED"
  else
    check "pack every package (scripts/pack.sh)" scripts/pack.sh "$FEED"
  fi
fi
FEED=$(realpath "$FEED")
VERSION=$(dotnet msbuild src/NbdSharp -getProperty:Version)
if ! ls "$FEED/NbdSharp.$VERSION.nupkg" >/dev/null 2>&1; then
  echo "package-tests.sh: no NbdSharp.$VERSION.nupkg in $FEED" >&2
  failed=$((failed + 1))
  finish
fi

# The library: a console project that knows nothing of this tree. NbdSharp* may only come from the folder; the
# dependencies (BouncyCastle, Microsoft.Extensions.Logging.Abstractions) from the build's NuGet cache, read as a
# plain folder feed, or nuget.org.
mkdir -p "$T/app" "$T/nuget"
cat > "$T/app/nuget.config" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="nbdsharp" value="$FEED" />
    <add key="cache" value="${NUGET_PACKAGES:-$HOME/.nuget/packages}" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="nbdsharp"><package pattern="NbdSharp" /><package pattern="NbdSharp.*" /></packageSource>
    <packageSource key="cache"><package pattern="*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
EOF
cat > "$T/app/app.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="NbdSharp" Version="[$VERSION]" />
    <PackageReference Include="NbdSharp.Server" Version="[$VERSION]" />
  </ItemGroup>
</Project>
EOF
cat > "$T/app/Program.cs" <<'EOF'
using NbdSharp;
using NbdSharp.Server;

// With a URI: the client against that server. Without: an in-process NbdSharp.Server and the client.
if (args.Length == 0)
{
    string socket = Path.Combine(Path.GetTempPath(), "app-" + Environment.ProcessId + ".sock");
    await using var server = new NbdServer();
    server.AddExport("disk", new MemoryExport(1 << 20), "a scratch disk");
    string uri = server.ListenUnix(socket).Replace("/?", "/disk?", StringComparison.Ordinal);
    Exercise(uri);
    await server.StopAsync();
}
else
{
    Exercise(args[0]);
}

static void Exercise(string uri)
{
    using var h = new NbdHandle();
    h.ConnectUri(uri);
    byte[] data = new byte[65536];
    new Random(17).NextBytes(data);
    h.Pwrite(data, 4096);
    byte[] back = new byte[data.Length];
    h.Pread(back, 4096);
    if (!data.AsSpan().SequenceEqual(back))
        throw new InvalidOperationException("read back differs");
    Console.WriteLine($"size={h.GetSize()} library={NbdHandle.GetPackageName()} {NbdHandle.GetVersion()} ok");
    h.Shutdown();
}
EOF
check "a console project builds against the NbdSharp packages only" \
  env NUGET_PACKAGES="$T/nuget" dotnet build "$T/app" -c Release -nologo -v q
check "NbdSharp.Server in process, with the NbdSharp client" \
  bash -c "out=\$(dotnet '$T/app/bin/Release/net10.0/app.dll') && echo \"\$out\" && [ \"\$out\" = 'size=1048576 library=NbdSharp $VERSION ok' ]"
check "the NbdSharp client package against nbdkit" \
  bash -c "out=\$(nbdkit -U - memory 1M --run 'dotnet $T/app/bin/Release/net10.0/app.dll \"\$uri\"') && echo \"\$out\" && [ \"\$out\" = 'size=1048576 library=NbdSharp $VERSION ok' ]"
# The package came from the folder, not from this tree's build.
check "the app's NbdSharp.dll is the packaged one" \
  cmp "$T/app/bin/Release/net10.0/NbdSharp.dll" "$T/nuget/nbdsharp/$VERSION/lib/net10.0/NbdSharp.dll"

# The tools.
TOOLS=$T/tools
for tool in nbdcopy nbdinfo nbddump nbddiscard nbdzero nbdsh nbdfuse nbdsharp-server; do
  check "dotnet tool install NbdSharp.$tool" \
    env NUGET_PACKAGES="$T/nuget" dotnet tool install --tool-path "$TOOLS" --add-source "$FEED" --version "$VERSION" "NbdSharp.$tool"
  check "$tool --version" bash -c "'$TOOLS/$tool' --version | grep -q '^$tool $VERSION\$'"
done

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)
    for tool in nbdcopy nbdinfo nbddump nbddiscard nbdzero nbdfuse nbdsharp-server; do
      check "the installed $tool is the Native AOT binary (linux-x64)" bash -c "
        bin=\$(readlink -f '$TOOLS/$tool')
        case \$bin in */nbdsharp.$tool.linux-x64/*) ;; *) echo \"not the linux-x64 package: \$bin\"; exit 1 ;; esac
        file \"\$bin\" | grep -q 'ELF 64-bit' && [ ! -e \"\$(dirname \"\$bin\")/$tool.dll\" ]"
    done ;;
esac

# linux-arm64, cross-compiled with Native AOT when pack.sh could (the cross toolchain is there): the package holds an
# aarch64 binary, which qemu-user runs against nbdkit.
if [[ ";${PACK_RIDS:-linux-arm64};" == *";linux-arm64;"* ]] && command -v aarch64-linux-gnu-gcc >/dev/null && [ "$(uname -m)" = x86_64 ]; then
  for tool in nbdcopy nbdinfo nbddump nbddiscard nbdzero nbdfuse nbdsharp-server; do
    check "the linux-arm64 package of $tool holds the Native AOT binary" bash -c "
      rm -rf '$T/arm64' && mkdir -p '$T/arm64' && cd '$T/arm64' && unzip -q '$FEED/NbdSharp.$tool.linux-arm64.$VERSION.nupkg' &&
      bin=\$(find . -type f -name $tool) && file \"\$bin\" | grep -q 'ELF 64-bit LSB pie executable, ARM aarch64' &&
      [ -z \"\$(find . -name '$tool.dll')\" ] && cp \"\$bin\" '$T/$tool-arm64' && chmod +x '$T/$tool-arm64'"
  done
  if command -v qemu-aarch64 >/dev/null; then
    check "the linux-arm64 nbdinfo runs (qemu-user) against nbdkit" bash -c "
      [ \"\$(nbdkit -U - pattern 1M --run 'qemu-aarch64 -L /usr/aarch64-linux-gnu $T/nbdinfo-arm64 --size \"\$uri\"')\" = 1048576 ]"
    check "the linux-arm64 nbdcopy copies (qemu-user), as libnbd's nbdcopy does" bash -c "
      nbdkit -U - pattern 3M --run 'qemu-aarch64 -L /usr/aarch64-linux-gnu $T/nbdcopy-arm64 \"\$uri\" $T/arm64.img && nbdcopy \"\$uri\" $T/libnbd-arm64.img' &&
      cmp $T/arm64.img $T/libnbd-arm64.img"
  fi
fi

# One real command each, against nbdkit (or our own server), checked against libnbd's tools where they exist.
check "nbdinfo --size" bash -c "[ \"\$(nbdkit -U - pattern 1M --run '$TOOLS/nbdinfo --size \"\$uri\"')\" = 1048576 ]"
check "nbdcopy (pattern -> file, compared with libnbd's nbdcopy)" bash -c "
  nbdkit -U - pattern 3M --run '$TOOLS/nbdcopy \"\$uri\" $T/ours.img && nbdcopy \"\$uri\" $T/libnbd.img' && cmp $T/ours.img $T/libnbd.img"
check "nbddump (the same as libnbd's nbddump)" bash -c "
  nbdkit -U - pattern 64K --run '$TOOLS/nbddump \"\$uri\" > $T/ours.txt && nbddump \"\$uri\" > $T/libnbd.txt' && cmp $T/ours.txt $T/libnbd.txt"
check "nbdzero and nbddiscard" bash -c "
  nbdkit -U - memory 1M --run 'nbdcopy -- [ nbdkit pattern 1M ] \"\$uri\" && $TOOLS/nbdzero -y -o 4096 -l 4096 \"\$uri\" &&
    $TOOLS/nbddiscard -y -o 8192 -l 4096 \"\$uri\" && nbdcopy \"\$uri\" $T/zeroed.img' &&
  cmp -n 4096 -i 4096:0 $T/zeroed.img /dev/zero && ! cmp -s -n 4096 $T/zeroed.img /dev/zero"
check "nbdsh -c" bash -c "[ \"\$(nbdkit -U - memory 1M --run '$TOOLS/nbdsh -u \"\$uri\" -c \"h.GetSize()\"')\" = 1048576 ]"
check "nbdsharp-server serving libnbd's nbdinfo" bash -c "[ \"\$('$TOOLS/nbdsharp-server' -U - pattern 2M --run 'nbdinfo --size \"\$uri\"')\" = 2097152 ]"
mkdir -p "$T/mnt"
# Reproducible builds: the library built from two clones of this commit at different paths (Source Link's path
# mapping, ContinuousIntegrationBuild) gives the same bytes; in CI, where pack.sh builds that way, so does the package.
reproducible() {
  local n
  for n in a bb; do
    git clone -q "$ROOT" "$T/clone-$n" &&
      (cd "$T/clone-$n" && dotnet build src/NbdSharp -c Release -p:ContinuousIntegrationBuild=true -nologo -v q -clp:ErrorsOnly) || return 1
  done
  local built=artifacts/bin/NbdSharp/release
  cmp "$T/clone-a/$built/NbdSharp.dll" "$T/clone-bb/$built/NbdSharp.dll" &&
    cmp "$T/clone-a/$built/NbdSharp.pdb" "$T/clone-bb/$built/NbdSharp.pdb" || return 1
  if [ "${CI:-}" = true ] && [ -z "$(git status --porcelain --untracked-files=no)" ]; then
    mkdir -p "$T/unzipped" && unzip -q -o "$FEED/NbdSharp.$VERSION.nupkg" lib/net10.0/NbdSharp.dll -d "$T/unzipped" &&
      cmp "$T/unzipped/lib/net10.0/NbdSharp.dll" "$T/clone-a/$built/NbdSharp.dll"
  fi
}
check "the library builds reproducibly (two clones at different paths, and the package in CI)" reproducible
check "nbdfuse mounts an export" bash -c "
  '$TOOLS/nbdfuse' -P $T/fuse.pid $T/mnt/disk [ nbdkit pattern 1M ] &
  for _ in \$(seq 100); do [ -e $T/fuse.pid ] && break; sleep 0.1; done
  nbdkit -U - pattern 1M --run 'nbdcopy \"\$uri\" $T/pattern.img' && cmp $T/mnt/disk $T/pattern.img; status=\$?
  fusermount3 -u $T/mnt; wait; exit \$status"
finish
