#!/usr/bin/env bash
# compare-fuse.sh - libnbd's nbdfuse (C) and NbdSharp's nbdfuse (C#, Native AOT) side by side on the same nbdkit
# server, in one run, interleaved, with fio through the mount: the median of each row, the NbdSharp/libnbd ratio,
# and the CPU time nbdfuse itself spent per row (user + system, from /proc/PID/stat).
#
# Usage: benchmarks/compare-fuse.sh [--reps N] [--runtime SECONDS] [--size SIZE] [--only REGEX]
#   --reps N           mounts per tool, each running every row once (default 3)
#   --runtime SECONDS  length of each fio row (default 10)
#   --size SIZE        size of the export (default 1G)
#   --only REGEX       run only the rows whose label matches (bash regex)
#
# Rows (fio, O_DIRECT so that the page cache does not answer for the server): sequential read and sequential write
# in 1 MiB blocks (libaio, depth 1), and 4 KiB random reads at depth 16 (libaio). The export is nbdkit memory,
# filled with nbdkit's pattern first so that reads return data. Tools: /usr/bin/nbdfuse (libnbd 1.14.2), libnbd
# 1.22's nbdfuse when ../shared/bench/build-libnbd.sh has built it (~/.cache/libnbd-1.22), and ours.
# Needs: root, /dev/fuse, nbdkit, libnbd-bin, fuse3, fio, python3, dotnet.
set -euo pipefail
export LC_ALL=C
REPS=3 RUNTIME=10 SIZE=1G ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-fuse.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$(mktemp -d /tmp/nbdsharp-fuse.XXXXXX)
PIDS=()
cleanup() {
  for m in "$T"/m-*; do [ -d "$m" ] && { fusermount3 -u -z "$m" 2>/dev/null || true; }; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
for p in fio fusermount3 nbdkit nbdcopy python3; do
  command -v $p >/dev/null || { echo "compare-fuse.sh: needs $p" >&2; exit 2; }
done

echo "building nbdfuse (Native AOT)..." >&2
dotnet publish "$ROOT/tools/nbdfuse" -c Release -r linux-x64 -p:PublishAot=true -o "$T/aot" -nologo -v q >/dev/null
NAMES=(libnbd-1.14 ours)
declare -A TOOL=([libnbd-1.14]=/usr/bin/nbdfuse [ours]="$T/aot/nbdfuse")
declare -A LIBS=([libnbd-1.14]="" [ours]="")
NEW=${XDG_CACHE_HOME:-$HOME/.cache}/libnbd-1.22
if [ -x "$NEW/bin/nbdfuse" ]; then
  NAMES=(libnbd-1.14 libnbd-1.22 ours)
  TOOL[libnbd-1.22]="$NEW/bin/nbdfuse"
  LIBS[libnbd-1.22]="$NEW/lib"
fi

nbdkit -f --exit-with-parent -U "$T/mem.sock" memory "$SIZE" &
PIDS+=($!)
for _ in $(seq 200); do [ -S "$T/mem.sock" ] && break; sleep 0.05; done
URI="nbd+unix:///?socket=$T/mem.sock"
echo "filling the export with nbdkit's pattern..." >&2
nbdcopy -- [ nbdkit pattern "$SIZE" ] "$URI"

ROWS=()
for row in "seq read 1M" "seq write 1M" "rand read 4K QD16"; do
  [[ -z "$ONLY" || "$row" =~ $ONLY ]] && ROWS+=("$row")
done
fio_args() {
  case $1 in
    "seq read 1M") echo "--rw=read --bs=1M --iodepth=1" ;;
    "seq write 1M") echo "--rw=write --bs=1M --iodepth=1" ;;
    "rand read 4K QD16") echo "--rw=randread --bs=4k --iodepth=16" ;;
  esac
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# one NAME: mount with that tool, run every row, unmount; appends "row<TAB>MiB/s<TAB>IOPS<TAB>cpu-seconds" lines
one() {
  local name=$1 mnt="$T/m-$1" pid
  mkdir -p "$mnt"; rm -f "$T/pid"
  LD_LIBRARY_PATH="${LIBS[$name]}" "${TOOL[$name]}" -P "$T/pid" "$mnt" "$URI" 2>>"$T/$name.err" &
  pid=$!
  for _ in $(seq 200); do [ -s "$T/pid" ] && break; sleep 0.05; done
  [ -s "$T/pid" ] || { echo "compare-fuse.sh: $name did not mount: $(cat "$T/$name.err")" >&2; exit 1; }
  for row in "${ROWS[@]}"; do
    local before after
    before=$(ticks $pid)
    # shellcheck disable=SC2046
    fio --name=bench --filename="$mnt/nbd" --ioengine=libaio --direct=1 --size="$SIZE" --time_based \
      --runtime="$RUNTIME" $(fio_args "$row") --output-format=json >"$T/fio.json"
    after=$(ticks $pid)
    python3 - "$T/fio.json" "$row" "$before" "$after" "$HZ" >>"$T/$name.tsv" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["write"] if "write" in sys.argv[2] else job["read"]
cpu = (float(sys.argv[4]) - float(sys.argv[3])) / float(sys.argv[5])
print(f"{sys.argv[2]}\t{side['bw'] / 1024:.1f}\t{side['iops']:.0f}\t{cpu:.2f}")
EOF
  done
  fusermount3 -u "$mnt"
  wait $pid || true
}

for rep in $(seq "$REPS"); do
  for name in "${NAMES[@]}"; do
    echo "run $rep/$REPS: $name" >&2
    one "$name"
  done
done

python3 - "$T" "$REPS" "$RUNTIME" "${NAMES[@]}" <<'EOF'
import statistics, sys
folder, reps, runtime, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
rows = ["seq read 1M", "seq write 1M", "rand read 4K QD16"]
data = {}
for name in names:
    for line in open(f"{folder}/{name}.tsv"):
        row, mib, iops, cpu = line.rstrip("\n").split("\t")
        data.setdefault((name, row), []).append((float(mib), float(iops), float(cpu)))
print(f"nbdfuse through fio, median of {reps} mounts, {runtime} s per row: MiB/s (IOPS) and nbdfuse's CPU seconds")
print()
others = [n for n in names if n != "ours"]
print("| row | " + " | ".join(names) + " | " + " | ".join(f"ours/{n}" for n in others) + " |")
print("| --- |" + " ---: |" * (len(names) + len(others)))
for row in rows:
    if (names[0], row) not in data:
        continue
    cells, med = [], {}
    for name in names:
        values = data[(name, row)]
        mib = statistics.median(v[0] for v in values)
        iops = statistics.median(v[1] for v in values)
        cpu = statistics.median(v[2] for v in values)
        med[name] = mib
        cells.append(f"{mib:.0f} MiB/s ({iops:.0f}), cpu {cpu:.1f} s")
    ratios = [f"{med['ours'] / med[n]:.2f}x" for n in others]
    print(f"| {row} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
EOF
