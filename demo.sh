#!/usr/bin/env bash
# Quick start, the main job: builds NbdSharp's nbdinfo, nbdcopy and nbdsh, starts a server with a 1 GiB sparse disk
# on a temporary Unix socket, inspects it with nbdinfo, copies it to a local file with nbdcopy and a progress bar,
# proves the copy identical (blkhash of both), writes a sector of a memory disk and reads it back with nbdsh, then
# runs the library demo (an in-process server; connect, write, read back, size and flags).
# The server is nbdkit when it is installed (or can be, with apt-get), else NbdSharp's own nbdsharp-server, which
# takes the same arguments: so the demo runs on any machine with the .NET SDK.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-peers.sh 2>/dev/null || echo "(could not install Debian's NBD servers: using nbdsharp-server)" >&2
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
for tool in nbdinfo nbdcopy nbdsh nbdsharp-server; do
  dotnet build "tools/$tool" -c Release -nologo -v q -clp:ErrorsOnly
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export WORK NBDINFO="$PWD/artifacts/bin/nbdinfo/release/nbdinfo" NBDCOPY="$PWD/artifacts/bin/nbdcopy/release/nbdcopy" \
  NBDSH="$PWD/artifacts/bin/nbdsh/release/nbdsh"
if [ -z "${NBD_SERVER:-}" ]; then
  if command -v nbdkit >/dev/null; then NBD_SERVER=nbdkit; else NBD_SERVER="$PWD/artifacts/bin/nbdsharp-server/release/nbdsharp-server"; fi
fi
echo "== server: $NBD_SERVER"

"$NBD_SERVER" -U - --exit-with-parent sparse-random 1G seed=42 --run '
  set -e
  echo "== nbdinfo $uri"
  "$NBDINFO" "$uri"
  echo
  echo "== nbdinfo --map --totals $uri"
  "$NBDINFO" --map --totals "$uri"
  echo
  echo "== nbdcopy -p $uri disk.img"
  "$NBDCOPY" -p "$uri" "$WORK/disk.img"
  echo
  echo "== blkhash of the export, then of the copy"
  "$NBDCOPY" --blkhash "$uri" null:
  "$NBDCOPY" --blkhash "$WORK/disk.img" null:
'
echo
echo "== the copy is sparse (allocated size, then size):"
ls -sh "$WORK/disk.img"; ls -lh "$WORK/disk.img" | awk "{print \$5}"
echo
echo "== nbdsh: write the second sector of a memory disk, read it back"
"$NBD_SERVER" -U - --exit-with-parent memory 1M --run '
  "$NBDSH" -u "$uri" \
    -c "h.Pwrite(Encoding.ASCII.GetBytes(\"written by nbdsh\"), 512);" \
    -c "var sector = new byte[512]; h.Pread(sector, 512);" \
    -c "hexdump(sector[..32], 512)"
'
echo
echo "== the library itself"
dotnet run -c Release --project samples/NbdSharp.Demo
