// Heap misuse a hardened heap (ARENA_OPTIONS=hardened:on) must stop: overflows and underflows of
// small blocks, overflows into a page run's slack or past its guard page, writes into freed small
// blocks and corrupted free-list links. Each case runs in a forked child with stderr on a pipe;
// the child must die (SIGABRT, or SIGSEGV for a guard page) after writing one line "arena: ..."
// that names a pointer (0x...). Without hardening most of these pass silently, which the
// harness also checks (the first case must survive there). Prints arena_malloc_is_active=N and
// hardened=N, then "misuse_hardened ok" and exits 0, or FAIL lines and exits 1.
//   cc -O2 -pthread -o misuse_hardened Tests/Fixtures/misuse_hardened.c
//   env LD_PRELOAD=libArenaMalloc.so ARENA_OPTIONS=hardened:on ./misuse_hardened
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wuse-after-free"  // the misuse is the point
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat_fixture.h"
#include "misuse_fixture.h"

static void scribble(void *p, int byte, size_t n) { memset(keep(p), byte, n); }

static void overflow_small(void) { char *p = keep(malloc(24)); scribble(p + 24, 'A', 40); free(p); }
static void overflow_small_by_one(void) { char *p = keep(malloc(100)); scribble(p + 100, 'a', 1); free(p); }
static void underflow_small(void) {
  char *before = keep(malloc(40)), *p = keep(malloc(40));
  (void)before;
  scribble(p - 16, 'B', 16);
  free(p);
}
static void overflow_page_run_slack(void) { char *p = keep(malloc(100000)); scribble(p + 100000, 'C', 100); free(p); }
static void overflow_past_page_run(void) { char *p = keep(malloc(100 << 10)); scribble(p + (100 << 10), 'D', 4096 + 64); free(p); }
static void write_after_free_small(void) {
  char *p = keep(malloc(32));
  free(p);
  scribble(p + 16, 'E', 8);
  for (int i = 0; i < 64; i++) keep(malloc(32));
}
static void write_after_free_link(void) {
  char *p = keep(malloc(32));
  free(p);
  scribble(p, 'F', 8);
  for (int i = 0; i < 64; i++) keep(malloc(32));
}
static void write_after_free_bigger_block(void) {
  char *p = keep(malloc(2000));
  free(p);
  scribble(p + 200, 'G', 1);  // freed blocks are poisoned in their first 256 bytes
  for (int i = 0; i < 64; i++) keep(malloc(2000));
}
static void realloc_after_overflow(void) { char *p = keep(malloc(48)); scribble(p + 48, 'H', 16); keep(realloc(p, 4000)); }

static const struct {
  const char *name;
  void (*run)(void);
} cases[] = {
    {"40 bytes written past a 24-byte block", overflow_small},
    {"1 byte written past a 100-byte block", overflow_small_by_one},
    {"16 bytes written before a 40-byte block", underflow_small},
    {"100 bytes written past a 100000-byte block (its slack)", overflow_page_run_slack},
    {"4 KiB + 64 bytes written past a 100 KiB block", overflow_past_page_run},
    {"a freed 32-byte block written, then more allocated", write_after_free_small},
    {"a freed block's free-list link overwritten", write_after_free_link},
    {"a freed 2000-byte block written, then more allocated", write_after_free_bigger_block},
    {"realloc of an overflowed block", realloc_after_overflow},
};

int main(void) {
  print_allocator();
  const char *options = getenv("ARENA_OPTIONS");
  int hardened = options && (strstr(options, "hardened:on") || strstr(options, "guard_pages:on"));
  printf("hardened=%d\n", hardened);
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct misuse_outcome o = run_misuse_case(cases[i].run);
    if (!hardened) {
      // Without hardening the first case passes silently: proof the hardened checks did the work.
      if (i == 0 && (o.signal || o.err_length)) { printf("FAIL %s stopped without hardening: \"%s\"\n", cases[i].name, o.err); failed = 1; }
      continue;
    }
    // SIGSEGV: a guard page, described by the fault handler.
    if (!report_misuse(cases[i].name, &o, SIGABRT, SIGSEGV)) failed = 1;
  }
  if (failed) return 1;
  printf("misuse_hardened ok\n");
  return 0;
}
