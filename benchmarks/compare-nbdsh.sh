#!/usr/bin/env bash
# compare-nbdsh.sh - libnbd's nbdsh (Python, Debian's python3-libnbd) and NbdSharp's nbdsh (C# scripting) side by
# side on the same nbdkit server, in one run, interleaved, reporting the median wall time, the median CPU time
# (user + system) of the client and the NbdSharp/libnbd ratio of each.
#
# Usage: benchmarks/compare-nbdsh.sh [--reps N]
#   --reps N   runs of every row per shell (default 7)
#
# Shells: libnbd's nbdsh (/usr/bin/python3 -m nbd, as Debian's nbdsh script runs it), NbdSharp's nbdsh as
# `dotnet build` and `dotnet tool install` give it (JIT), and published ReadyToRun (framework-dependent); each of
# ours twice: a first run (an empty cache of compiled code: Roslyn compiles) and a run of code an earlier run
# compiled (the cache in $XDG_CACHE_HOME/nbdsh).
# Rows: one call (-u URI -c size: start, compile, connect, print, exit), and 20000 reads of 4 KiB issued one by one
# from a loop in the shell's language (the compiled C# against Python's interpreter, per call).
# nbdkit memory 1G listens on a Unix socket in a private folder and is killed on exit.
# Needs: nbdkit, python3-libnbd, dotnet, GNU time (/usr/bin/time).
set -euo pipefail
export LC_ALL=C
REPS=7
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-nbdsh.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$(mktemp -d /tmp/nbdsharp-nbdsh.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "compare-nbdsh.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "compare-nbdsh.sh: needs python3-libnbd" >&2; exit 2; }

echo "building nbdsh (JIT, and ReadyToRun)..." >&2
dotnet build "$ROOT/tools/nbdsh" -c Release -nologo -v q -clp:ErrorsOnly >/dev/null
dotnet publish "$ROOT/tools/nbdsh" -c Release -r linux-x64 --self-contained false -p:PublishReadyToRun=true \
  -o "$T/r2r" -nologo -v q >/dev/null
JIT="$ROOT/artifacts/bin/nbdsh/release/nbdsh"
R2R="$T/r2r/nbdsh"

nbdkit -f --exit-with-parent -U "$T/mem.sock" memory 1G &
PIDS+=($!)
for _ in $(seq 200); do [ -S "$T/mem.sock" ] && break; sleep 0.05; done
URI="nbd+unix:///?socket=$T/mem.sock"

# one EXPECTED TOOL ARGS... -> "wall cpu" in seconds for one run; the output must be EXPECTED
one() {
  local expected=$1; shift
  if ! "$TIME" -f '%e %U %S' -o "$T/time" "$@" >"$T/out" 2>"$T/err"; then
    echo "compare-nbdsh.sh: failed: $* : $(cat "$T/err")" >&2
    exit 1
  fi
  if [ "$(cat "$T/out")" != "$expected" ]; then
    echo "compare-nbdsh.sh: $* printed '$(cat "$T/out")', not '$expected'" >&2
    exit 1
  fi
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$T/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

PY_SIZE="print(h.get_size())"
CS_SIZE="h.GetSize()"
PY_READS="for i in range(20000): h.pread(4096, i * 4096)
print(20000)"
CS_READS="var b = new byte[4096]; for (int i = 0; i < 20000; i++) h.Pread(b, (ulong)i * 4096);
20000"

# the shells, by column: NAME|COMMAND (a first run compiles into an empty cache; later runs share a warm one)
mkdir -p "$T/warm"
row() { # row LABEL EXPECTED PYCODE CSCODE
  local label=$1 expected=$2 py=$3 cs=$4 n
  for n in py jit-cold jit-warm r2r-cold r2r-warm; do : >"$T/t-$n"; done
  XDG_CACHE_HOME="$T/warm" "$JIT" -u "$URI" -c "$cs" >/dev/null
  XDG_CACHE_HOME="$T/warm" "$R2R" -u "$URI" -c "$cs" >/dev/null
  for i in $(seq "$REPS"); do
    one "$expected" /usr/bin/python3 -m nbd -u "$URI" -c "$py" >>"$T/t-py"
    one "$expected" env XDG_CACHE_HOME="$T/cold-j$i" "$JIT" -u "$URI" -c "$cs" >>"$T/t-jit-cold"
    one "$expected" env XDG_CACHE_HOME="$T/warm" "$JIT" -u "$URI" -c "$cs" >>"$T/t-jit-warm"
    one "$expected" env XDG_CACHE_HOME="$T/cold-r$i" "$R2R" -u "$URI" -c "$cs" >>"$T/t-r2r-cold"
    one "$expected" env XDG_CACHE_HOME="$T/warm" "$R2R" -u "$URI" -c "$cs" >>"$T/t-r2r-warm"
  done
  local cells="" base="" w c
  for n in py jit-cold jit-warm r2r-cold r2r-warm; do
    w=$(cut -d' ' -f1 "$T/t-$n" | median); c=$(cut -d' ' -f2 "$T/t-$n" | median)
    [ -n "$base" ] || base=$w
    cells+=$(awk -v w="$w" -v c="$c" -v b="$base" -v n="$n" 'BEGIN {
      if (n == "py") printf " %.2f s (%.2f s) |", w, c; else printf " %.2f s (%.2f s) %.2fx |", w, c, w / b }')
  done
  echo "| $label |$cells"
}

echo "nbdsh, median of $REPS runs each: wall (client CPU) and the wall ratio NbdSharp/libnbd (below 1 = faster)."
echo "First run: an empty cache, the code is compiled (and stored); cached: the same code compiled by an earlier run."
echo
echo "| row | libnbd 1.14 nbdsh (Python) | JIT, first run | JIT, cached | ReadyToRun, first run | ReadyToRun, cached |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row "-u URI -c size" 1073741824 "$PY_SIZE" "$CS_SIZE"
row "20000 x 4 KiB reads in a loop" 20000 "$PY_READS" "$CS_READS"
