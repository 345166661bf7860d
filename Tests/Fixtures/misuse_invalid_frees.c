// Heap misuse the allocator must stop by default: double frees and invalid pointers given to
// free, realloc and malloc_usable_size, for small blocks, page runs and huge blocks, also after
// the block's run was merged with free neighbours or trimmed. Each case runs in a forked child
// with stderr on a pipe; the child must die of SIGABRT after writing one line "arena: ..." that
// names a pointer (0x...). A case that survives, or dies another way, prints a FAIL line.
// Prints arena_malloc_is_active=N, then "misuse_invalid_frees ok" and exits 0, or FAIL lines and
// exits 1. Only meaningful preloaded (glibc lets several of these through).
//   cc -O0 -fno-builtin -pthread -o misuse_invalid_frees Tests/Fixtures/misuse_invalid_frees.c
//   env LD_PRELOAD=libArenaMalloc.so ./misuse_invalid_frees
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wuse-after-free"  // the misuse is the point
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"  // the point of the fixture
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat_fixture.h"
#include "misuse_fixture.h"

static void *shared;
static void *free_shared(void *unused) { (void)unused; free(shared); return NULL; }

static void small_double_free(void) { void *p = keep(malloc(32)); free(p); free(p); }
static void small_interior(void) { char *p = keep(malloc(48)); free(p + 8); }
static void small_usable_after_free(void) { void *p = keep(malloc(24)); free(p); (void)malloc_usable_size(p); }
static void small_double_free_other_thread(void) {
  shared = keep(malloc(64));
  free(shared);
  pthread_t t;
  pthread_create(&t, NULL, free_shared, NULL);
  pthread_join(t, NULL);
}
// A block of a run that was never handed out: carving stopped before it (a run of 1 KiB blocks
// has at least 16; the first refill carves a few).
static void small_never_handed_out(void) { char *p = keep(malloc(1000)); free(p + 12 * 1024); }
// A small block whose whole run went back to the page heap.
static void small_after_trim(void) {
  void *ps[2000];
  for (int i = 0; i < 2000; i++) ps[i] = keep(malloc(64));
  for (int i = 0; i < 2000; i++) free(ps[i]);
  malloc_trim(0);
  free(ps[1500]);
}
static void run_double_free_64k(void) { void *p = keep(malloc(64 << 10)); free(p); free(p); }
static void run_double_free_256k(void) { void *p = keep(malloc(256 << 10)); free(p); free(p); }
// The run was merged with free neighbours on both sides before the second free.
static void run_double_free_merged(void) {
  void *a = keep(malloc(64 << 10)), *b = keep(malloc(64 << 10)), *c = keep(malloc(64 << 10));
  keep(malloc(64 << 10));  // keeps c from merging with the free space after it
  free(a);
  free(c);
  free(b);
  free(b);
}
static void run_double_free_trimmed(void) { void *p = keep(malloc(256 << 10)); free(p); malloc_trim(0); free(p); }
static void run_realloc_after_free(void) { void *p = keep(malloc(512 << 10)); free(p); keep(realloc(p, 1 << 20)); }
static void run_interior(void) { char *p = keep(malloc(100 << 10)); free(p + 4096); }
static void run_usable_after_free(void) { void *p = keep(malloc(300 << 10)); free(p); (void)malloc_usable_size(p); }
static void huge_double_free(void) { void *p = keep(malloc(8 << 20)); free(p); free(p); }
static void huge_interior(void) { char *p = keep(malloc(8 << 20)); free(p + 4096); }
static void stack_pointer(void) { int x; free(keep(&x)); }
static void static_pointer(void) { static int s; free(keep(&s)); }

static const struct {
  const char *name;
  void (*run)(void);
} cases[] = {
    {"small double free", small_double_free},
    {"small interior pointer", small_interior},
    {"small malloc_usable_size after free", small_usable_after_free},
    {"small double free on another thread", small_double_free_other_thread},
    {"small block never handed out", small_never_handed_out},
    {"small block after its run was trimmed", small_after_trim},
    {"page run double free (64 KiB)", run_double_free_64k},
    {"page run double free (256 KiB)", run_double_free_256k},
    {"page run double free after merging", run_double_free_merged},
    {"page run double free after trim", run_double_free_trimmed},
    {"page run realloc after free", run_realloc_after_free},
    {"page run interior pointer", run_interior},
    {"page run malloc_usable_size after free", run_usable_after_free},
    {"huge double free", huge_double_free},
    {"huge interior pointer", huge_interior},
    {"stack pointer", stack_pointer},
    {"static pointer", static_pointer},
};

int main(void) {
  print_allocator();
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct misuse_outcome o = run_misuse_case(cases[i].run);
    if (!report_misuse(cases[i].name, &o, SIGABRT, 0)) failed = 1;
  }
  if (failed) return 1;
  printf("misuse_invalid_frees ok\n");
  return 0;
}
