#!/usr/bin/env bash
# What the scavenger costs in throughput: runs one arena-workload command with the scavenger on
# and with ARENA_OPTIONS=scavenger:off, alternating, and prints the median and quartiles of each.
# Usage: Benchmarks/scavenger/on-off.sh REPS workload [key=value ...]
#   e.g. Benchmarks/scavenger/on-off.sh 15 churn ops=6000000 window=20000
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:?usage: on-off.sh REPS workload [key=value ...]}; shift
lib=$PWD/.build/release/libArenaMalloc.so
exe=$PWD/.build/release/arena-workload
[ -f "$lib" ] && [ -x "$exe" ] || swift build -c release >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$reps"); do
  for mode in on off; do
    options=""; [ $mode = off ] && options="scavenger:off"
    ARENA_OPTIONS=$options LD_PRELOAD=$lib "$exe" "$@" |
      awk -v m=$mode '/^RESULT/ { for (i = 1; i <= NF; i++) if ($i ~ /^seconds=/) { split($i, x, "="); print m, x[2] } }'
  done
done >"$out"
for mode in on off; do
  awk -v m=$mode '$1 == m { print $2 }' "$out" | sort -n |
    awk -v m=$mode '{ v[NR] = $1 } END { printf "scavenger %-3s median %.4f s  (quartiles %.4f %.4f, %d runs)\n", m, v[int((NR + 1) / 2)], v[int((NR + 3) / 4)], v[int((3 * NR + 1) / 4)], NR }'
done
