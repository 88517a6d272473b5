#!/usr/bin/env bash
# compare-server.sh - NbdSharp's server (nbdsharp-server, JIT as `dotnet build` gives it, and Native AOT) against
# nbdkit's memory plugin, with the same clients, in one run, interleaved, reporting medians and ours/nbdkit ratios
# (above 1.0x: ours is faster).
#
# Usage: benchmarks/compare-server.sh [--reps N] [--secs S] [--size SIZE] [--only REGEX]
#   --reps N      repetitions of every row per server (default 5)
#   --secs S      duration of one iops repetition (default 3)
#   --size SIZE   size of the memory disks (default 1G)
#   --only REGEX  run only the rows whose label matches (bash regex)
#
# Every server serves `memory SIZE` on a Unix socket in a private temp dir, filled first with nbdkit's pattern.
# Rows: libnbd's nbdcopy (Debian 1.14) from the server to null: and from a file to the server; libnbd's iops.c
# (benchmarks/libnbd-iops) random 4 KiB reads at queue depth 1, 16 and 64; NbdSharp's own nbdcopy (Native AOT)
# from the server to null:. Copies report seconds (lower is better), iops rows IOPS (higher is better).
# Needs: nbdkit, libnbd-bin, libnbd-dev, gcc, dotnet.
set -euo pipefail
export LC_ALL=C
REPS=5 SECS=3 SIZE=1G ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-server.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$(mktemp -d /tmp/nbdsharp-server-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

echo "building iops.c, nbdsharp-server (JIT and Native AOT) and nbdcopy (Native AOT)..." >&2
gcc -O2 -Wall -o "$T/iops" "$HERE/libnbd-iops/iops.c" -lnbd
dotnet build "$ROOT/tools/nbdsharp-server" -c Release -nologo -v q -clp:ErrorsOnly >/dev/null
JIT="$ROOT/artifacts/bin/nbdsharp-server/release/nbdsharp-server"
dotnet publish "$ROOT/tools/nbdsharp-server" -c Release -r linux-x64 -p:PublishAot=true -o "$T/server-aot" -nologo -v q >/dev/null
AOT="$T/server-aot/nbdsharp-server"
dotnet publish "$ROOT/tools/nbdcopy" -c Release -r linux-x64 -p:PublishAot=true -o "$T/nbdcopy-aot" -nologo -v q >/dev/null
OURCOPY="$T/nbdcopy-aot/nbdcopy"

serve() { # serve NAME PROGRAM
  "$2" -f --exit-with-parent -U "$T/$1.sock" memory "$SIZE" &
  PIDS+=($!)
  for _ in $(seq 400); do [ -S "$T/$1.sock" ] && break; sleep 0.05; done
  [ -S "$T/$1.sock" ] || { echo "compare-server.sh: $2 did not start" >&2; exit 1; }
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }
serve nbdkit nbdkit
serve jit "$JIT"
serve aot "$AOT"
SERVERS=(nbdkit jit aot)
echo "filling the disks with nbdkit's pattern, and a $SIZE source file..." >&2
for s in "${SERVERS[@]}"; do nbdcopy -- [ nbdkit pattern "$SIZE" ] "$(uri "$s")"; done
nbdcopy -- [ nbdkit pattern "$SIZE" ] "$T/source.img"

median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN{printf "%.3f\n", e-s}'; }
iops() { "$T/iops" "$@" | tr ' ' '\n' | sed -n 's/^iops=//p'; }

printf '| row | unit | nbdkit memory | nbdsharp-server JIT | nbdsharp-server AOT | JIT / nbdkit | AOT / nbdkit |\n|---|---|---:|---:|---:|---:|---:|\n'
row() { # row LABEL UNIT(seconds|iops) COMMAND... with @URI@ for the server's URI
  local label=$1 unit=$2; shift 2
  if [ -n "$ONLY" ] && ! [[ $label =~ $ONLY ]]; then return 0; fi
  declare -A runs=()
  for _ in $(seq "$REPS"); do
    for s in "${SERVERS[@]}"; do
      local args=() a
      for a in "$@"; do args+=("${a//@URI@/$(uri "$s")}"); done
      if [ "$unit" = seconds ]; then runs[$s]+="$(seconds "${args[@]}") "; else runs[$s]+="$(iops "${args[@]:1}") "; fi
    done
  done
  local k j a
  k=$(tr ' ' '\n' <<<"${runs[nbdkit]}" | grep . | median)
  j=$(tr ' ' '\n' <<<"${runs[jit]}" | grep . | median)
  a=$(tr ' ' '\n' <<<"${runs[aot]}" | grep . | median)
  local rj ra
  if [ "$unit" = seconds ]; then
    rj=$(awk -v k="$k" -v o="$j" 'BEGIN{printf "%.2fx", k/o}'); ra=$(awk -v k="$k" -v o="$a" 'BEGIN{printf "%.2fx", k/o}')
  else
    rj=$(awk -v k="$k" -v o="$j" 'BEGIN{printf "%.2fx", o/k}'); ra=$(awk -v k="$k" -v o="$a" 'BEGIN{printf "%.2fx", o/k}')
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$unit" "$k" "$j" "$a" "$rj" "$ra"
  echo "  $label: nbdkit ${runs[nbdkit]}/ jit ${runs[jit]}/ aot ${runs[aot]}" >&2
}

row "libnbd nbdcopy server -> null:"   seconds nbdcopy @URI@ null:
row "libnbd nbdcopy file -> server"    seconds nbdcopy "$T/source.img" @URI@
row "iops.c 4 KiB random reads QD1"    iops    iops @URI@ read 1 "$SECS"
row "iops.c 4 KiB random reads QD16"   iops    iops @URI@ read 16 "$SECS"
row "iops.c 4 KiB random reads QD64"   iops    iops @URI@ read 64 "$SECS"
row "iops.c 4 KiB random writes QD64"  iops    iops @URI@ write 64 "$SECS"
row "NbdSharp nbdcopy server -> null:" seconds "$OURCOPY" @URI@ null:
