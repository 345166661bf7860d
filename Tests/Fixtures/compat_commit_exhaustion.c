// Commit exhaustion: a single-threaded program allocates until malloc returns NULL, frees
// everything, and the memory it freed must stop being charged (commit charge or data segment),
// so the program (and, in strict mode, the whole system) can allocate again.
// It allocates a deterministic mix (PRNG) of 64 B-8 KiB blocks and 256 KiB-2.25 MiB blocks
// (90:10 by count), touching every page (for the first 1 GiB; after that the ends of each block),
// until malloc returns NULL (errno must be ENOMEM), records how many MiB it got, frees everything
// and sleeps 3 s.
// Modes (chosen automatically):
//  - strict overcommit (/proc/sys/vm/overcommit_memory == 2; CI runs it so, as root): headroom =
//    CommitLimit - Committed_AS at start (/proc/meminfo). Committed_AS is read at start, at the peak,
//    right after freeing and after the 3 s sleep.
//  - otherwise rlimit mode: `--limit-mib N` sets RLIMIT_DATA to VmData + N MiB (headroom N MiB);
//    without it an existing finite RLIMIT_DATA (`ulimit -d`) is used (headroom = limit - VmData);
//    with neither, it behaves as `--limit-mib 512` (never allocates without a bound). VmData is
//    read at start, at the peak, right after freeing and after the 3 s sleep.
// Pass condition: after freeing and 3 s of sleep, Committed_AS (strict mode) or VmData (rlimit
// mode) is back within 64 MiB of its start value, and the usable MiB are >= 85% of the headroom.
// Prints arena_malloc_is_active=N and name=value figures, then "compat_commit_exhaustion ok" and
// exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_commit_exhaustion Tests/Fixtures/compat_commit_exhaustion.c
//   strict mode (CI, as root, vm.overcommit_memory=2 set by CI, never by the fixture):
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_commit_exhaustion
//   rlimit mode:
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_commit_exhaustion --limit-mib 512
//   (ulimit -d 1048576; timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_commit_exhaustion)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "compat_fixture.h"

static const long SETTLE_SLACK = 64L << 20;
static const double USABLE_FRACTION = 0.85;
// Every page is touched for the first 1 GiB; beyond that (strict mode on a big machine) only the
// first and last byte of each block, to stay within the time budget (the charge is per mapping).
static const uint64_t TOUCH_BUDGET = (uint64_t)1 << 30;


static long vmdata(void) { return proc_field("/proc/self/status", "VmData"); }
static long committed(void) { return proc_field("/proc/meminfo", "Committed_AS"); }

static int overcommit_mode(void) {
  char buf[16] = {0};
  int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? atoi(buf) : -1;
}

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

int main(int argc, char **argv) {
  print_allocator();

  long limit_mib = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--limit-mib") == 0 && i + 1 < argc) limit_mib = atol(argv[++i]);
    else { printf("FAIL usage: %s [--limit-mib N]\n", argv[0]); return 1; }
  }
  int strict = overcommit_mode() == 2;
  const char *mode;
  long headroom;
  if (strict) {
    mode = "strict_overcommit";
    if (limit_mib > 0) printf("note: --limit-mib ignored under strict overcommit\n");
    long commit_limit = proc_field("/proc/meminfo", "CommitLimit");
    headroom = commit_limit - committed();
  } else {
    struct rlimit rl;
    getrlimit(RLIMIT_DATA, &rl);
    if (limit_mib <= 0 && rl.rlim_cur != RLIM_INFINITY) {
      mode = "rlimit_data_inherited";
      headroom = (long)rl.rlim_cur - vmdata();
    } else {
      mode = limit_mib > 0 ? "rlimit_data_set" : "rlimit_data_default_512";
      if (limit_mib <= 0) limit_mib = 512;
      headroom = limit_mib << 20;
      rl.rlim_cur = (rlim_t)(vmdata() + headroom);
      if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
      if (setrlimit(RLIMIT_DATA, &rl) != 0) { printf("FAIL setrlimit(RLIMIT_DATA): %s\n", strerror(errno)); return 1; }
    }
  }
  printf("mode=%s\n", mode);
  if (headroom <= 0) { printf("FAIL no headroom (%ld bytes)\n", headroom); return 1; }

  // The pointer array comes from mmap (not malloc) and is mapped before the start figures, so
  // its charge counts in them. The smallest average block size is far above 8 KiB.
  size_t capacity = (size_t)(headroom / 8192) + 65536;
  void **blocks = mmap(NULL, capacity * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (blocks == MAP_FAILED) { printf("FAIL mmap of the pointer array: %s\n", strerror(errno)); return 1; }
  if (strict) headroom = proc_field("/proc/meminfo", "CommitLimit") - committed();

  long measure_start = strict ? committed() : vmdata();
  long vmdata_start = vmdata();
  size_t count = 0;
  uint64_t seed = 0x2545F4914F6CDD1Dull;
  uint64_t got = 0, touched = 0;
  int last_errno = 0;
  int full = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (count == capacity) { full = 1; break; }
    uint64_t r = next(&seed);
    size_t n = (r % 100) < 90 ? 64 + (size_t)((r >> 8) % (8192 - 64 + 1))
                              : (256u << 10) + (size_t)((r >> 8) % ((2u << 20) + 1));
    errno = 0;
    char *p = malloc(n);
    if (!p) { last_errno = errno; break; }
    if (touched < TOUCH_BUDGET) {
      for (size_t k = 0; k < n; k += 4096) p[k] = (char)k;
      touched += n;
    } else {
      p[0] = 1;
    }
    p[n - 1] = 1;
    blocks[count++] = p;
    got += n;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long measure_peak = strict ? committed() : vmdata();
  for (size_t i = 0; i < count; i++) free(blocks[i]);
  long measure_freed = strict ? committed() : vmdata();
  sleep(3);
  long measure_after = strict ? committed() : vmdata();
  long vmdata_after = vmdata();
  munmap(blocks, capacity * sizeof(void *));

  const char *what = strict ? "committed_as" : "vmdata";
  double usable_mib = got / 1048576.0, headroom_mib = headroom / 1048576.0;
  printf("touched_mib=%.0f\n", touched / 1048576.0);
  printf("headroom_mib=%.0f\nusable_mib=%.0f\nusable_fraction=%.3f\nblocks=%zu\n", headroom_mib, usable_mib,
         usable_mib / headroom_mib, count);
  printf("%s_start_kib=%ld\n%s_peak_kib=%ld\n%s_after_free_kib=%ld\n%s_after_3s_kib=%ld\n", what, measure_start >> 10,
         what, measure_peak >> 10, what, measure_freed >> 10, what, measure_after >> 10);
  if (strict) printf("vmdata_start_kib=%ld\nvmdata_after_3s_kib=%ld\n", vmdata_start >> 10, vmdata_after >> 10);
  printf("null_errno=%d\nalloc_ms=%.0f\n", last_errno, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
  int ok = 1;
  if (full) { printf("FAIL the pointer array filled up before malloc returned NULL\n"); ok = 0; }
  else if (last_errno != ENOMEM) { printf("FAIL malloc returned NULL with errno %d (%s), expected ENOMEM\n", last_errno, strerror(last_errno)); ok = 0; }
  if (measure_start < 0 || measure_after < 0) { printf("FAIL cannot read %s\n", what); ok = 0; }
  else if (measure_after > measure_start + SETTLE_SLACK) {
    printf("FAIL %s is %ld MiB above its start value 3 s after everything was freed (allowed %ld MiB): freed memory stays charged\n",
           what, (measure_after - measure_start) >> 20, SETTLE_SLACK >> 20);
    ok = 0;
  }
  if (usable_mib < USABLE_FRACTION * headroom_mib) {
    printf("FAIL only %.0f MiB usable of %.0f MiB headroom (need %.0f%%)\n", usable_mib, headroom_mib, USABLE_FRACTION * 100);
    ok = 0;
  }
  if (!ok) return 1;
  printf("compat_commit_exhaustion ok\n");
  return 0;
}
