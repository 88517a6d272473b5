#!/usr/bin/env bash
# Installs the Debian packages NbdSharp's demo and tests talk to, if any is missing:
# nbdkit, qemu-nbd (qemu-utils), nbd-server, libnbd's own tools and Python binding (the reference), and
# openssl (TLS tests make their certificates with it), file (nbdinfo probes an export's content with it), tmux (the
# interactive nbdsh is tested in a tmux pane), fuse3 (libfuse3 and fusermount3 for nbdfuse), fio (nbdfuse's
# benchmark), afl++ (fuzz/fuzz.sh smoke), and on x86-64 the aarch64 cross toolchain (scripts/pack.sh compiles the
# linux-arm64 tool packages with Native AOT) with qemu-user to run what it makes (scripts/package-tests.sh).
set -euo pipefail
need=()
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v qemu-nbd >/dev/null || need+=(qemu-utils)
command -v nbd-server >/dev/null || [ -x /usr/sbin/nbd-server ] || need+=(nbd-server)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need+=(python3-libnbd)
command -v openssl >/dev/null || need+=(openssl)
command -v file >/dev/null || need+=(file)
command -v tmux >/dev/null || need+=(tmux)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v fio >/dev/null || need+=(fio)
command -v unzip >/dev/null || need+=(unzip)
if [ "$(uname -m)" = x86_64 ]; then
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
  [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-dev-arm64-cross)
  command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
fi
afl=()
command -v afl-fuzz >/dev/null || afl+=(afl++)
[ ${#need[@]} -eq 0 ] && [ ${#afl[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]} ${afl[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
[ ${#need[@]} -eq 0 ] || $sudo apt-get install -y -qq "${need[@]}" >/dev/null
# afl++'s recommendations are a whole compiler suite it does not need here.
[ ${#afl[@]} -eq 0 ] || $sudo apt-get install -y -qq --no-install-recommends "${afl[@]}" >/dev/null
