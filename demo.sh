#!/usr/bin/env bash
# Quick start, the main job: installs nbdkit if missing, builds NbdSharp, and runs a demo that starts nbdkit on a
# temporary Unix socket, connects, writes, reads back and prints the export's size and flags.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-peers.sh
dotnet run -c Release --project samples/NbdSharp.Demo
