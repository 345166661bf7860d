#!/usr/bin/env bash
# Prints instructions per malloc/free pair (callgrind) for glibc and for libArenaMalloc.so.
# Usage: Benchmarks/callgrind/pair-cost.sh [size=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-32}
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
so=$PWD/.build/release/libArenaMalloc.so
[ -f "$so" ] || swift build -c release --product ArenaMalloc >/dev/null
tmp=$(mktemp -d)
bin=$tmp/pair
# valgrind 3.19 cannot read the Swift/gold debug info: measure a copy without it.
cp "$so" "$tmp/libArenaMalloc.so" && strip -g "$tmp/libArenaMalloc.so" && so=$tmp/libArenaMalloc.so
cc -O2 -o "$bin" Benchmarks/callgrind/pair.c
count() { # $1 = preload or "", $2 = iterations
  local out; out=$(mktemp)
  if [ -n "$1" ]; then
    LD_PRELOAD="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
      "$bin" "$2" "$size" 2>"$out" >/dev/null || true
  else
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$2" "$size" 2>"$out" >/dev/null || true
  fi
  awk '/Collected :/ {print $4}' "$out"
}
for name in glibc arena; do
  lib=""; [ $name = arena ] && lib=$so
  base=$(count "$lib" 0); full=$(count "$lib" 1000000)
  echo "$name: $(( (full - base) / 1000000 )) instructions per malloc($size)+free pair"
done
