#!/usr/bin/env bash
# pack.sh - makes every NbdSharp package into one folder, as a release would:
#   NbdSharp and NbdSharp.Server (library packages with symbols),
#   NbdSharp.nbdcopy, .nbdinfo, .nbddump, .nbddiscard, .nbdzero: a pointer package, one package per platform
#     (linux, osx, win; x64, arm64) and a portable one ("any"); the package of this machine's own platform holds the
#     Native AOT binary, the others are ReadyToRun (Native AOT does not cross-compile here),
#   NbdSharp.nbdsh, .nbdfuse, .nbdsharp-server: framework-dependent tool packages.
# Usage: scripts/pack.sh [--rids LIST] [OUTPUT-FOLDER]   (default artifacts/packages)
#   --rids LIST  the platforms of the per-platform tool packages, ';'-separated (default
#                "linux-x64;linux-arm64;osx-x64;osx-arm64;win-x64;win-arm64;any"; test.sh packs "linux-x64;any",
#                which takes about half the time)
set -euo pipefail
cd "$(dirname "$0")/.."
RIDS=""
if [ "${1:-}" = "--rids" ]; then RIDS=$2; shift 2; fi
OUT=$(realpath -m "${1:-artifacts/packages}")
mkdir -p "$OUT"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) NATIVE=linux-x64 ;;
  Linux-aarch64) NATIVE=linux-arm64 ;;
  Darwin-arm64) NATIVE=osx-arm64 ;;
  Darwin-x86_64) NATIVE=osx-x64 ;;
  *) NATIVE="" ;;
esac

pack() { dotnet pack "$@" -c Release -o "$OUT" -nologo -v q -clp:ErrorsOnly; }

for project in src/NbdSharp src/NbdSharp.Server tools/nbdsh tools/nbdfuse tools/nbdsharp-server; do
  echo "pack.sh: $project" >&2
  pack "$project"
done
for tool in nbdcopy nbdinfo nbddump nbddiscard nbdzero; do
  echo "pack.sh: tools/$tool (every platform, ReadyToRun, and portable)" >&2
  if [ -n "$RIDS" ]; then pack "tools/$tool" -p:ToolRids="\"$RIDS\""; else pack "tools/$tool"; fi
  if [ -n "$NATIVE" ]; then
    echo "pack.sh: tools/$tool ($NATIVE, Native AOT)" >&2
    pack "tools/$tool" -r "$NATIVE" -p:PublishAot=true -p:ToolRids="$NATIVE" -p:RuntimeIdentifiers="$NATIVE"
    # The ReadyToRun package's symbols do not belong to the native binary that replaced it.
    rm -f "$OUT/NbdSharp.$tool.$NATIVE".*.snupkg
  fi
done
echo "pack.sh: packages in $OUT" >&2
