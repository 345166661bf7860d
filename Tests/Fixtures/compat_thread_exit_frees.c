// Frees on a thread's exit path: glibc frees memory on a detached thread's exit path after the
// thread's exit hooks (pthread key destructors) have run: the DTVs of cached stacks it evicts.
// A thread cache created by such a free is never handed back, and the allocator later writes into
// the dead thread's thread-local storage. 400 detached threads, 16 alive at a time with default
// 8 MiB stacks (so glibc's 40 MiB stack cache evicts), each freeing 31 blocks the main thread
// allocated and never calling malloc itself; then malloc_trim(0) (which takes other threads'
// caches), memory of the program's own mapped where the stacks were, and malloc_trim(0) again:
// the program's memory must be untouched and the process alive.
// Prints arena_malloc_is_active=N, then "compat_thread_exit_frees ok" and exits 0, or "FAIL ..."
// lines and exits 1 (a crash is the failure the harness sees before the fix).
//   cc -O2 -pthread -o compat_thread_exit_frees Tests/Fixtures/compat_thread_exit_frees.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_thread_exit_frees
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { THREADS = 400, ALIVE = 16, FREES = 31, MAPS = 64 };
static const size_t MAP_BYTES = (size_t)8 << 20;
static atomic_int finished;

static void *free_them(void *blocks) {
  void **v = blocks;
  for (int i = 0; i < FREES; i++) free(v[i]);  // no malloc on this thread: no cache before exit
  atomic_fetch_add(&finished, 1);
  return NULL;
}

int main(void) {
  print_allocator();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  void **lists[THREADS];
  for (int i = 0; i < THREADS; i++) {
    lists[i] = malloc(FREES * sizeof(void *));
    for (int j = 0; j < FREES; j++) lists[i][j] = malloc(64);
    while (i - atomic_load(&finished) >= ALIVE) usleep(100);
    pthread_t t;
    if (pthread_create(&t, &attr, free_them, lists[i]) != 0) { printf("FAIL pthread_create\n"); return 1; }
  }
  for (int waited = 0; atomic_load(&finished) < THREADS && waited < 10000; waited++) usleep(1000);
  if (atomic_load(&finished) < THREADS) { printf("FAIL threads did not finish\n"); return 1; }
  usleep(20000);
  malloc_trim(0);
  uint64_t *maps[MAPS];
  for (int i = 0; i < MAPS; i++) {
    maps[i] = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (maps[i] == MAP_FAILED) { printf("FAIL mmap\n"); return 1; }
    for (size_t k = 0; k < MAP_BYTES / 8; k++) maps[i][k] = 0x1111111111111111ull;
  }
  malloc_trim(0);
  long changed = 0;
  for (int i = 0; i < MAPS; i++)
    for (size_t k = 0; k < MAP_BYTES / 8; k++) changed += maps[i][k] != 0x1111111111111111ull;
  for (int i = 0; i < THREADS; i++) free(lists[i]);
  printf("changed_words=%ld\n", changed);
  if (changed) { printf("FAIL the allocator wrote %ld words into the program's own mappings\n", changed); return 1; }
  printf("compat_thread_exit_frees ok\n");
  return 0;
}
