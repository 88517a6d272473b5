#!/usr/bin/env bash
# compare-copy.sh - libnbd's nbdcopy (Debian's 1.14 and 1.22 built by ../shared/bench/build-libnbd.sh) and NbdSharp's
# nbdcopy (the JIT build `dotnet build` gives, the tool `dotnet tool install` gives from the packages scripts/pack.sh
# makes, whose linux-x64 package is Native AOT, and Native AOT published directly) side by side, on the same nbdkit servers, in one run,
# interleaved, reporting per row the median throughput, the median client CPU (user + system time of the copying
# process, from wait4(2) by benchmarks/rusage.c, in microseconds: GNU time's hundredths are coarse against a sparse
# copy's 0.2 s) and the peak RSS of each, and NbdSharp's ratios against libnbd 1.22.
#
# Usage: benchmarks/compare-copy.sh [--reps N] [--size SIZE] [--only REGEX] [--tools LIST] [--before REV]
#   --reps N      repetitions of every row per tool (default 5)
#   --size SIZE   size of the source exports (default 4G)
#   --only REGEX  run only the rows whose label matches (bash regex)
#   --tools LIST  comma-separated subset of 1.14,1.22,jit,tool,aot,before (default: all that exist)
#   --before REV  also build nbdcopy from git revision REV (a worktree, Native AOT) as the tool "before"
#
# Rows: nbdkit pattern (dense data) and sparse-random (25 % data) into nbdkit null (NBD -> NBD), into null: (discarded
# in the client), into nbdkit memory (real writes), into a file on tmpfs; a tmpfs file into nbdkit null; some with
# -C 1. Throughput is the source's logical size over the wall time of the whole process (start, handshake, copy,
# shutdown); CPU is the process's user + system seconds per GiB copied. Ratios: speed = ours / libnbd 1.22 (above
# 1 ours is faster), CPU = ours / libnbd 1.22 (below 1 ours spends less). Servers listen on Unix sockets in a private
# folder under /dev/shm and are killed on exit. Needs: nbdkit, libnbd-bin, dotnet, gcc; libnbd 1.22 is built
# into ~/.cache/libnbd-1.22 when missing (about 3 minutes).
set -euo pipefail
export LC_ALL=C
REPS=5 SIZE=4G ONLY="" TOOLS="" BEFORE=""
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --before) BEFORE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-copy.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
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
gcc -O2 -Wall -o "$T/rusage" "$HERE/rusage.c" || { echo "compare-copy.sh: needs gcc (for benchmarks/rusage.c)" >&2; exit 2; }

LIBNBD122=${XDG_CACHE_HOME:-$HOME/.cache}/libnbd-1.22
if [ ! -x "$LIBNBD122/bin/nbdcopy" ] && [ -x "$SHARED/bench/build-libnbd.sh" ]; then
  echo "building libnbd 1.22..." >&2
  "$SHARED/bench/build-libnbd.sh" "$LIBNBD122" >&2
fi
echo "building nbdcopy (JIT, as dotnet build gives it; the dotnet tool package; Native AOT)..." >&2
dotnet build "$ROOT/tools/nbdcopy" -c Release -nologo -v q -clp:ErrorsOnly >/dev/null
if [ -z "$TOOLS" ] || [[ ,$TOOLS, == *,tool,* ]]; then
  # As scripts/pack.sh packs it (the linux-x64 package Native AOT, a portable one beside it), installed with a
  # private NuGet cache so that no package of an earlier pack stands in for it.
  dotnet pack "$ROOT/tools/nbdcopy" -c Release -nologo -v q -o "$T/packages" -p:ToolRids='"linux-x64;any"' >/dev/null
  dotnet pack "$ROOT/tools/nbdcopy" -c Release -nologo -v q -o "$T/packages" -r linux-x64 -p:PublishAot=true \
    -p:ToolRids=linux-x64 -p:RuntimeIdentifiers=linux-x64 >/dev/null
  version=$(basename "$(ls "$T"/packages/NbdSharp.nbdcopy.linux-x64.*.nupkg)" .nupkg | sed 's/^NbdSharp\.nbdcopy\.linux-x64\.//')
  NUGET_PACKAGES="$T/nuget" dotnet tool install --tool-path "$T/tool" --add-source "$T/packages" NbdSharp.nbdcopy \
    --version "$version" >/dev/null
  # The build above ran while packing: build again as a plain build.
  dotnet build "$ROOT/tools/nbdcopy" -c Release -nologo -v q -clp:ErrorsOnly >/dev/null
fi
dotnet publish "$ROOT/tools/nbdcopy" -c Release -r linux-x64 -p:PublishAot=true -o "$T/aot" -nologo -v q >/dev/null

NAMES=() CMDS=()
add() { # add NAME COMMAND... (a tool, unless --tools leaves it out)
  local name=$1; shift
  if [ -n "$TOOLS" ] && ! [[ ,$TOOLS, == *,$name,* ]]; then return; fi
  NAMES+=("$name"); CMDS+=("$*")
}
add 1.14 /usr/bin/nbdcopy
[ -x "$LIBNBD122/bin/nbdcopy" ] && add 1.22 env LD_LIBRARY_PATH="$LIBNBD122/lib" "$LIBNBD122/bin/nbdcopy"
add jit "$ROOT/artifacts/bin/nbdcopy/release/nbdcopy"
[ -x "$T/tool/nbdcopy" ] && add tool "$T/tool/nbdcopy"
add aot "$T/aot/nbdcopy"
if [ -n "$BEFORE" ]; then
  echo "building nbdcopy of $BEFORE (Native AOT)..." >&2
  git -C "$ROOT" worktree add --detach -f "$T/before-src" "$BEFORE" >/dev/null 2>&1
  dotnet publish "$T/before-src/tools/nbdcopy" -c Release -r linux-x64 -p:PublishAot=true -o "$T/before-aot" -nologo -v q >/dev/null
  add before "$T/before-aot/nbdcopy"
fi
index() { local i; for i in "${!NAMES[@]}"; do [ "${NAMES[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }
REF=$(index 1.22); [ "$REF" -ge 0 ] || REF=$(index 1.14)

serve() { # serve NAME nbdkit-args...
  local name=$1; shift
  nbdkit -f --exit-with-parent -U "$T/$name.sock" "$@" &
  PIDS+=($!)
  for _ in $(seq 200); do [ -S "$T/$name.sock" ] && break; sleep 0.05; done
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

serve pat pattern "$SIZE"
serve sparse sparse-random "$SIZE" percent=25
serve null null "$SIZE"
serve mem memory "$SIZE"
echo "making a $SIZE source file on $base..." >&2
/usr/bin/nbdcopy "$(uri pat)" "$T/src.img"
bytes=$(stat -c %s "$T/src.img")

# one COMMAND... -> "MiB/s cpu-s-per-GiB peak-KiB" for one run (a destination file is removed afterwards)
one() {
  if ! "$T/rusage" "$T/time" "$@" 2>"$T/err" >/dev/null; then
    echo "compare-copy.sh: failed: $* : $(cat "$T/err")" >&2
    exit 1
  fi
  read -r secs user sys rss < "$T/time"
  rm -f "$T/dst.img"
  awk -v b="$bytes" -v s="$secs" -v u="$user" -v y="$sys" -v r="$rss" \
    'BEGIN { if (s < 0.005) s = 0.005; printf "%.0f %.3f %d\n", b / 1048576 / s, (u + y) / (b / 1073741824), r }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

header="| row |"
rule="|---|"
for n in "${NAMES[@]}"; do header+=" $n MiB/s | $n CPU s/GiB |"; rule+="---:|---:|"; done
for n in jit tool aot before; do
  [ "$(index "$n")" -ge 0 ] && [ "$REF" -ge 0 ] && { header+=" $n speed | $n CPU |"; rule+="---:|---:|"; }
done
header+=" peak RSS MB ($(IFS=/; echo "${NAMES[*]}")) |"; rule+="---|"
echo "ratios against libnbd ${NAMES[$REF]}; medians of $REPS; $SIZE sources" >&2
echo "$header"
echo "$rule"

row() { # row LABEL ARGS... (SOURCE DESTINATION and options; each tool is prepended)
  local label=$1; shift
  if [ -n "$ONLY" ] && ! [[ $label =~ $ONLY ]]; then return; fi
  local -a speeds cpus peaks
  local i r c m
  for i in "${!NAMES[@]}"; do speeds[$i]=""; cpus[$i]=""; peaks[$i]=0; done
  for _ in $(seq "$REPS"); do
    for i in "${!NAMES[@]}"; do
      # shellcheck disable=SC2086
      read -r r c m < <(one ${CMDS[$i]} "$@")
      speeds[$i]+="$r "; cpus[$i]+="$c "
      [ "$m" -gt "${peaks[$i]}" ] && peaks[$i]=$m
    done
  done
  local line="| $label |" ms=() mc=() rss=()
  for i in "${!NAMES[@]}"; do
    ms[$i]=$(tr ' ' '\n' <<<"${speeds[$i]}" | sed '/^$/d' | median)
    mc[$i]=$(tr ' ' '\n' <<<"${cpus[$i]}" | sed '/^$/d' | median)
    line+=" ${ms[$i]} | ${mc[$i]} |"
    rss+=("$((peaks[$i] / 1024))")
    echo "  $label ${NAMES[$i]}: MiB/s ${speeds[$i]}/ CPU s/GiB ${cpus[$i]}" >&2
  done
  for n in jit tool aot before; do
    i=$(index "$n")
    [ "$i" -ge 0 ] && [ "$REF" -ge 0 ] || continue
    line+=" $(awk -v a="${ms[$REF]}" -v b="${ms[$i]}" 'BEGIN { printf "%.2fx", b / a }') |"
    line+=" $(awk -v a="${mc[$REF]}" -v b="${mc[$i]}" 'BEGIN { printf "%.2fx", b / a }') |"
  done
  line+=" $(IFS=/; echo "${rss[*]}") |"
  echo "$line"
}

row "pattern -> nbd null"            "$(uri pat)" "$(uri null)"
row "pattern -> nbd null, -C 1"      -C 1 "$(uri pat)" "$(uri null)"
row "pattern -> null:"               "$(uri pat)" null:
row "pattern -> nbd memory"          "$(uri pat)" "$(uri mem)"
row "pattern -> file (tmpfs)"        "$(uri pat)" "$T/dst.img"
row "sparse-random -> null:"         "$(uri sparse)" null:
row "sparse-random -> nbd null"      "$(uri sparse)" "$(uri null)"
row "sparse-random -> file (tmpfs)"  "$(uri sparse)" "$T/dst.img"
row "file (tmpfs) -> nbd null"       "$T/src.img" "$(uri null)"
row "file (tmpfs) -> nbd null, -C 1" -C 1 "$T/src.img" "$(uri null)"
row "pattern -> nbd null, --synchronous" --synchronous "$(uri pat)" "$(uri null)"
