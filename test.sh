#!/usr/bin/env bash
# The whole test suite: installs the real servers the tests talk to (if missing), builds everything with warnings
# as errors, checks the library publishes with Native AOT without a warning, runs every test project against real
# nbdkit, qemu-nbd and nbd-server processes, runs the unit and interop tiers again over the portable data path,
# builds the library and the tools for win-x64 and osx-arm64 (scripts/platform-builds.sh), packs every package
# and checks them as a user would (scripts/package-tests.sh), runs each fuzzing target and canary for a minute,
# and ends with:
#   tests: N passed, N failed, N skipped
# Tests that need a server fail (rather than skip) when CI is set.
set -uo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

summary() { echo "tests: $1 passed, $2 failed, $3 skipped"; }
# results LOG: "passed failed skipped projects" summed over dotnet test's lines
#   "Passed!  - Failed: F, Passed: P, Skipped: S, Total: T, ..." (one per test project)
results() {
  grep -E '^(Passed|Failed)!' "$1" |
    sed -E 's/.*Failed: *([0-9]+), Passed: *([0-9]+), Skipped: *([0-9]+).*/\2 \1 \3/' |
    awk '{p+=$1; f+=$2; s+=$3; n++} END {print p+0, f+0, s+0, n+0}'
}

scripts/install-peers.sh || { echo "test.sh: could not install the Debian servers" >&2; summary 0 1 0; exit 1; }

if ! dotnet build NbdSharp.slnx -c Release -nologo -v q -clp:ErrorsOnly; then
  echo "test.sh: build failed" >&2
  summary 0 1 0
  exit 1
fi

# Native AOT keeps the library honest about trimming and reflection: any IL warning fails the build.
# nbd-iops covers the library, nbdinfo the tools' shared command-line layer, nbdfuse the native FUSE binding,
# nbdsharp-server the server library.
for tool in nbd-iops nbdinfo nbdfuse nbdsharp-server; do
  if ! dotnet publish "tools/$tool" -c Release -r linux-x64 -p:PublishAot=true -nologo -v q -clp:ErrorsOnly \
       -o "artifacts/aot-check/$tool" >/dev/null; then
    echo "test.sh: Native AOT publish of $tool failed" >&2
    summary 0 1 0
    exit 1
  fi
done

log=$(mktemp)
dotnet test NbdSharp.slnx -c Release --no-build --blame-hang-timeout 5m 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

projects=$(find tests -name '*.csproj' -exec grep -l 'Microsoft.NET.Test.Sdk' {} + | wc -l)
read -r passed failed skipped reported < <(results "$log")
rm -f "$log"
if [ "$reported" -lt "$projects" ]; then
  echo "test.sh: only $reported of $projects test projects reported results (a test host crashed or hung)" >&2
  failed=$((failed + projects - reported))
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
fi

# The unit and interop tiers again over the portable data path (System.Net.Sockets only, no libc: what macOS and
# Windows run), chosen on Linux by NBDSHARP_PORTABLE_SOCKETS=1 (nbdcopy's event loop follows it too); each tier is
# counted on a line of its own and in the total.
for tier in NbdSharp.Tests NbdSharp.InteropTests; do
  plog=$(mktemp)
  NBDSHARP_PORTABLE_SOCKETS=1 dotnet test "tests/$tier" -c Release --no-build --blame-hang-timeout 5m 2>&1 | tee "$plog"
  pstatus=${PIPESTATUS[0]}
  read -r portable_passed portable_failed portable_skipped preported < <(results "$plog")
  rm -f "$plog"
  if [ "$preported" -eq 0 ] || { [ "$pstatus" -ne 0 ] && [ "$portable_failed" -eq 0 ]; }; then
    echo "test.sh: $tier over the portable data path did not report cleanly" >&2
    portable_failed=$((portable_failed + 1))
  fi
  echo "portable data path, $tier: $portable_passed passed, $portable_failed failed, $portable_skipped skipped"
  passed=$((passed + portable_passed))
  failed=$((failed + portable_failed))
  skipped=$((skipped + portable_skipped))
done

# The library, the server and the tools must build for macOS and Windows with warnings as errors (the platform
# analyzer CA1416 included: every call into libc is marked Linux's and must sit behind a platform check); each
# project and platform counts as one test.
plat=$(mktemp)
scripts/platform-builds.sh 2>&1 | tee "$plat"
read -r plat_passed plat_failed < <(sed -nE 's/^platform builds: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$plat" | tail -1)
rm -f "$plat"
if [ -z "${plat_passed:-}" ]; then
  echo "test.sh: the platform builds did not report" >&2
  plat_passed=0 plat_failed=1
fi
passed=$((passed + plat_passed))
failed=$((failed + plat_failed))

# The packages as a user meets them: packed into a private folder, a new console project built against them alone,
# every tool installed with dotnet tool install and run against a server (scripts/package-tests.sh; each check is
# one test). CI packs the per-platform tool packages for linux-x64 and linux-arm64 (both Native AOT) and the portable
# one only.
pkglog=$(mktemp)
PACK_RIDS="${PACK_RIDS:-linux-x64;linux-arm64;any}" scripts/package-tests.sh 2>&1 | tee "$pkglog"
read -r pkg_passed pkg_failed < <(sed -nE 's/^packages: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$pkglog" | tail -1)
rm -f "$pkglog"
if [ -z "${pkg_passed:-}" ]; then
  echo "test.sh: the package tests did not report" >&2
  pkg_passed=0 pkg_failed=1
fi
passed=$((passed + pkg_passed))
failed=$((failed + pkg_failed))

# A short AFL++ run of every fuzzing target (nothing may be found) and of every planted canary (it must be
# found); each counts as one test. Long runs: docs/hardening.md, "Fuzzing".
fuzzlog=$(mktemp)
fuzz/fuzz.sh smoke "${FUZZ_SECONDS:-60}" 2>&1 | tee "$fuzzlog"
read -r fuzz_passed fuzz_failed < <(sed -nE 's/^fuzz: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$fuzzlog" | tail -1)
rm -f "$fuzzlog"
if [ -z "${fuzz_passed:-}" ]; then
  echo "test.sh: the fuzzing smoke run did not report" >&2
  fuzz_passed=0 fuzz_failed=1
fi
passed=$((passed + fuzz_passed))
failed=$((failed + fuzz_failed))
summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
