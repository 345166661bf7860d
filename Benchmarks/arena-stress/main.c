// arena-stress: many threads of random allocate / verify / free with patterns, and phases that
// allocate until failure, free, and allocate again. Run it preloaded with any allocator:
//   LD_PRELOAD=.build/release/libArenaMalloc.so .build/release/arena-stress [seconds] [threads]
// It prints one line per phase and a final "N passed, N failed" line; exit status 1 on any
// failure (a corrupted block, a failure that is not ENOMEM, a crash is a crash).
//
// Phases
//   churn     T threads, random sizes 1 B .. 256 KiB (some 1-8 MiB), every block filled with a
//             pattern derived from its address and checked before it is freed.
//   exhaust   allocate 1 MiB blocks (touching one byte per page, like a real program) until
//             malloc fails; the failure must be ENOMEM; every block is verified; then the same
//             with 64 B blocks; everything is freed, and after `settle` seconds (the scavenger
//             decommits) the same exhaustion runs again: it must reach >= 95% of the first.
// Environment: STRESS_MAX_MB bounds the exhaust phase (default 4096) so it cannot eat a machine
// without a commit limit.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>

static int failures, passes;
static pthread_mutex_t report = PTHREAD_MUTEX_INITIALIZER;

static void check(int ok, const char *what) {
  pthread_mutex_lock(&report);
  if (ok) passes++; else { failures++; printf("FAIL: %s\n", what); fflush(stdout); }
  pthread_mutex_unlock(&report);
}

// Committed_AS (kB) from /proc/meminfo, and the VMA count of this process.
static long meminfo_kb(const char *name) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  size_t n = strlen(name);
  while (fgets(line, sizeof line, f)) if (!strncmp(line, name, n) && line[n] == ':') { v = atol(line + n + 1); break; }
  fclose(f);
  return v;
}
// Counted with open/read, not stdio: at the peak malloc has just said ENOMEM, so fopen may fail.
static long vma_count(void) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  long lines = 0;
  char buf[4096];
  ssize_t got;
  while ((got = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < got; i++) lines += buf[i] == '\n';
  close(fd);
  return lines;
}

static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void fill(unsigned char *p, size_t n) {
  uint64_t seed = (uintptr_t)p ^ n;
  size_t step = n > 4096 ? 61 : 1;  // large blocks: sample every 61st byte (and the ends)
  for (size_t i = 0; i < n; i += step) p[i] = (unsigned char)(seed + i * 7);
  if (n) p[n - 1] = (unsigned char)(seed + (n - 1) * 7);
}
static int verify(const unsigned char *p, size_t n) {
  uint64_t seed = (uintptr_t)p ^ n;
  size_t step = n > 4096 ? 61 : 1;
  for (size_t i = 0; i < n; i += step) if (p[i] != (unsigned char)(seed + i * 7)) return 0;
  return n == 0 || p[n - 1] == (unsigned char)(seed + (n - 1) * 7);
}

typedef struct { double until; uint64_t seed; long ops; int bad; } churn_arg;

static void *churn(void *raw) {
  churn_arg *a = raw;
  enum { SLOTS = 2048 };
  unsigned char *blocks[SLOTS] = {0};
  size_t sizes[SLOTS] = {0};
  uint64_t s = a->seed;
  while (now() < a->until) {
    for (int k = 0; k < 1000; k++) {
      int i = (int)(next(&s) % SLOTS);
      if (blocks[i]) {
        if (!verify(blocks[i], sizes[i])) a->bad++;
        free(blocks[i]);
        blocks[i] = NULL;
      } else {
        uint64_t r = next(&s) % 1000;
        size_t n = r < 900 ? next(&s) % 512 + 1 : r < 995 ? next(&s) % (256 << 10) + 1 : next(&s) % (8 << 20) + 1;
        unsigned char *p = malloc(n);
        if (!p) { if (errno != ENOMEM) a->bad++; continue; }
        fill(p, n);
        blocks[i] = p;
        sizes[i] = n;
      }
      a->ops++;
    }
  }
  for (int i = 0; i < SLOTS; i++) if (blocks[i]) { if (!verify(blocks[i], sizes[i])) a->bad++; free(blocks[i]); }
  return NULL;
}

// Commit still free (CommitLimit - Committed_AS) when malloc first reported ENOMEM, in kB.
static long left_at_enomem_kb = -1;

// Allocates blocks of `size` until failure or `max_bytes`; returns bytes obtained.
static size_t exhaust(size_t size, size_t max_bytes, void ***out, size_t *count) {
  size_t cap = 1024, n = 0, total = 0;
  void **list;
  list = (void **)malloc(cap * sizeof *list);
  if (!list) return 0;
  for (;;) {
    if (total >= max_bytes) break;
    errno = 0;
    unsigned char *p = malloc(size);
    if (!p) {
      if (left_at_enomem_kb < 0 && errno == ENOMEM) left_at_enomem_kb = meminfo_kb("CommitLimit") - meminfo_kb("Committed_AS");
      char why[96];
      snprintf(why, sizeof why, "exhaust(%zu): failure is ENOMEM (errno %d)", size, errno);
      check(errno == ENOMEM, why);
      break;
    }
    for (size_t i = 0; i < size; i += 4096) p[i] = (unsigned char)(i >> 12);
    p[size - 1] = 0x5A;
    if (n == cap) {
      void **bigger = realloc(list, cap * 2 * sizeof *list);
      if (!bigger) { free(p); check(errno == ENOMEM, "exhaust: list growth fails with ENOMEM"); break; }
      list = bigger;
      cap *= 2;
    }
    list[n++] = p;
    total += size;
  }
  *out = list;
  *count = n;
  return total;
}

static void release_all(void **list, size_t n, size_t size) {
  int bad = 0;
  for (size_t k = 0; k < n; k++) {
    unsigned char *p = list[k];
    for (size_t i = 0; i < size; i += 4096) if (p[i] != (unsigned char)(i >> 12)) bad = 1;
    if (p[size - 1] != 0x5A) bad = 1;
    free(p);
  }
  free(list);
  check(!bad, "exhaust: every block kept its bytes until freed");
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 5;
  int threads = argc > 2 ? atoi(argv[2]) : 8;
  double settle = argc > 3 ? atof(argv[3]) : 3;
  const char *max_env = getenv("STRESS_MAX_MB");
  size_t max_bytes = (size_t)(max_env ? atol(max_env) : 4096) << 20;
  setvbuf(stdout, NULL, _IOLBF, 0);

  long committed_start = meminfo_kb("Committed_AS");
  long headroom_kb = meminfo_kb("CommitLimit") - committed_start;  // meaningful in overcommit mode 2
  // churn (small stacks: glibc keeps the stacks of joined threads, and they are charged)
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  pthread_t tid[64];
  churn_arg args[64];
  if (threads > 64) threads = 64;
  double until = now() + seconds;
  for (int t = 0; t < threads; t++) {
    args[t] = (churn_arg){ until, 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1), 0, 0 };
    pthread_create(&tid[t], &attr, churn, &args[t]);
  }
  long ops = 0;
  int bad = 0;
  for (int t = 0; t < threads; t++) { pthread_join(tid[t], NULL); ops += args[t].ops; bad += args[t].bad; }
  printf("churn: %d threads, %ld operations, %d corrupted or non-ENOMEM failures\n", threads, ops, bad);
  check(bad == 0, "churn: no corruption");

  // exhaust, free, settle, exhaust again
  void **list; size_t n;
  size_t first = exhaust(1 << 20, max_bytes, &list, &n);
  void **small; size_t small_n;
  size_t first_small = exhaust(64, 64 << 20, &small, &small_n);
  long peak_vmas = vma_count();
  printf("exhaust: %zu MiB in 1 MiB blocks, then %zu KiB in 64 B blocks; %ld VMAs\n", first >> 20, first_small >> 10, peak_vmas);
  release_all(small, small_n, 64);
  release_all(list, n, 1 << 20);
  malloc_trim(0);
  printf("PHASE freed %.3f\n", now());
  usleep((useconds_t)(settle * 1e6));
  long committed_settled = meminfo_kb("Committed_AS");
  printf("PHASE settled %.3f: Committed_AS %+ld MiB against the start\n", now(), (committed_settled - committed_start) / 1024);
  size_t second = exhaust(1 << 20, max_bytes, &list, &n);
  printf("exhaust again: %zu MiB (%.1f%% of the first)\n", second >> 20, first ? 100.0 * second / first : 0);
  check(second * 100 >= first * 95, "exhaust again: at least 95% of the first run");
  release_all(list, n, 1 << 20);
  printf("RESULT usable_mb=%zu again_mb=%zu charged_after_free_mb=%ld peak_vmas=%ld headroom_mb=%ld left_at_enomem_mb=%ld\n",
         first >> 20, second >> 20, (committed_settled - committed_start) / 1024, peak_vmas, headroom_kb / 1024,
         left_at_enomem_kb / 1024);
  printf("%d passed, %d failed\n", passes, failures);
  return failures ? 1 : 0;
}
