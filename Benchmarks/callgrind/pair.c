// Instructions per malloc/free pair, counted by callgrind (repeatable on a noisy machine):
// run with N = 0 and N = 1,000,000 and divide the difference by N.
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
  // Warm up: the first call creates the thread cache.
  void *warm = malloc(size);
  free(warm);
  void *volatile sink;
  for (long i = 0; i < n; i++) {
    void *p = malloc(size);
    sink = p;
    free(p);
  }
  (void)sink;
  return 0;
}
