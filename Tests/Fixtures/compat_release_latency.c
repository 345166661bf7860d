// Release latency: after a multi-threaded program frees everything, its RSS should fall back
// near the floor within about a second, without the program calling malloc_trim, while its
// threads stay alive but idle.
// Two worker threads (kept alive and idle afterwards) each run 6 bursts: build ~100 MB of live
// mixed blocks (by count ~95% 16 B-1 KiB, ~4.5% 4-64 KiB, ~0.5% 256 KiB-1 MiB), hand a random
// half of them to the other worker (cross-thread frees), then each frees ~90% of its own and of
// the handed-over blocks in random order, keeps the other ~10% alive briefly (20 ms), and frees
// them by the end of the burst. After the last burst both workers block on a condition variable.
// The main thread samples VmRSS every 100 ms from +0 to +3 s after the last free (printing those at
// +0, +0.5, +1.0, +1.5, +3 s, the whole trace, and the first sample within floor + 24 MiB as
// released_within_ms), then calls malloc_trim(0) and reads the RSS floor.
// Pass condition (without arguments): RSS at +1.0 s <= floor + 24 MiB.
// NOTE: glibc keeps the freed memory until malloc_trim and FAILS this check; that is expected (this
// is the one fixture that need not pass with glibc). Allocators whose malloc_trim releases nothing
// (jemalloc, mimalloc) pass it vacuously: their floor stays at the peak; compare rss_start_kib.
// Run with `--report` to print the figures and always exit 0; only without an argument is the
// threshold applied.
// Prints arena_malloc_is_active=N and name=value figures (rss_*_kib), then
// "compat_release_latency ok" and exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_release_latency Tests/Fixtures/compat_release_latency.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_release_latency [--report]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { WORKERS = 2, BURSTS = 6, MAX_BLOCKS = 1 << 16 };
static const size_t BURST_BYTES = 100u * 1000 * 1000;
static const long SLACK = 24L << 20;

struct worker {
  int id;
  uint64_t seed;
  void *own[MAX_BLOCKS];           // blocks this worker frees itself
  size_t own_count;
  void *outbox[MAX_BLOCKS];        // blocks the other worker frees
  size_t outbox_count;
  long failures;
};

static struct worker workers[WORKERS];
static pthread_barrier_t barrier;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done_count, finished;

static long rss_bytes(void) { return status_bytes("VmRSS"); }


static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
  double d = t - now_s();
  if (d <= 0) return;
  struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };
  while (nanosleep(&ts, &ts) != 0) {}
}

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

static size_t block_size(uint64_t *s) {
  uint64_t r = next(s), k = r % 1000;
  if (k < 950) return 16 + (size_t)(r >> 20) % (1024 - 16 + 1);
  if (k < 995) return 4096 + (size_t)(r >> 20) % (65536 - 4096 + 1);
  return (256u << 10) + (size_t)(r >> 20) % ((768u << 10) + 1);
}

static void shuffle(void **a, size_t n, uint64_t *s) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)(next(s) % i);
    void *t = a[i - 1]; a[i - 1] = a[j]; a[j] = t;
  }
}

// Frees ~90% of `a` in random order; the rest (kept alive briefly) move to the front, count returned.
static size_t free_most(void **a, size_t n, uint64_t *s) {
  shuffle(a, n, s);
  size_t keep = n / 10;
  for (size_t i = keep; i < n; i++) free(a[i]);
  return keep;
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct worker *other = &workers[1 - w->id];
  for (int burst = 0; burst < BURSTS; burst++) {
    // Build ~100 MB of live blocks; a random half goes to the other worker.
    size_t bytes = 0;
    w->own_count = w->outbox_count = 0;
    while (bytes < BURST_BYTES && w->own_count < MAX_BLOCKS && w->outbox_count < MAX_BLOCKS) {
      size_t n = block_size(&w->seed);
      unsigned char *p = malloc(n);
      if (!p) { w->failures++; break; }
      memset(p, (int)(n & 0xFF) | 1, n);
      bytes += n;
      if (next(&w->seed) & 1) w->outbox[w->outbox_count++] = p;
      else w->own[w->own_count++] = p;
    }
    pthread_barrier_wait(&barrier);
    // Free most of our own and of the other worker's handed-over blocks, keep ~10% briefly.
    size_t own_kept = free_most(w->own, w->own_count, &w->seed);
    size_t their_kept = free_most(other->outbox, other->outbox_count, &w->seed);
    struct timespec brief = { 0, 20 * 1000000L };
    nanosleep(&brief, NULL);
    for (size_t i = 0; i < own_kept; i++) free(w->own[i]);
    for (size_t i = 0; i < their_kept; i++) free(other->outbox[i]);
    pthread_barrier_wait(&barrier);  // the outboxes are empty before the next burst refills them
  }
  pthread_mutex_lock(&lock);
  done_count++;
  pthread_cond_broadcast(&cond);
  while (!finished) pthread_cond_wait(&cond, &lock);  // idle but alive
  pthread_mutex_unlock(&lock);
  return NULL;
}

int main(int argc, char **argv) {
  print_allocator();
  int report = argc > 1 && strcmp(argv[1], "--report") == 0;
  long start = rss_bytes();
  pthread_barrier_init(&barrier, NULL, WORKERS);
  pthread_t t[WORKERS];
  for (int i = 0; i < WORKERS; i++) {
    workers[i].id = i;
    workers[i].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    if (pthread_create(&t[i], NULL, worker_main, &workers[i]) != 0) { printf("FAIL pthread_create\n"); return 1; }
  }
  double t0 = now_s();
  pthread_mutex_lock(&lock);
  while (done_count < WORKERS) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  double last_free = now_s();
  long peak = -1;
  {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) { buf[n] = 0; char *l = strstr(buf, "\nVmHWM:"); if (l) peak = strtol(l + 7, NULL, 10) * 1024; }
  }
  // Samples every 100 ms up to +3 s; the named ones are at +0, +0.5, +1.0, +1.5 and +3 s.
  enum { TRACE = 31 };
  long trace[TRACE];
  for (int i = 0; i < TRACE; i++) {
    sleep_until(last_free + i * 0.1);
    trace[i] = rss_bytes();
  }
  static const int named[] = { 0, 5, 10, 15, 30 };
  static const char *names[] = { "rss_at_0s_kib", "rss_at_0_5s_kib", "rss_at_1s_kib", "rss_at_1_5s_kib", "rss_at_3s_kib" };
  long samples[5];
  for (int i = 0; i < 5; i++) samples[i] = trace[named[i]];
  malloc_trim(0);
  long floor = rss_bytes();
  pthread_mutex_lock(&lock);
  finished = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < WORKERS; i++) pthread_join(t[i], NULL);

  printf("bursts_s=%.2f\n", last_free - t0);
  printf("rss_start_kib=%ld\nrss_peak_kib=%ld\n", start >> 10, peak >> 10);
  for (int i = 0; i < 5; i++) printf("%s=%ld\n", names[i], samples[i] >> 10);
  printf("rss_floor_after_trim_kib=%ld\n", floor >> 10);
  printf("rss_at_1s_over_floor_kib=%ld\n", (samples[2] - floor) >> 10);
  int released = -1;
  for (int i = 0; i < TRACE && released < 0; i++) if (trace[i] >= 0 && trace[i] <= floor + SLACK) released = i;
  if (released >= 0) printf("released_within_ms=%d\n", released * 100);
  else printf("released_within_ms=never (not within floor + %ld MiB by +3 s)\n", SLACK >> 20);
  printf("rss_trace_100ms_kib=");
  for (int i = 0; i < TRACE; i++) printf("%s%ld", i ? "," : "", trace[i] >> 10);
  printf("\n");
  int ok = 1;
  long failures = workers[0].failures + workers[1].failures;
  if (failures) { printf("FAIL %ld mallocs returned NULL\n", failures); ok = 0; }
  if (samples[2] < 0 || floor < 0) { printf("FAIL cannot read VmRSS\n"); ok = 0; }
  else if (samples[2] > floor + SLACK) {
    printf("%s RSS %ld KiB 1 s after the last free, floor after malloc_trim %ld KiB: more than %ld MiB above it\n",
           report ? "note:" : "FAIL", samples[2] >> 10, floor >> 10, SLACK >> 20);
    if (!report) ok = 0;
  }
  if (report) { printf("compat_release_latency ok\n"); return 0; }
  if (!ok) return 1;
  printf("compat_release_latency ok\n");
  return 0;
}
