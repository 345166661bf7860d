#!/usr/bin/env bash
# The main job: installs the peer allocators (Debian packages) if missing, builds everything in
# release mode and runs the side-by-side benchmark. Arguments go to arena-bench
# (--short, --full, --workloads a,b, --allocators a,b, --json PATH, --svg PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Benchmarks/install-peers.sh || true
swift build -c release
exec .build/release/arena-bench "$@"
