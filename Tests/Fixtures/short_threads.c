// Thread exit must hand a thread's caches back: 5,000 short-lived threads (50 at a time), each
// allocating and freeing a few hundred blocks, leaving freed blocks (~70 KiB) in its cache and two
// live blocks for the main thread to free after the thread is gone. Caches lost at thread exit
// would cost 5,000 x 70 KiB = 340 MiB. Afterwards VmRSS must stay below a bound, and the memory the
// threads left must be reusable: with 32 MiB allocated in the main thread, VmRSS may not exceed
// max(VmRSS after the threads, VmRSS at start + 32 MiB) + 16 MiB.
// Prints "short threads ok <rss bytes>" and exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o short_threads Tests/Fixtures/short_threads.c
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 5000, BATCH = 50, BLOCKS = 300, WINDOW = 16, LEFT_CACHED = 22, HANDED_BACK = 2 };
static const long RSS_LIMIT = 64L << 20;      // after all threads
static const long REUSE_SLACK = 16L << 20;  // while 32 MiB are allocated after the threads

static atomic_int failures;
static void *handed[THREADS][HANDED_BACK];
static size_t handed_size[THREADS][HANDED_BACK];

static long rss_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) { kb = strtol(line + 6, NULL, 10); break; }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

static void *body(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  uint64_t seed = 0x9E3779B97F4A7C15ull ^ ((uint64_t)id * 7919 + 1);
  // BLOCKS allocations through a window of WINDOW live blocks (freed in FIFO order, contents
  // checked), so little is live at once and what stays behind after the threads is what they left.
  void *window[WINDOW] = {0};
  size_t sizes[WINDOW];
  unsigned char marks[WINDOW];
  for (int i = 0; i < BLOCKS + WINDOW; i++) {
    int w = i % WINDOW;
    unsigned char *old = window[w];
    if (old && (old[0] != marks[w] || old[sizes[w] - 1] != marks[w])) {
      if (atomic_fetch_add(&failures, 1) < 10) printf("FAIL thread %u: block of %zu bytes corrupted\n", id, sizes[w]);
    }
    free(old);
    window[w] = NULL;
    if (i >= BLOCKS) continue;
    uint64_t r = next(&seed);
    sizes[w] = (r & 31) == 0 ? 4096 + r % 60000 : 16 + r % 2048;
    marks[w] = (unsigned char)(id + i);
    window[w] = malloc(sizes[w]);
    if (!window[w]) { atomic_fetch_add(&failures, 1); continue; }
    memset(window[w], marks[w], sizes[w]);
  }
  // Blocks allocated and freed last (16 B - 16 KiB, all small classes): they sit in this thread's
  // cache when it exits.
  void *cached[LEFT_CACHED];
  for (int i = 0; i < LEFT_CACHED; i++) {
    size_t n = (size_t)16 << (i % 11);
    cached[i] = malloc(n);
    if (cached[i]) memset(cached[i], 1, n);
  }
  for (int i = 0; i < LEFT_CACHED; i++) free(cached[i]);
  // Two live blocks outlive the thread: the main thread frees them after the join.
  for (int i = 0; i < HANDED_BACK; i++) {
    size_t n = i == 0 ? 48 : 3000;
    handed[id][i] = malloc(n);
    handed_size[id][i] = n;
    if (handed[id][i]) memset(handed[id][i], (int)(id & 0xFF), n);
  }
  return NULL;
}

static int run_batch(unsigned first) {
  pthread_t t[BATCH];
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  for (unsigned i = 0; i < BATCH; i++) {
    int rc = pthread_create(&t[i], &attr, body, (void *)(uintptr_t)(first + i));
    if (rc) { printf("FAIL pthread_create: %s\n", strerror(rc)); return 0; }
  }
  for (unsigned i = 0; i < BATCH; i++) pthread_join(t[i], NULL);
  pthread_attr_destroy(&attr);
  // The threads are gone: free what they handed over (frees of a dead thread's blocks).
  for (unsigned i = first; i < first + BATCH; i++)
    for (int k = 0; k < HANDED_BACK; k++) {
      unsigned char *b = handed[i][k];
      if (!b) { atomic_fetch_add(&failures, 1); continue; }
      if (b[0] != (unsigned char)(i & 0xFF) || b[handed_size[i][k] - 1] != (unsigned char)(i & 0xFF)) {
        if (atomic_fetch_add(&failures, 1) < 10) printf("FAIL block handed back by thread %u corrupted\n", i);
      }
      free(b);
    }
  return 1;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int (*is_active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "arena_malloc_is_active");
  printf("arena_malloc_is_active=%d\n", is_active ? is_active() : 0);
  long start = rss_bytes(), at1000 = -1;
  for (unsigned first = 0; first < THREADS; first += BATCH) {
    if (!run_batch(first)) return 1;
    if (first + BATCH == 1000) at1000 = rss_bytes();
  }
  long end = rss_bytes();
  printf("VmRSS: start %ld KiB, after 1000 threads %ld KiB, after %d threads %ld KiB\n", start >> 10, at1000 >> 10,
         THREADS, end >> 10);
  int ok = 1;
  if (atomic_load(&failures)) { printf("FAIL %d allocation or content failures in the threads\n", atomic_load(&failures)); ok = 0; }
  if (end < 0 || end >= RSS_LIMIT) { printf("FAIL VmRSS %ld KiB after %d threads, limit %ld KiB\n", end >> 10, THREADS, RSS_LIMIT >> 10); ok = 0; }
  // The memory is reusable: allocate, fill and free 32 MiB in the sizes the threads used.
  enum { N = 32 << 10 };
  static void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = malloc(16 + (size_t)(i % 2033));
    if (!p[i]) { printf("FAIL malloc after the threads returned NULL\n"); ok = 0; break; }
    memset(p[i], 7, 16 + (size_t)(i % 2033));
  }
  long reused = rss_bytes();
  for (int i = 0; i < N; i++) free(p[i]);
  printf("VmRSS with 32 MiB allocated after the threads: %ld KiB\n", reused >> 10);
  long allowed = (end > start + (32L << 20) ? end : start + (32L << 20)) + REUSE_SLACK;
  if (reused >= allowed)
    { printf("FAIL VmRSS %ld KiB with 32 MiB allocated after the threads (limit %ld KiB): what they left is not reused\n",
             reused >> 10, allowed >> 10); ok = 0; }
  if (!ok) return 1;
  printf("short threads ok %ld\n", end);
  return 0;
}
