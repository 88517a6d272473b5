#!/usr/bin/env bash
# compare-copy.sh - libnbd's nbdcopy (C) and NbdSharp's nbdcopy (C#, Native AOT) side by side, on the same nbdkit
# servers, in one run, interleaved A B A B, reporting median throughput, the NbdSharp/libnbd ratio and peak RSS.
#
# Usage: benchmarks/compare-copy.sh [--reps N] [--size SIZE] [--only REGEX] [--before REV]
#   --reps N      repetitions of every row per tool (default 5)
#   --size SIZE   size of the source exports (default 2G)
#   --only REGEX  run only the rows whose label matches (bash regex)
#   --before REV  also build nbdcopy from git revision REV (a worktree) and run it in the same interleaving,
#                 adding a column and the now/before ratio
#
# Rows: nbdkit pattern (dense data) and sparse-random (22 % data) into nbdkit null (NBD), into null: (discarded in
# the client), into nbdkit memory (real writes), into a local file on tmpfs; a tmpfs file into nbdkit null; each
# with the default connections (multi-conn: min(4, nproc)) and with -C 1. Throughput is the source's logical size
# over the wall time of the whole process (start, handshake, copy, shutdown). Servers listen on Unix sockets in a
# private folder under /dev/shm and are killed on exit.
# Needs: nbdkit, libnbd-bin (nbdcopy), dotnet, GNU time (/usr/bin/time) for peak RSS.
set -euo pipefail
export LC_ALL=C
REPS=5 SIZE=2G ONLY="" BEFORE=""
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --before) BEFORE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-copy.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
T=$(mktemp -d "$base/nbdsharp-copy.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
  [ -z "$BEFORE" ] || git -C "$ROOT" worktree prune
}
trap cleanup EXIT

echo "building nbdcopy (Native AOT)..." >&2
dotnet publish "$ROOT/tools/nbdcopy" -c Release -r linux-x64 -p:PublishAot=true -o "$T/aot" -nologo -v q >/dev/null
A=/usr/bin/nbdcopy
B="$T/aot/nbdcopy"
C=""
if [ -n "$BEFORE" ]; then
  echo "building nbdcopy of $BEFORE (Native AOT)..." >&2
  git -C "$ROOT" worktree add --detach -f "$T/before-src" "$BEFORE" >/dev/null 2>&1
  dotnet publish "$T/before-src/tools/nbdcopy" -c Release -r linux-x64 -p:PublishAot=true -o "$T/before-aot" -nologo -v q >/dev/null
  C="$T/before-aot/nbdcopy"
fi
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "compare-copy.sh: needs GNU time (apt-get install time)" >&2; exit 2; }

serve() { # serve NAME nbdkit-args...
  local name=$1; shift
  nbdkit -f --exit-with-parent -U "$T/$name.sock" "$@" &
  PIDS+=($!)
  for _ in $(seq 200); do [ -S "$T/$name.sock" ] && break; sleep 0.05; done
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

serve pat pattern "$SIZE"
serve sparse sparse-random "$SIZE"
serve null null "$SIZE"
serve mem memory "$SIZE"
echo "making a $SIZE source file on $base..." >&2
"$A" "$(uri pat)" "$T/src.img"
bytes=$(stat -c %s "$T/src.img")

# one TOOL ARGS... -> "MiB/s peakKiB" for one run (the destination file, if any, is removed afterwards)
one() {
  if ! "$TIME" -f '%e %M' -o "$T/time" "$@" 2>"$T/err" >/dev/null; then
    echo "compare-copy.sh: failed: $* : $(cat "$T/err")" >&2
    exit 1
  fi
  read -r secs rss < "$T/time"
  rm -f "$T/dst.img"
  awk -v b="$bytes" -v s="$secs" -v r="$rss" 'BEGIN { if (s < 0.005) s = 0.005; printf "%.0f %d\n", b / 1048576 / s, r }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ -n "$BEFORE" ]; then
  printf '%-44s %12s %12s %12s %7s %7s %11s %11s\n' "row (MiB/s, median of $REPS)" "libnbd" "before" "NbdSharp" "ratio" "/before" "RSS libnbd" "RSS ours"
else
  printf '%-44s %12s %12s %7s %11s %11s\n' "row (MiB/s, median of $REPS)" "libnbd" "NbdSharp" "ratio" "RSS libnbd" "RSS ours"
fi
row() { # row LABEL ARGS... (SOURCE DESTINATION and options; the tools are prepended)
  local label=$1; shift
  if [ -n "$ONLY" ] && ! [[ $label =~ $ONLY ]]; then return; fi
  local ra=() rb=() rc=() ma=0 mb=0 r m
  for _ in $(seq "$REPS"); do
    read -r r m < <(one "$A" "$@"); ra+=("$r"); [ "$m" -gt "$ma" ] && ma=$m
    if [ -n "$BEFORE" ]; then read -r r m < <(one "$C" "$@"); rc+=("$r"); fi
    read -r r m < <(one "$B" "$@"); rb+=("$r"); [ "$m" -gt "$mb" ] && mb=$m
  done
  local a b c
  a=$(printf '%s\n' "${ra[@]}" | median)
  b=$(printf '%s\n' "${rb[@]}" | median)
  if [ -n "$BEFORE" ]; then
    c=$(printf '%s\n' "${rc[@]}" | median)
    printf '%-44s %12s %12s %12s %6.2fx %6.2fx %8d MB %8d MB\n' "$label" "$a" "$c" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')" \
      "$(awk -v c="$c" -v b="$b" 'BEGIN { print b / c }')" $((ma / 1024)) $((mb / 1024))
    echo "  $label: libnbd ${ra[*]} / before ${rc[*]} / now ${rb[*]}" >&2
  else
    printf '%-44s %12s %12s %6.2fx %8d MB %8d MB\n' "$label" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b / a }')" \
      $((ma / 1024)) $((mb / 1024))
  fi
}

row "pattern -> nbd null"            "$(uri pat)" "$(uri null)"
row "pattern -> nbd null, -C 1"      -C 1 "$(uri pat)" "$(uri null)"
row "pattern -> null:"               "$(uri pat)" null:
row "pattern -> nbd memory"          "$(uri pat)" "$(uri mem)"
row "pattern -> nbd memory, -C 1"    -C 1 "$(uri pat)" "$(uri mem)"
row "pattern -> file (tmpfs)"        "$(uri pat)" "$T/dst.img"
row "sparse-random -> nbd null"      "$(uri sparse)" "$(uri null)"
row "sparse-random -> nbd memory"    "$(uri sparse)" "$(uri mem)"
row "sparse-random -> file (tmpfs)"  "$(uri sparse)" "$T/dst.img"
row "file (tmpfs) -> nbd null"       "$T/src.img" "$(uri null)"
row "file (tmpfs) -> nbd null, -C 1" -C 1 "$T/src.img" "$(uri null)"
row "pattern -> nbd null, --synchronous" --synchronous "$(uri pat)" "$(uri null)"
