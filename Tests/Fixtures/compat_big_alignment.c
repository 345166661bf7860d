// Address space leaked by large alignments: posix_memalign with huge alignments, freed at once,
// must give back the address space it reserved.
//  (a) ITER iterations each of posix_memalign(1 GiB alignment, 64 B), posix_memalign(2 GiB, 64 B)
//      and posix_memalign(512 MiB, 1 MiB) (memalign-style), each block written and freed at once.
//      VmSize and VmData (/proc/self/status) may grow by less than 64 MiB over the loop.
//  (b) A forked child with RLIMIT_AS = 16 GiB runs ITER iterations of the 1 GiB case: every call
//      must succeed (an allocator that leaks the ~1 GiB reservation per call fails near the 15th).
//      (b) runs first, while the process is still small; then (a).
// Prints arena_malloc_is_active=N and name=value figures, then "compat_big_alignment ok" and
// exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_big_alignment Tests/Fixtures/compat_big_alignment.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_big_alignment
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { ITER = 200 };
static const long GROWTH_LIMIT = 64L << 20;


static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// One aligned allocation, written at both ends and freed. Returns 0, or the error.
static int one(size_t alignment, size_t size) {
  void *p = NULL;
  int rc = posix_memalign(&p, alignment, size);
  if (rc) return rc;
  if (!p) return ENOMEM;
  if ((uintptr_t)p & (alignment - 1)) { free(p); return EINVAL; }
  volatile unsigned char *b = p;
  b[0] = 1;
  b[size - 1] = 2;
  free(p);
  return 0;
}

struct kind { const char *name; size_t alignment, size; };
static const struct kind kinds[] = {
  { "align_1g_64b", (size_t)1 << 30, 64 },
  { "align_2g_64b", (size_t)2 << 30, 64 },
  { "align_512m_1m", (size_t)512 << 20, (size_t)1 << 20 },
};

int main(void) {
  print_allocator();
  int ok = 1;

  // (b) Under RLIMIT_AS = 16 GiB, run first, while the process is still small. The child reports
  // the iterations reached in its exit status (255: all of them; 254: setrlimit failed).
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) { printf("FAIL fork: %s\n", strerror(errno)); return 1; }
  if (pid == 0) {
    struct rlimit rl = { (rlim_t)16 << 30, (rlim_t)16 << 30 };
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(254);
    for (int i = 0; i < ITER; i++)
      if (one((size_t)1 << 30, 64) != 0) _exit(i < 253 ? i : 253);
    _exit(255);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status)) { printf("FAIL child under RLIMIT_AS died by signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : -1); ok = 0; }
  else if (WEXITSTATUS(status) == 254) { printf("FAIL child: setrlimit(RLIMIT_AS) failed\n"); ok = 0; }
  else {
    int reached = WEXITSTATUS(status) == 255 ? ITER : WEXITSTATUS(status);
    printf("rlimit_as_16g_iterations=%d\n", reached);
    if (reached < ITER)
      { printf("FAIL under RLIMIT_AS = 16 GiB, posix_memalign(1 GiB, 64) call %d of %d failed\n", reached + 1, ITER); ok = 0; }
  }

  // (a)
  long vsz0 = status_bytes("VmSize"), data0 = status_bytes("VmData");
  double t0 = now_ms();
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    int done = 0, err = 0;
    for (; done < ITER; done++)
      if ((err = one(kinds[k].alignment, kinds[k].size)) != 0) break;
    printf("%s_iterations=%d\n", kinds[k].name, done);
    if (done < ITER) { printf("FAIL %s: call %d failed: %s\n", kinds[k].name, done + 1, strerror(err)); ok = 0; }
  }
  long vsz1 = status_bytes("VmSize"), data1 = status_bytes("VmData");
  printf("loop_ms=%.0f\n", now_ms() - t0);
  printf("vmsize_before_kib=%ld\nvmsize_after_kib=%ld\nvmsize_growth_kib=%ld\n", vsz0 >> 10, vsz1 >> 10, (vsz1 - vsz0) >> 10);
  printf("vmdata_before_kib=%ld\nvmdata_after_kib=%ld\nvmdata_growth_kib=%ld\n", data0 >> 10, data1 >> 10, (data1 - data0) >> 10);
  if (vsz0 < 0 || vsz1 < 0 || data0 < 0 || data1 < 0) { printf("FAIL cannot read /proc/self/status\n"); ok = 0; }
  else {
    if (vsz1 - vsz0 >= GROWTH_LIMIT)
      { printf("FAIL VmSize grew by %ld MiB (limit %ld MiB): aligned allocations leak address space\n", (vsz1 - vsz0) >> 20, GROWTH_LIMIT >> 20); ok = 0; }
    if (data1 - data0 >= GROWTH_LIMIT)
      { printf("FAIL VmData grew by %ld MiB (limit %ld MiB)\n", (data1 - data0) >> 20, GROWTH_LIMIT >> 20); ok = 0; }
  }
  // (c) Many such blocks alive at once: 600 blocks of 64 B aligned to 4 MiB (each its own mapping
  // in an allocator that maps large alignments), all distinct and writable.
  enum { LIVE = 600 };
  static void *live[LIVE];
  int got = 0;
  for (; got < LIVE; got++) {
    if (posix_memalign(&live[got], (size_t)4 << 20, 64) != 0) break;
    memset(live[got], 0x5A, 64);
  }
  for (int i = 0; i < got; i++) free(live[i]);
  printf("live_4mib_aligned_blocks=%d\n", got);
  if (got < LIVE) { printf("FAIL only %d of %d 4 MiB-aligned blocks could be alive at once\n", got, LIVE); ok = 0; }
  if (!ok) return 1;
  printf("compat_big_alignment ok\n");
  return 0;
}
