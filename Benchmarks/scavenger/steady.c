// Steady workload for the scavenger's cost: ops/s and the scavenger's CPU share, read through
// arena_statistics. Compare alternating runs with ARENA_OPTIONS=scavenger:off:
//   cc -O2 -o /tmp/steady Benchmarks/scavenger/steady.c
//   LD_PRELOAD=$PWD/.build/release/libArenaMalloc.so /tmp/steady 8
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 10;
  unsigned long long s = 88172645463325252ull;
  enum { N = 20000 };
  static void *slot[N];
  double t0 = now(); long ops = 0;
  while (now() - t0 < secs) {
    for (int k = 0; k < 10000; k++) {
      s ^= s << 13; s ^= s >> 7; s ^= s << 17;
      int i = (int)(s % N);
      if (slot[i]) { free(slot[i]); slot[i] = 0; }
      else { size_t n = (s >> 20) % 8 == 0 ? (s >> 24) % (256 << 10) + 1 : (s >> 24) % 2048 + 1; slot[i] = malloc(n); memset(slot[i], 1, n < 64 ? n : 64); }
      ops++;
    }
  }
  double wall = now() - t0;
  long (*stats)(uint64_t *, long) = (long (*)(uint64_t *, long))dlsym(RTLD_DEFAULT, "arena_statistics");
  uint64_t v[20] = {0};
  if (stats) stats(v, 20);
  printf("ops/s %.0f  scavenger CPU %.1f ms over %.1f s = %.2f%% of a core, %llu passes, purged %llu MiB\n",
         ops / wall, v[17] / 1e6, wall, v[17] / 1e7 / wall, (unsigned long long)v[18], (unsigned long long)(v[13] >> 20));
  return 0;
}
