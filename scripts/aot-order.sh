#!/usr/bin/env bash
# aot-order.sh - makes tools/nbdcopy/nbdcopy.order, the managed methods nbdcopy's usual runs call, which its Native
# AOT build lays out first (IlcOrderFile, tools/Directory.Build.props).
#
# Why: Linux maps 64 KiB of a program around every page that faults (fault-around), so a start-up that calls a few
# hundred methods scattered over 5 MB of code maps most of it. Grouped, the same calls map a few hundred KB:
# `nbdcopy --version` peaks at 7.2 MB of RSS instead of 8.8 MB, and a copy 1.4 MB lower (docs/benchmarks.md).
#
# How: publishes nbdcopy with Native AOT, starts nbdkit servers (pattern, memory, sparse-random; 8 MiB each) in a
# private folder, runs nbdcopy's common cases under valgrind's callgrind (NBD to NBD, to null:, to and from a file,
# one connection, --synchronous, sparse sources, progress, an error), maps every executed address onto the symbols
# of the binary's debug file, and writes the managed ones, in the order the compiler gave them, one per line (ILC's
# order files hold raw symbol names only). Symbols the compiler no longer makes are ignored by it, so a stale file
# loses its effect gradually and never breaks the build; run this again after large changes to nbdcopy or the library.
#
# Usage: scripts/aot-order.sh [--out FILE]
# Needs: dotnet, nbdkit, valgrind, nm and readelf (binutils), python3. About two minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/tools/nbdcopy/nbdcopy.order
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "aot-order.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
for tool in dotnet nbdkit valgrind nm readelf python3; do
  command -v "$tool" >/dev/null || { echo "aot-order.sh: $tool is needed" >&2; exit 1; }
done
case $(uname -m) in
  x86_64) RID=linux-x64 ;;
  aarch64) RID=linux-arm64 ;;
  *) echo "aot-order.sh: no Native AOT build for $(uname -m)" >&2; exit 1 ;;
esac

T=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

echo "aot-order.sh: publishing nbdcopy ($RID, Native AOT)..." >&2
dotnet publish "$ROOT/tools/nbdcopy" -c Release -r "$RID" -p:PublishAot=true -o "$T/publish" -nologo -v q -clp:ErrorsOnly >&2
# valgrind gives up on the separate debug file, so it runs a copy of the binary without it beside it.
mkdir "$T/bin"
cp "$T/publish/nbdcopy" "$T/bin/nbdcopy"

serve() {
  local name=$1; shift
  nbdkit -f -U "$T/$name.sock" "$@" &
  PIDS+=($!)
}
serve src pattern 8M
serve dst memory 8M
serve sparse sparse-random 8M
serve big pattern 64M
for name in src dst sparse big; do
  for _ in $(seq 100); do [ -S "$T/$name.sock" ] && break; sleep 0.05; done
  [ -S "$T/$name.sock" ] || { echo "aot-order.sh: nbdkit ($name) did not start" >&2; exit 1; }
done
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

runs=0
trace() {
  runs=$((runs + 1))
  valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$T/run$runs.callgrind" \
    "$T/bin/nbdcopy" "$@" >/dev/null 2>"$T/run$runs.err" || true
}
echo "aot-order.sh: tracing nbdcopy's runs under callgrind..." >&2
trace --version
trace --help
trace "$(uri src)" "$(uri dst)"
trace "$(uri src)" null:
trace "$(uri src)" "$T/file.img"
trace "$T/file.img" "$(uri dst)"
trace -C 1 "$(uri src)" "$(uri dst)"
trace --synchronous "$(uri src)" "$(uri dst)"
trace "$(uri sparse)" null:
trace "$(uri sparse)" "$(uri dst)"
trace -p "$(uri src)" null:
trace "$(uri src)" -
trace "$(uri big)" "$(uri dst)"   # fails: the destination is smaller

nm -n --defined-only "$T/publish/nbdcopy.dbg" > "$T/symbols"
readelf -SW "$T/publish/nbdcopy" > "$T/sections"
python3 - "$T" "$OUT" <<'PY'
import bisect, glob, re, sys
folder, out = sys.argv[1], sys.argv[2]

# The sections that hold managed code.
managed = []
for line in open(folder + '/sections'):
    m = re.search(r'\]\s+(__managedcode|__unbox)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)', line)
    if m:
        start = int(m.group(2), 16)
        managed.append((start, start + int(m.group(3), 16)))
if not managed:
    sys.exit('aot-order.sh: no __managedcode section in the binary')

symbols = []
for line in open(folder + '/symbols'):
    parts = line.split(None, 2)
    if len(parts) == 3:
        symbols.append((int(parts[0], 16), parts[2].strip()))
symbols.sort()
starts = [s[0] for s in symbols]

# Callgrind names the binary's .text; the rest of its code (the managed methods) comes as an unnamed object at
# valgrind's load address for position-independent programs.
LOAD = 0x108000
executed = set()
for path in sorted(glob.glob(folder + '/run*.callgrind')):
    names, current, last = {}, None, 0
    for line in open(path, errors='replace'):
        s = line.strip()
        m = re.match(r'(c?ob)=\((\d+)\)(?: (.*))?', s)
        if m:
            if m.group(3):
                names[m.group(2)] = m.group(3)
            if m.group(1) == 'ob':
                current = names.get(m.group(2))
            continue
        if not s or s.startswith('calls=') or not (s[0].isdigit() or s[0] in '+-*'):
            continue
        token = s.split()[0]
        if token.startswith('0x'):
            address = int(token, 16)
        elif token[0] == '+':
            address = last + int(token[1:], 0)
        elif token[0] == '-':
            address = last - int(token[1:], 0)
        elif token == '*':
            address = last
        else:
            continue
        last = address
        if current == '???':
            executed.add(address - LOAD)
        elif current and current.endswith('/nbdcopy'):
            executed.add(address)

# Every name at the start of a called method (the compiler gives some methods more than one).
called = {}
for address in executed:
    if not any(start <= address < end for start, end in managed):
        continue
    i = bisect.bisect_right(starts, address) - 1
    if i < 0:
        continue
    start = symbols[i][0]
    while i >= 0 and symbols[i][0] == start:
        called.setdefault(symbols[i][1], start)
        i -= 1
entry = next((a for a, n in symbols if n == '__managed__Main'), None)
if entry is None or entry not in executed:
    sys.exit('aot-order.sh: the traces do not show the managed entry point; valgrind\'s load address is not 0x%x here' % LOAD)
order = sorted(called, key=lambda name: (called[name], name))
with open(out, 'w') as f:
    f.write('\n'.join(order) + '\n')
print('aot-order.sh: %d methods called, written to %s' % (len(order), out), file=sys.stderr)
PY
