// Fork safety: while 4 threads hammer malloc/free, the main thread forks 500 children one after
// another. Each child mallocs and frees (small blocks, a 1 MiB block, realloc, calloc, a block the
// parent allocated before the fork; every 10th child also runs a thread that allocates) and
// _exits 0. The parent waits for each child with a deadline (waitpid polling); a child that does
// not finish in time is reported as a hang (and killed), a child that dies or exits non-zero as a
// crash. Prints "fork ok" and exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o fork Tests/Fixtures/fork.c
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { HAMMERS = 4, CHILDREN = 500, CHILD_SECONDS = 10 };

static atomic_int stop;
static atomic_ulong hammer_ops;

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

static void *hammer(void *arg) {
  // Niced, so that on a small machine the forking thread is not starved by its own hammers.
  setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
  uint64_t seed = 0xDEADBEEFull * ((uintptr_t)arg + 1);
  void *slots[256] = {0};
  unsigned long ops = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    unsigned i = (unsigned)(next(&seed) % 256);
    if (slots[i]) { free(slots[i]); slots[i] = NULL; }
    else {
      uint64_t r = next(&seed);
      // Mostly small; some page runs; now and then a huge block (its own mapping).
      size_t n = (r & 1023) == 0 ? (40u << 20) : (r & 63) == 0 ? 40000 + r % 300000 : 16 + r % 2000;
      slots[i] = malloc(n);
      if (slots[i]) memset(slots[i], (int)i, n < 4096 ? n : 4096);
    }
    ops++;
  }
  for (int i = 0; i < 256; i++) free(slots[i]);
  atomic_fetch_add(&hammer_ops, ops);
  return NULL;
}

static void *child_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 200; i++) {
    void *p = malloc(16 + (size_t)i * 24);
    if (!p) return (void *)1;
    memset(p, 3, 16 + (size_t)i * 24);
    free(p);
  }
  return NULL;
}

// Runs in the child. Returns the exit status (0 = fine).
static int child(int k, unsigned char *inherited, size_t inherited_size) {
  void *blocks[64];
  for (int i = 0; i < 64; i++) {
    size_t n = 16 + (size_t)(i * 97 + k) % 3000;
    blocks[i] = malloc(n);
    if (!blocks[i]) return 10;
    memset(blocks[i], i, n);
  }
  for (int i = 0; i < 64; i++) free(blocks[i]);
  unsigned char *big = malloc(1 << 20);
  if (!big) return 11;
  memset(big, 0x5A, 1 << 20);
  unsigned char *r = realloc(big, 3 << 20);
  if (!r || r[(1 << 20) - 1] != 0x5A) return 12;
  free(r);
  unsigned char *z = calloc(1000, 100);
  if (!z) return 13;
  for (int i = 0; i < 100000; i++) if (z[i]) return 14;
  free(z);
  // A block the parent allocated before the fork: intact, and freeable here.
  for (size_t i = 0; i < inherited_size; i++) if (inherited[i] != (unsigned char)(k + i)) return 15;
  free(inherited);
  if (k % 10 == 0) {
    pthread_t t;
    void *ret = NULL;
    if (pthread_create(&t, NULL, child_thread, NULL)) return 16;
    pthread_join(t, &ret);
    if (ret) return 17;
  }
  return 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int (*is_active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "arena_malloc_is_active");
  printf("arena_malloc_is_active=%d\n", is_active ? is_active() : 0);
  pthread_t t[HAMMERS];
  for (uintptr_t i = 0; i < HAMMERS; i++) pthread_create(&t[i], NULL, hammer, (void *)i);

  int hangs = 0, crashes = 0;
  double slowest = 0;
  for (int k = 0; k < CHILDREN; k++) {
    size_t n = 100 + (size_t)k % 5000;
    unsigned char *inherited = malloc(n);
    for (size_t i = 0; i < n; i++) inherited[i] = (unsigned char)(k + i);
    fflush(stdout);
    double started = now();
    pid_t pid = fork();
    if (pid < 0) { printf("FAIL fork #%d: %s\n", k, strerror(errno)); crashes++; free(inherited); break; }
    if (pid == 0) _exit(child(k, inherited, n));
    free(inherited);
    int status = 0;
    pid_t got = 0;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 && now() - started < CHILD_SECONDS) {
      struct timespec pause = {0, 200000};
      nanosleep(&pause, NULL);
    }
    double took = now() - started;
    if (took > slowest) slowest = took;
    if (got == 0) {
      hangs++;
      if (hangs <= 5) printf("FAIL child #%d hung (no exit within %d s); killed\n", k, CHILD_SECONDS);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      if (hangs >= 3) { printf("FAIL giving up after %d hung children\n", hangs); break; }
    } else if (got < 0) {
      printf("FAIL waitpid for child #%d: %s\n", k, strerror(errno));
      crashes++;
    } else if (WIFSIGNALED(status)) {
      crashes++;
      if (crashes <= 5) printf("FAIL child #%d killed by signal %d (%s)\n", k, WTERMSIG(status), strsignal(WTERMSIG(status)));
    } else if (WEXITSTATUS(status) != 0) {
      crashes++;
      if (crashes <= 5) printf("FAIL child #%d exited with status %d\n", k, WEXITSTATUS(status));
    }
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < HAMMERS; i++) pthread_join(t[i], NULL);
  printf("children: %d, hung: %d, crashed: %d, slowest: %.3f s, parent thread ops: %lu\n", CHILDREN, hangs, crashes,
         slowest, atomic_load(&hammer_ops));
  if (hangs || crashes) return 1;
  printf("fork ok\n");
  return 0;
}
