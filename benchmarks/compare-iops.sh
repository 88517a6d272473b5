#!/usr/bin/env bash
# compare-iops.sh - libnbd's iops client (C; built against Debian's libnbd 1.14 and, when present, against libnbd 1.22
# from ../shared/bench/build-libnbd.sh) and NbdSharp's nbd-iops (C#, Native AOT, and the JIT build as `dotnet build`
# gives it) side by side, on the same nbdkit servers, in one run, interleaved, reporting medians and the
# NbdSharp/libnbd ratios.
#
# Usage: benchmarks/compare-iops.sh [--reps N] [--secs S] [--connects N] [--only REGEX] [--before REV]
#   --reps N      repetitions of every row per client (default 5)
#   --secs S      duration of one fixed-duration repetition (default 2)
#   --connects N  connections per connect repetition (default 1000)
#   --only REGEX  run only the rows whose label matches (bash regex), e.g. --only TLS
#   --no-jit      leave out the JIT build's column
#   --before REV  also build nbd-iops from git revision REV (a worktree) and run it in the same interleaving,
#                 adding a column and the after/before ratio: a change measured against what it replaces
#
# Rows (4 KiB blocks): random reads at queue depth 1, 16, 64 (aio + poll loop) on `nbdkit memory 1G` (pre-filled)
# and `null 1G`; random writes at QD 64; synchronous read latency; connect + handshake + shutdown against
# `nbdkit -t 1`; and, as BASELINE.md recommends for steadier figures, QD1/QD16/QD64/latency with client and server
# pinned to one CPU; and the same over TLS (X.509 certificates made here with openssl, and TLS-PSK). Servers
# listen on Unix sockets in a private temp dir and are killed on exit.
# Needs: nbdkit, libnbd-bin (nbdcopy), libnbd-dev, gcc, dotnet, util-linux (taskset), openssl.
set -euo pipefail
export LC_ALL=C
REPS=5 SECS=2 CONNECTS=1000 ONLY="" BEFORE="" JIT=1
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --connects) CONNECTS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --before) BEFORE=$2; shift 2 ;;
    --no-jit) JIT=0; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-iops.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
T=$(mktemp -d /tmp/nbdsharp-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
  [ -z "$BEFORE" ] || git -C "$ROOT" worktree prune
}
trap cleanup EXIT
CPU=$(( $(nproc) - 1 ))

echo "building libnbd's iops client and nbd-iops (Native AOT)..." >&2
gcc -O2 -Wall -o "$T/iops" "$HERE/libnbd-iops/iops.c" -lnbd
LIBNBD122=${XDG_CACHE_HOME:-$HOME/.cache}/libnbd-1.22
N=()
if [ -f "$LIBNBD122/include/libnbd.h" ]; then
  gcc -O2 -Wall -I"$LIBNBD122/include" -o "$T/iops122" "$HERE/libnbd-iops/iops.c" -L"$LIBNBD122/lib" -lnbd
  N=(env LD_LIBRARY_PATH="$LIBNBD122/lib" "$T/iops122")
fi
dotnet publish "$ROOT/tools/nbd-iops" -c Release -r linux-x64 -p:PublishAot=true -o "$T/aot" -nologo -v q >/dev/null
A=("$T/iops")
B=("$T/aot/nbd-iops")
C=()
J=()
if [ "$JIT" = 1 ]; then
  dotnet build "$ROOT/tools/nbd-iops" -c Release -nologo -v q >/dev/null
  J=("$ROOT/artifacts/bin/nbd-iops/release/nbd-iops")
fi
if [ -n "$BEFORE" ]; then
  echo "building nbd-iops of $BEFORE (Native AOT)..." >&2
  git -C "$ROOT" worktree add --detach -f "$T/before-src" "$BEFORE" >/dev/null 2>&1
  dotnet publish "$T/before-src/tools/nbd-iops" -c Release -r linux-x64 -p:PublishAot=true -o "$T/before-aot" -nologo -v q >/dev/null
  C=("$T/before-aot/nbd-iops")
fi

serve() { # serve NAME [taskset...] -- nbdkit args...
  local name=$1; shift
  local pin=()
  while [ "$1" != "--" ]; do pin+=("$1"); shift; done
  shift
  "${pin[@]}" nbdkit -f --exit-with-parent -U "$T/$name.sock" "$@" &
  PIDS+=($!)
  for _ in $(seq 200); do [ -S "$T/$name.sock" ] && break; sleep 0.05; done
}
uri() { echo "nbd+unix:///?socket=$T/$1.sock"; }

serve m1 -- memory 1G
serve n1 -- null 1G
serve c1 -- -t 1 memory 1G
serve p1 taskset -c "$CPU" -- memory 1G
serve pc1 taskset -c "$CPU" -- -t 1 memory 1G
echo "making TLS certificates and a PSK key..." >&2
mkdir -p "$T/srv" "$T/cli"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$T/ca-key.pem" -out "$T/srv/ca-cert.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$T/srv/server-key.pem" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$T/server.ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/srv/ca-cert.pem" -CAkey "$T/ca-key.pem" -CAcreateserial -days 2 \
  -extfile "$T/server.ext" -out "$T/srv/server-cert.pem" 2>/dev/null
cp "$T/srv/ca-cert.pem" "$T/cli/"
echo "alice:$(openssl rand -hex 32)" > "$T/keys.psk"
serve t1 -- --tls=require --tls-certificates="$T/srv" memory 1G
serve k1 -- --tls=require --tls-psk="$T/keys.psk" memory 1G
tls_uri() { echo "nbds+unix:///?socket=$T/t1.sock&tls-certificates=$T/cli&tls-hostname=localhost"; }
psk_uri() { echo "nbds+unix://alice@/?socket=$T/k1.sock&tls-psk-file=$T/keys.psk"; }
echo "pre-filling the memory exports..." >&2
nbdcopy -- [ nbdkit pattern 1G ] "$(uri m1)"
nbdcopy -- [ nbdkit pattern 1G ] "$(uri p1)"
nbdcopy -- [ nbdkit pattern 1G ] "$(tls_uri)"
nbdcopy -- [ nbdkit pattern 1G ] "$(psk_uri)"

# value KEY LINE: the value of key=value in one output line
value() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

head="| row | metric | libnbd 1.14 (iops.c) |" rule="|---|---|---:|"
if [ ${#N[@]} -gt 0 ]; then head+=" libnbd 1.22 (iops.c) |"; rule+="---:|"; fi
if [ -n "$BEFORE" ]; then head+=" NbdSharp $BEFORE |"; rule+="---:|"; fi
head+=" NbdSharp (nbd-iops, AOT) | NbdSharp / 1.14 |"; rule+="---:|---:|"
if [ ${#N[@]} -gt 0 ]; then head+=" NbdSharp / 1.22 |"; rule+="---:|"; fi
if [ ${#J[@]} -gt 0 ]; then head+=" NbdSharp JIT | JIT / 1.14 |"; rule+="---:|---:|"; fi
if [ ${#J[@]} -gt 0 ] && [ ${#N[@]} -gt 0 ]; then head+=" JIT / 1.22 |"; rule+="---:|"; fi
if [ -n "$BEFORE" ]; then head+=" now / before |"; rule+="---:|"; fi
printf '%s\n%s\n' "$head" "$rule"
# ratio HIGHER_IS_BETTER REFERENCE VALUE: how much better VALUE is than REFERENCE
ratio() { if [ "$1" = high ]; then awk -v a="$2" -v b="$3" 'BEGIN{printf "%.2fx", b/a}'; else awk -v a="$2" -v b="$3" 'BEGIN{printf "%.2fx", a/b}'; fi; }
# row LABEL METRIC HIGHER_IS_BETTER ENV -- args... (client args after the URI)
row() {
  local label=$1 metric=$2 better=$3 env=$4; shift 5
  if [ -n "$ONLY" ] && ! [[ $label =~ $ONLY ]]; then return 0; fi
  local pin=()
  if [ "${1:-}" = "pin" ]; then pin=(taskset -c "$CPU"); shift; fi
  local a=() b=() c=() n=() j=()
  for _ in $(seq "$REPS"); do
    a+=("$(value "$metric" "$("${pin[@]}" "${A[@]}" "$@")")")
    if [ ${#N[@]} -gt 0 ]; then n+=("$(value "$metric" "$("${pin[@]}" "${N[@]}" "$@")")"); fi
    if [ -n "$BEFORE" ]; then c+=("$(value "$metric" "$(env $env "${pin[@]}" "${C[@]}" "$@")")"); fi
    b+=("$(value "$metric" "$(env $env "${pin[@]}" "${B[@]}" "$@")")")
    if [ ${#J[@]} -gt 0 ]; then j+=("$(value "$metric" "$(env $env "${pin[@]}" "${J[@]}" "$@")")"); fi
  done
  local ma mb mc mn mj line
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  line="| $label | $metric | $ma |"
  if [ ${#N[@]} -gt 0 ]; then mn=$(printf '%s\n' "${n[@]}" | median); line+=" $mn |"; fi
  if [ -n "$BEFORE" ]; then mc=$(printf '%s\n' "${c[@]}" | median); line+=" $mc |"; fi
  line+=" $mb | $(ratio "$better" "$ma" "$mb") |"
  if [ ${#N[@]} -gt 0 ]; then line+=" $(ratio "$better" "$mn" "$mb") |"; fi
  if [ ${#J[@]} -gt 0 ]; then
    mj=$(printf '%s\n' "${j[@]}" | median)
    line+=" $mj | $(ratio "$better" "$ma" "$mj") |"
    if [ ${#N[@]} -gt 0 ]; then line+=" $(ratio "$better" "$mn" "$mj") |"; fi
  fi
  if [ -n "$BEFORE" ]; then line+=" $(ratio "$better" "$mc" "$mb") |"; fi
  echo "$line"
  echo "  $label $metric: libnbd 1.14 ${a[*]} / 1.22 ${n[*]:-} / before ${c[*]:-} / nbdsharp ${b[*]} / jit ${j[*]:-}" >&2
}

row "read QD1, memory"            iops    high "" -- "$(uri m1)" read 1 "$SECS"
row "read QD16, memory"           iops    high "" -- "$(uri m1)" read 16 "$SECS"
row "read QD64, memory"           iops    high "" -- "$(uri m1)" read 64 "$SECS"
row "read QD64, null"             iops    high "" -- "$(uri n1)" read 64 "$SECS"
row "write QD64, memory"          iops    high "" -- "$(uri m1)" write 64 "$SECS"
row "sync read latency"           p50_us  low  "" -- "$(uri m1)" lat "$SECS"
row "sync read latency"           p99_us  low  "" -- "$(uri m1)" lat "$SECS"
row "read QD1, 1 CPU"             iops    high "" -- pin "$(uri p1)" read 1 "$SECS"
row "read QD16, 1 CPU"            iops    high "" -- pin "$(uri p1)" read 16 "$SECS"
row "read QD64, 1 CPU"            iops    high "" -- pin "$(uri p1)" read 64 "$SECS"
row "sync read latency, 1 CPU"    p50_us  low  "" -- pin "$(uri p1)" lat "$SECS"
row "connect+handshake+shutdown"  per_s   high "" -- "$(uri c1)" connect "$CONNECTS"
row "connect, no extended-headers round trip (as libnbd < 1.18)" per_s high "NBD_IOPS_EXTENDED_HEADERS=0" -- "$(uri c1)" connect "$CONNECTS"
row "connect, 1 CPU, no extended-headers round trip" per_s high "NBD_IOPS_EXTENDED_HEADERS=0" -- pin "$(uri pc1)" connect "$CONNECTS"
row "TLS X.509: read QD1"          iops    high "" -- "$(tls_uri)" read 1 "$SECS"
row "TLS X.509: read QD64"         iops    high "" -- "$(tls_uri)" read 64 "$SECS"
row "TLS X.509: write QD64"        iops    high "" -- "$(tls_uri)" write 64 "$SECS"
row "TLS X.509: sync read latency" p50_us  low  "" -- "$(tls_uri)" lat "$SECS"
row "TLS-PSK: read QD64"           iops    high "" -- "$(psk_uri)" read 64 "$SECS"
row "TLS X.509: connect+handshake+shutdown" per_s high "" -- "$(tls_uri)" connect "$((CONNECTS / 10))"
row "TLS-PSK: connect+handshake+shutdown" per_s high "" -- "$(psk_uri)" connect "$((CONNECTS / 10))"
