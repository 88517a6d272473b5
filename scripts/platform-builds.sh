#!/usr/bin/env bash
# platform-builds.sh - builds the library, the server and every tool for other platforms than this one, with warnings
# as errors (the platform analyzer CA1416 included): what `dotnet add package` and `dotnet tool install` give macOS
# and Windows users must at least compile for them. Nothing is run: the tests run here, on Linux, and the portable data
# path those platforms use is tested here too (NBDSHARP_PORTABLE_SOCKETS=1, see test.sh).
#
# Usage: scripts/platform-builds.sh [RID...]     (default: win-x64 osx-arm64)
# Prints "platform builds: N passed, N failed" last; each project and RID is one check.
set -uo pipefail
cd "$(dirname "$0")/.."
rids=("$@")
[ ${#rids[@]} -gt 0 ] || rids=(win-x64 osx-arm64)
projects=(src/NbdSharp src/NbdSharp.Server tools/nbdcopy tools/nbdinfo tools/nbddump tools/nbddiscard tools/nbdzero
  tools/nbdsh tools/nbdfuse tools/nbdsharp-server)
passed=0 failed=0
for rid in "${rids[@]}"; do
  for project in "${projects[@]}"; do
    if dotnet build "$project" -c Release -r "$rid" -nologo -v q -clp:ErrorsOnly -p:TreatWarningsAsErrors=true >/tmp/platform-build.$$ 2>&1; then
      passed=$((passed + 1))
    else
      echo "platform-builds.sh: $project does not build for $rid:" >&2
      grep -E 'error|warning' /tmp/platform-build.$$ | sed 's/^/  /' | head -20 >&2
      failed=$((failed + 1))
    fi
  done
done
rm -f /tmp/platform-build.$$
echo "platform builds: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
