#!/usr/bin/env bash
# Runs arena-stress under vm.overcommit_memory=2 with HEADROOM_MB (default 768) of commit headroom
# for ArenaAllocator and, where installed, glibc, jemalloc, mimalloc and tcmalloc.
# The rest of the commit limit is taken by a helper process that commits memory without touching
# it. The old settings are restored by a trap; each run takes a few seconds. Needs root.
# Prints, per allocator: the headroom the program found when it started, usable MiB before
# ENOMEM, the commit still free when malloc first said ENOMEM, MiB still charged 3 s after freeing
# everything, peak VMA count. The headroom drifts by tens of MiB while other processes commit and
# release memory, so "usable >= 95% of the headroom" is checked as: when malloc reports ENOMEM,
# at most 5% of the headroom is still uncommitted. Exit status 1 if ours misses that, crashes or
# corrupts a block (arena-stress fails), or keeps more than 16 MiB charged after free.
# Then the single-threaded case (Tests/Fixtures/compat_commit_exhaustion.c: one thread, no
# scavenger thread, allocate until ENOMEM, free everything, sleep 3 s) for arena and glibc: exit
# status 1 if ours keeps more than 64 MiB charged or got less than 85% of the headroom.
set -euo pipefail
cd "$(dirname "$0")/.."
headroom_mb=${HEADROOM_MB:-768}
only=${1:-all}
[ "$(id -u)" = 0 ] || { echo "overcommit-stress: needs root (writes /proc/sys/vm)"; exit 2; }
stress=.build/release/arena-stress
ours=$PWD/.build/release/libArenaMalloc.so
[ -x "$stress" ] && [ -f "$ours" ] || { echo "build first: swift build -c release"; exit 2; }

hog_src=$(mktemp --suffix=.c)
hog_bin=${hog_src%.c}
cat > "$hog_src" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {  // commits argv[1] MiB without touching it, then waits
  size_t mb = (size_t)atol(argv[1]);
  if (mb && mmap(NULL, mb << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) { perror("hog"); return 1; }
  puts("ready"); fflush(stdout);
  pause();
  return 0;
}
C
cc -O2 -o "$hog_bin" "$hog_src"
single_bin=${hog_src%.c}-single
cc -O2 -pthread -o "$single_bin" Tests/Fixtures/compat_commit_exhaustion.c

old_mode=$(cat /proc/sys/vm/overcommit_memory)
old_ratio=$(cat /proc/sys/vm/overcommit_ratio)
old_kbytes=$(cat /proc/sys/vm/overcommit_kbytes)
hog_pid=""
restore() {
  [ -n "$hog_pid" ] && kill "$hog_pid" 2>/dev/null && wait "$hog_pid" 2>/dev/null || true
  if [ "$old_kbytes" != 0 ]; then echo "$old_kbytes" > /proc/sys/vm/overcommit_kbytes; else echo "$old_ratio" > /proc/sys/vm/overcommit_ratio; fi
  echo "$old_mode" > /proc/sys/vm/overcommit_memory
  rm -f "$hog_src" "$hog_bin" "$single_bin"
}
trap restore EXIT INT TERM

field() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }

declare -A libs=([arena]=$ours [glibc]="" \
  [jemalloc]=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
  [mimalloc]=$(ls /usr/lib/x86_64-linux-gnu/libmimalloc.so.2* 2>/dev/null | head -1) \
  [tcmalloc]=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4)
status=0
printf '%-10s %13s %11s %10s %16s %13s %10s\n' allocator "headroom MiB" "usable MiB" "again MiB" "left at ENOMEM" "charged after" "peak VMAs"
for name in arena glibc jemalloc mimalloc tcmalloc; do
  [ "$only" = all ] || [ "$only" = "$name" ] || continue
  lib=${libs[$name]}
  if [ "$name" != glibc ] && [ ! -f "$lib" ]; then printf '%-10s (not installed)\n' "$name"; continue; fi
  # The window: strict mode, the hog takes all but the headroom, one run, then back.
  echo 2 > /proc/sys/vm/overcommit_memory
  free_kb=$(( $(field CommitLimit) - $(field Committed_AS) ))
  hog_mb=$(( free_kb / 1024 - headroom_mb ))
  if [ "$hog_mb" -lt 0 ]; then echo "not enough commit limit for $headroom_mb MiB of headroom"; exit 2; fi
  coproc HOG { exec "$hog_bin" "$hog_mb"; }
  hog_pid=$HOG_PID
  read -r _ <&"${HOG[0]}"
  out=$(STRESS_MAX_MB=$((headroom_mb * 2)) timeout -s KILL 120 env ${lib:+LD_PRELOAD=$lib} "$stress" 2 4 3 2>&1) && rc=0 || rc=$?
  kill "$hog_pid" 2>/dev/null; wait "$hog_pid" 2>/dev/null || true; hog_pid=""
  echo "$old_mode" > /proc/sys/vm/overcommit_memory
  result=$(grep '^RESULT' <<<"$out" || true)
  usable=$(sed -n 's/.*usable_mb=\([0-9]*\).*/\1/p' <<<"$result")
  again=$(sed -n 's/.*again_mb=\([0-9]*\).*/\1/p' <<<"$result")
  charged=$(sed -n 's/.*charged_after_free_mb=\(-\?[0-9]*\).*/\1/p' <<<"$result")
  vmas=$(sed -n 's/.*peak_vmas=\([0-9]*\).*/\1/p' <<<"$result")
  found=$(sed -n 's/.*headroom_mb=\([0-9]*\).*/\1/p' <<<"$result")
  left=$(sed -n 's/.*left_at_enomem_mb=\(-\?[0-9]*\).*/\1/p' <<<"$result")
  printf '%-10s %13s %11s %10s %16s %13s %10s%s\n' "$name" "${found:-?}" "${usable:-?}" "${again:-?}" "${left:-?}" "${charged:-?}" "${vmas:-?}" \
    "$([ $rc -ne 0 ] && echo "  (exit $rc)")"
  if [ "$name" = arena ]; then
    if [ $rc -ne 0 ] || [ -z "$usable" ]; then echo "$out"; status=1
    elif [ -z "$left" ] || [ "$left" -lt 0 ] || [ "$left" -gt $(( ${found:-$headroom_mb} * 5 / 100 )) ]; then
      echo "arena: ${left:-?} MiB of commit still free when malloc said ENOMEM (more than 5% of ${found:-$headroom_mb})"; status=1
    elif [ "$charged" -gt 16 ]; then echo "arena: $charged MiB still charged after free"; status=1
    fi
  fi
done

# Single-threaded exhaustion: the program never creates a thread, so no scavenger thread runs;
# the allocator's free paths must give the charge back themselves.
printf '\nsingle-threaded (compat_commit_exhaustion):\n%-10s %13s %11s %13s\n' allocator "headroom MiB" "usable MiB" "charged after"
for name in arena glibc; do
  [ "$only" = all ] || [ "$only" = "$name" ] || continue
  lib=${libs[$name]}
  echo 2 > /proc/sys/vm/overcommit_memory
  free_kb=$(( $(field CommitLimit) - $(field Committed_AS) ))
  hog_mb=$(( free_kb / 1024 - headroom_mb ))
  if [ "$hog_mb" -lt 0 ]; then echo 0 > /dev/null; echo "$old_mode" > /proc/sys/vm/overcommit_memory; echo "not enough commit limit"; exit 2; fi
  coproc HOG { exec "$hog_bin" "$hog_mb"; }
  hog_pid=$HOG_PID
  read -r _ <&"${HOG[0]}"
  out=$(timeout -s KILL 60 env ${lib:+LD_PRELOAD=$lib} "$single_bin" 2>&1) && rc=0 || rc=$?
  kill "$hog_pid" 2>/dev/null; wait "$hog_pid" 2>/dev/null || true; hog_pid=""
  echo "$old_mode" > /proc/sys/vm/overcommit_memory
  value() { sed -n "s/^$1=\(-\?[0-9.]*\)$/\1/p" <<<"$out" | head -1; }
  start_kib=$(value committed_as_start_kib); after_kib=$(value committed_as_after_3s_kib)
  charged=$([ -n "$start_kib" ] && [ -n "$after_kib" ] && echo $(( (after_kib - start_kib) / 1024 )) || echo "?")
  printf '%-10s %13s %11s %13s%s\n' "$name" "$(value headroom_mib)" "$(value usable_mib)" "$charged" "$([ $rc -ne 0 ] && echo "  (exit $rc)")"
  if [ "$name" = arena ] && [ $rc -ne 0 ]; then echo "$out"; status=1; fi
done
exit $status
