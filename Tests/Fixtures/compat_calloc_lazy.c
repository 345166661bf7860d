// calloc returns old bytes after MADV_FREE purging: memory purged with MADV_FREE keeps its old
// contents until the kernel actually reclaims it (without memory pressure: indefinitely), so an
// allocator must not treat MADV_FREE'd pages as zeroed when calloc reuses them.
// Meant to run with ARENA_OPTIONS=purge:free in the environment (set by the harness; the fixture
// sets nothing itself). Without it, or with another allocator, it must pass too.
//  A: malloc 4 x 1 MiB, fill 0xEE, free, malloc_trim(0) (purges now), calloc 4 x 1 MiB: all zero.
//  B: with one idle helper thread alive (so a background scavenger may run), malloc 16 x 1 MiB,
//     fill 0xEE, free, sleep 1.5 s, calloc 16 x 1 MiB: all zero.
//  C: as B with 4 x 40 MiB (huge) blocks.
// Prints arena_malloc_is_active=N and the nonzero bytes found per variant, then
// "compat_calloc_lazy ok" and exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_calloc_lazy Tests/Fixtures/compat_calloc_lazy.c
//   timeout -s KILL 30 env ARENA_OPTIONS=purge:free LD_PRELOAD=libArenaMalloc.so ./compat_calloc_lazy
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compat_fixture.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int finished;

static void *helper(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  while (!finished) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  return NULL;
}

// Keeps the compiler from dropping stores before free().
static void escape(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) != 0) {}
}

// Fills and frees `count` blocks of `size`, optionally trims or sleeps, then callocs `count`
// blocks of `size` and returns the number of nonzero bytes in them (-1 if an allocation failed).
static long variant(int count, size_t size, int trim, long sleep_before) {
  void *blocks[32];
  for (int i = 0; i < count; i++) {
    blocks[i] = malloc(size);
    if (!blocks[i]) { while (i--) free(blocks[i]); return -1; }
    memset(blocks[i], 0xEE, size);
    escape(blocks[i]);
  }
  for (int i = 0; i < count; i++) free(blocks[i]);
  if (trim) malloc_trim(0);
  if (sleep_before) sleep_ms(sleep_before);
  long nonzero = 0;
  int failed = 0;
  for (int i = 0; i < count; i++) {
    blocks[i] = calloc(1, size);
    if (!blocks[i]) { failed = 1; continue; }
  }
  for (int i = 0; i < count; i++) {
    if (!blocks[i]) continue;
    const unsigned char *b = blocks[i];
    for (size_t k = 0; k < size; k++) nonzero += b[k] != 0;
    free(blocks[i]);
  }
  return failed ? -1 : nonzero;
}

int main(void) {
  print_allocator();
  const char *opts = getenv("ARENA_OPTIONS");
  printf("arena_options=%s\n", opts ? opts : "");
  int ok = 1;

  long a = variant(4, (size_t)1 << 20, 1, 0);
  printf("a_trim_1mib_nonzero_bytes=%ld\n", a);

  pthread_t t;
  if (pthread_create(&t, NULL, helper, NULL) != 0) { printf("FAIL pthread_create\n"); return 1; }
  long b = variant(16, (size_t)1 << 20, 0, 1500);
  printf("b_idle_1mib_nonzero_bytes=%ld\n", b);
  long c = variant(4, (size_t)40 << 20, 0, 1500);
  printf("c_idle_40mib_nonzero_bytes=%ld\n", c);
  pthread_mutex_lock(&lock);
  finished = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  pthread_join(t, NULL);

  static const char *names[] = { "A (malloc_trim, 4 x 1 MiB)", "B (idle 1.5 s, 16 x 1 MiB)", "C (idle 1.5 s, 4 x 40 MiB)" };
  long results[] = { a, b, c };
  for (int i = 0; i < 3; i++) {
    if (results[i] < 0) { printf("FAIL variant %s: an allocation returned NULL\n", names[i]); ok = 0; }
    else if (results[i] > 0)
      { printf("FAIL variant %s: calloc returned %ld nonzero bytes (old 0xEE contents)\n", names[i], results[i]); ok = 0; }
  }
  if (!ok) return 1;
  printf("compat_calloc_lazy ok\n");
  return 0;
}
