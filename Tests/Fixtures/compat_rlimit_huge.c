// Large request refused although freed memory is still charged: memory a program freed must stop
// counting against RLIMIT_DATA (the kernel counts private writable mappings, so an allocator that
// keeps freed memory mapped read-write, even purged with MADV_FREE/MADV_DONTNEED, still charges it).
// For each pattern, a forked child sets RLIMIT_DATA to its VmData + 256 MiB (the limit counts the
// whole data segment), allocates 200 MiB in blocks of that size and touches every page, frees them
// all, then immediately mallocs 100 MiB and touches it: that must succeed.
//   blocks of 1 MiB (200 blocks), 40 MiB (5 blocks: huge mappings), 64 KiB (3,200 blocks)
// Prints arena_malloc_is_active=N and per-pattern name=value figures, then "compat_rlimit_huge ok"
// and exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_rlimit_huge Tests/Fixtures/compat_rlimit_huge.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_rlimit_huge
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
#include <unistd.h>

#include "compat_fixture.h"

static const long HEADROOM = 256L << 20;
static const size_t TOTAL = (size_t)200 << 20;
static const size_t BIG = (size_t)100 << 20;


static void touch(char *p, size_t n) {
  for (size_t i = 0; i < n; i += 4096) p[i] = (char)(i >> 12);
  p[n - 1] = 1;
}

// Exit status: 0 ok, 1 setrlimit failed, 2 a block of the 200 MiB failed, 3 the 100 MiB request failed.
static void child_run(const char *name, size_t block) {
  long start = status_bytes("VmData");
  struct rlimit rl = { (rlim_t)(start + HEADROOM), (rlim_t)(start + HEADROOM) };
  if (start < 0 || setrlimit(RLIMIT_DATA, &rl) != 0) _exit(1);
  size_t count = TOTAL / block;
  static char *blocks[4096];
  for (size_t i = 0; i < count; i++) {
    blocks[i] = malloc(block);
    if (!blocks[i]) {
      printf("%s_blocks_allocated=%zu\n", name, i);
      fflush(stdout);
      _exit(2);
    }
    touch(blocks[i], block);
  }
  long peak = status_bytes("VmData");
  for (size_t i = 0; i < count; i++) free(blocks[i]);
  long freed = status_bytes("VmData");
  char *volatile big = malloc(BIG);
  if (big) touch(big, BIG);
  printf("%s_vmdata_start_kib=%ld\n%s_vmdata_peak_kib=%ld\n%s_vmdata_after_free_kib=%ld\n%s_malloc_100mib=%s\n", name,
         start >> 10, name, peak >> 10, name, freed >> 10, name, big ? "ok" : "failed");
  fflush(stdout);
  free(big);
  _exit(big ? 0 : 3);
}

int main(void) {
  print_allocator();
  static const struct { const char *name; size_t block; } patterns[] = {
    { "blocks_1mib", (size_t)1 << 20 },
    { "blocks_40mib", (size_t)40 << 20 },
    { "blocks_64kib", (size_t)64 << 10 },
  };
  int ok = 1;
  for (size_t k = 0; k < sizeof patterns / sizeof patterns[0]; k++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { printf("FAIL fork: %s\n", strerror(errno)); return 1; }
    if (pid == 0) child_run(patterns[k].name, patterns[k].block);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    printf("%s_verdict=%s\n", patterns[k].name, code == 0 ? "ok" : "fail");
    switch (code) {
      case 0: break;
      case 1: printf("FAIL %s: setrlimit(RLIMIT_DATA) failed\n", patterns[k].name); ok = 0; break;
      case 2: printf("FAIL %s: could not allocate 200 MiB under RLIMIT_DATA = VmData + 256 MiB\n", patterns[k].name); ok = 0; break;
      case 3:
        printf("FAIL %s: malloc(100 MiB) refused after freeing 200 MiB under RLIMIT_DATA = VmData + 256 MiB: freed memory still charged\n",
               patterns[k].name);
        ok = 0;
        break;
      default: printf("FAIL %s: child died (status %d)\n", patterns[k].name, code); ok = 0; break;
    }
  }
  if (!ok) return 1;
  printf("compat_rlimit_huge ok\n");
  return 0;
}
