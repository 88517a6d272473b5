#!/usr/bin/env bash
# pack.sh - makes every NbdSharp package into one folder, as a release would:
#   NbdSharp and NbdSharp.Server (library packages with symbols),
#   NbdSharp.nbdcopy, .nbdinfo, .nbddump, .nbddiscard, .nbdzero, .nbdfuse, .nbdsharp-server: a pointer package, one
#     package per platform
#     (linux, osx, win; x64, arm64) and a portable one ("any"); the packages of this machine's own platform and, on
#     linux-x64 with the aarch64 cross toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: see
#     scripts/install-peers.sh), of linux-arm64 hold the Native AOT binary; the others are ReadyToRun (Native AOT
#     does not compile across operating systems),
#   NbdSharp.nbdsh: a framework-dependent tool package (a C# shell compiles scripts at run time: it needs the JIT).
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

# The platforms whose packages get the Native AOT binary: this one, and linux-arm64 from linux-x64 when the cross
# toolchain is there; only those among --rids.
AOT=()
[ -z "$NATIVE" ] || AOT+=("$NATIVE")
if [ "$NATIVE" = linux-x64 ] && command -v aarch64-linux-gnu-gcc >/dev/null && [ -d /usr/aarch64-linux-gnu/lib ]; then
  AOT+=(linux-arm64)
fi
if [ -n "$RIDS" ]; then
  chosen=()
  for rid in "${AOT[@]}"; do [[ ";$RIDS;" == *";$rid;"* ]] && chosen+=("$rid"); done
  AOT=("${chosen[@]}")
fi

for project in src/NbdSharp src/NbdSharp.Server tools/nbdsh; do
  echo "pack.sh: $project" >&2
  pack "$project"
done
# The platforms packed with Native AOT are left out of the ReadyToRun round (tools/ToolPackages.targets).
round=(-p:SkipToolRidPackages="\"$(IFS=';'; echo "${AOT[*]}")\"")
[ -z "$RIDS" ] || round+=(-p:ToolRids="\"$RIDS\"")
for tool in nbdcopy nbdinfo nbddump nbddiscard nbdzero nbdfuse nbdsharp-server; do
  echo "pack.sh: tools/$tool (every platform, ReadyToRun, and portable; Native AOT: ${AOT[*]:-none})" >&2
  pack "tools/$tool" "${round[@]}"
  for rid in "${AOT[@]}"; do
    echo "pack.sh: tools/$tool ($rid, Native AOT)" >&2
    pack "tools/$tool" -r "$rid" -p:PublishAot=true -p:ToolRids="$rid" -p:RuntimeIdentifiers="$rid"
  done
done
echo "pack.sh: packages in $OUT" >&2
