#!/usr/bin/env bash
# Fuzzing NbdSharp with AFL++ through SharpFuzz (docs/hardening.md, "Fuzzing").
#
#   fuzz/fuzz.sh build                  publish the fuzz host twice (release, and canary with the libraries of
#                                       fuzz/NbdSharp.Canary and fuzz/NbdSharp.Server.Canary, which plant the bugs) and
#                                       instrument NbdSharp.dll and NbdSharp.Server.dll in both
#   fuzz/fuzz.sh run TARGET SECONDS [DIR]
#                                       fuzz one target from fuzz/corpus/TARGET into DIR (artifacts/fuzz/run-TARGET);
#                                       prints execs, corpus, crashes, hangs
#   fuzz/fuzz.sh canary TARGET SECONDS  fuzz the canary build from the hand-written seeds until the first crash
#   fuzz/fuzz.sh smoke [SECONDS]        every target for SECONDS (default 60) must find nothing, and every
#                                       canary must be found within 3 x SECONDS; ends "fuzz: N passed, N failed"
#   fuzz/fuzz.sh minimize TARGET [DIR]  afl-cmin the queue of a run (and the corpus) into fuzz/corpus/TARGET
#
# TARGET is reply, client, handshake, uri (the client), server-request or server-option (the server). Output goes
# to artifacts/fuzz/. Needs afl++ (apt-get install afl++).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/artifacts/fuzz
# The uninstrumented host (instrumented code only runs under afl-fuzz): seeds, replays.
plain=$root/artifacts/bin/NbdSharp.Fuzz/release/NbdSharp.Fuzz.dll
targets=(reply client handshake uri server-request server-option)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1

die() { echo "fuzz.sh: $*" >&2; exit 1; }

build() {
  command -v afl-fuzz >/dev/null || die "afl-fuzz is missing (apt-get install afl++)"
  dotnet tool restore >/dev/null || die "dotnet tool restore failed (SharpFuzz.CommandLine)"
  rm -rf "$out/release" "$out/canary" "$out/canary-library" "$out/canary-server-library"
  dotnet publish fuzz/NbdSharp.Fuzz -c Release -nologo -v q -clp:ErrorsOnly -o "$out/release" >/dev/null ||
    die "publishing the fuzz host failed"
  # The canary host is the same host with the libraries built from fuzz/NbdSharp.Canary and
  # fuzz/NbdSharp.Server.Canary (the planted bugs).
  cp -r "$out/release" "$out/canary"
  dotnet build fuzz/NbdSharp.Canary -c Release -nologo -v q -clp:ErrorsOnly -o "$out/canary-library" >/dev/null ||
    die "building the canary library failed"
  cp "$out/canary-library/NbdSharp.dll" "$out/canary-library/NbdSharp.pdb" "$out/canary/"
  dotnet build fuzz/NbdSharp.Server.Canary -c Release -nologo -v q -clp:ErrorsOnly -o "$out/canary-server-library" >/dev/null ||
    die "building the server canary library failed"
  cp "$out/canary-server-library/NbdSharp.Server.dll" "$out/canary-server-library/NbdSharp.Server.pdb" "$out/canary/"
  local dir lib
  for dir in "$out/release" "$out/canary"; do
    # Only the libraries are instrumented: coverage of the harness and the runtime would be noise.
    for lib in NbdSharp NbdSharp.Server; do
      dotnet sharpfuzz "$dir/$lib.dll" >/dev/null || die "instrumenting $dir/$lib.dll failed"
    done
  done
}

# dict TARGET: the afl dictionary of a target
dict() {
  case "$1" in
    uri) echo uri.dict ;;
    server-*) echo server.dict ;;
    *) echo nbd.dict ;;
  esac
}

# stat FILE KEY: one value from an afl fuzzer_stats file
stat() { sed -n "s/^$2 *: *//p" "$1" | head -1; }

# fuzz BUILD TARGET SECONDS INPUT OUTPUT [until-crash]
fuzz() {
  local build=$1 target=$2 seconds=$3 input=$4 output=$5 until_crash=${6:-}
  rm -rf "$output"
  mkdir -p "$output"
  env ${until_crash:+AFL_BENCH_UNTIL_CRASH=1} NBDSHARP_FUZZ_CANARY=$([ "$build" = canary ] && echo "$target") \
    timeout $((seconds + 120)) afl-fuzz -i "$input" -o "$output" -x "fuzz/dict/$(dict "$target")" -t 5000 -m none -V "$seconds" \
    -- dotnet "$out/$build/NbdSharp.Fuzz.dll" "$target" >"$output/afl.log" 2>&1
  local status=$?
  local stats=$output/default/fuzzer_stats
  if [ ! -f "$stats" ]; then
    echo "$target ($build): afl-fuzz did not start (exit $status); the end of $output/afl.log:" >&2
    tail -15 "$output/afl.log" >&2
    return 2
  fi
  local crashes hangs
  crashes=$(stat "$stats" saved_crashes)
  hangs=$(stat "$stats" saved_hangs)
  printf '%s (%s): %s s, %s execs (%s/s), corpus %s, crashes %s, hangs %s\n' "$target" "$build" \
    "$(stat "$stats" run_time)" "$(stat "$stats" execs_done)" "$(stat "$stats" execs_per_sec)" \
    "$(stat "$stats" corpus_count)" "$crashes" "$hangs"
  [ "$crashes" = 0 ] && [ "$hangs" = 0 ]
}

seeds() {
  local dir=$out/seeds/$1
  rm -rf "$dir"
  dotnet "$plain" seeds "$1" "$dir" || die "writing the seeds of $1 failed"
  echo "$dir"
}

case "${1:-}" in
  build)
    build
    ;;
  run)
    [ $# -eq 3 ] || [ $# -eq 4 ] || die "usage: fuzz.sh run TARGET SECONDS [DIR]"
    [ -d "$out/release" ] || build
    fuzz release "$2" "$3" "fuzz/corpus/$2" "${4:-$out/run-$2}"
    ;;
  canary)
    [ $# -eq 3 ] || die "usage: fuzz.sh canary TARGET SECONDS"
    [ -d "$out/canary" ] || build
    fuzz canary "$2" "$3" "$(seeds "$2")" "$out/canary-$2" until-crash
    [ $? -eq 1 ]
    ;;
  smoke)
    seconds=${2:-60}
    build
    passed=0 failed=0
    for target in "${targets[@]}"; do
      # The release run and the canary run of a target share the two cores.
      fuzz release "$target" "$seconds" "fuzz/corpus/$target" "$out/run-$target" & normal=$!
      fuzz canary "$target" $((seconds * 3)) "$(seeds "$target")" "$out/canary-$target" until-crash
      canary=$?
      if wait $normal; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
        echo "fuzz.sh: the $target target found a crash or a hang: see $out/run-$target/default/{crashes,hangs}" >&2
      fi
      if [ $canary -eq 1 ]; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
        echo "fuzz.sh: the planted bug of the $target target was not found" >&2
      fi
    done
    echo "fuzz: $passed passed, $failed failed"
    [ $failed -eq 0 ]
    ;;
  minimize)
    [ $# -eq 2 ] || [ $# -eq 3 ] || die "usage: fuzz.sh minimize TARGET [DIR]"
    queue=${3:-$out/run-$2}/default/queue
    [ -d "$queue" ] || die "no queue in $queue: run the target first"
    # afl-cmin refuses to work under /tmp.
    tmp=$out/cmin-$2
    rm -rf "$tmp"
    mkdir -p "$tmp/all"
    cp "$queue"/id:* "$tmp/all/"
    cp fuzz/corpus/"$2"/* "$tmp/all/"
    afl-cmin -i "$tmp/all" -o "$tmp/min" -t 5000 -m none -- "$(command -v dotnet)" "$out/release/NbdSharp.Fuzz.dll" "$2" >/dev/null ||
      die "afl-cmin failed"
    rm -rf "fuzz/corpus/$2"
    mkdir -p "fuzz/corpus/$2"
    i=0
    for f in "$tmp"/min/*; do
      cp "$f" "fuzz/corpus/$2/$(printf '%05d' $i)"
      i=$((i + 1))
    done
    rm -rf "$tmp"
    echo "fuzz/corpus/$2: $i inputs"
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
