// Cost of arena_offer / arena_reclaim per MiB, without memory pressure (run preloaded).
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(void) {
  int (*offer)(void *) = (int (*)(void *))dlsym(RTLD_DEFAULT, "arena_offer");
  int (*reclaim)(void *) = (int (*)(void *))dlsym(RTLD_DEFAULT, "arena_reclaim");
  if (!offer || !reclaim) { fprintf(stderr, "run with LD_PRELOAD=libArenaMalloc.so\n"); return 1; }
  size_t sizes[] = {1 << 20, 8 << 20, 64 << 20};
  for (int s = 0; s < 3; s++) {
    size_t n = sizes[s];
    char *p = malloc(n);
    memset(p, 7, n);
    int reps = (int)((256u << 20) / n);
    double to = 0, tr = 0;
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      if (offer(p) != 0) return 2;
      double t1 = now();
      if (reclaim(p) != 1) return 3;
      double t2 = now();
      to += t1 - t0; tr += t2 - t1;
    }
    double mib = (double)n / (1 << 20) * reps;
    printf("block %4zu MiB: offer %.1f us/MiB, reclaim %.1f us/MiB\n", n >> 20, to / mib * 1e6, tr / mib * 1e6);
    free(p);
  }
  return 0;
}
