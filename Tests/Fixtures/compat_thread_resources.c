// Per-thread resources are returned at thread exit, and the allocator adds none a program did not
// ask for.
//  (a) In a new thread, after its first malloc, sigaltstack(NULL, &ss) must report SS_DISABLE:
//      the allocator must not install an alternate signal stack (glibc never does).
//  (b) 5,000 short-lived threads (256 KiB stacks, 50 alive at a time), each doing a few
//      mallocs/frees: VmData may grow by less than 32 MiB. An allocator that leaks 64 KiB per
//      thread (e.g. an alternate signal stack never unmapped) grows by ~320 MiB.
//  (c) A forked child sets RLIMIT_DATA to its VmData + 128 MiB, runs 10,000 more such threads,
//      then must still be able to malloc(16 MiB) and touch it (a 64 KiB leak per thread exhausts
//      the limit after ~2,000 threads). The parent reports the child's verdict.
// Prints arena_malloc_is_active=N and name=value figures, then "compat_thread_resources ok" and
// exits 0, or "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_thread_resources Tests/Fixtures/compat_thread_resources.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_thread_resources
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { THREADS = 5000, CHILD_THREADS = 10000, BATCH = 50 };
static const long GROWTH_LIMIT = 32L << 20;
static const long CHILD_HEADROOM = 128L << 20;

static atomic_int failures;


static void *altstack_body(void *arg) {
  int *result = arg;
  char *volatile p = malloc(64);
  if (p) p[0] = 1;
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  if (sigaltstack(NULL, &ss) != 0) *result = -1;
  else *result = (ss.ss_flags & SS_DISABLE) ? 0 : 1;
  free(p);
  return NULL;
}

static void *short_body(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  void *volatile blocks[8];
  for (int i = 0; i < 8; i++) {
    size_t n = (size_t)16 << ((id + i) % 10);
    blocks[i] = malloc(n);
    if (!blocks[i]) { atomic_fetch_add(&failures, 1); continue; }
    memset(blocks[i], (int)i, n);
  }
  for (int i = 0; i < 8; i++) free(blocks[i]);
  return NULL;
}

// Runs `count` short threads, BATCH at a time; returns the number that could not be created.
static int run_threads(int count) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  int create_failures = 0;
  for (int first = 0; first < count; first += BATCH) {
    pthread_t t[BATCH];
    int started[BATCH];
    for (int i = 0; i < BATCH; i++) {
      started[i] = pthread_create(&t[i], &attr, short_body, (void *)(uintptr_t)(first + i)) == 0;
      if (!started[i]) create_failures++;
    }
    for (int i = 0; i < BATCH; i++) if (started[i]) pthread_join(t[i], NULL);
  }
  pthread_attr_destroy(&attr);
  return create_failures;
}

// The child of (c): exit 0 if everything worked, else 1..4 with a "child_..." line on stdout.
static void child_run(void) {
  long vmdata = status_bytes("VmData");
  struct rlimit rl = { (rlim_t)(vmdata + CHILD_HEADROOM), (rlim_t)(vmdata + CHILD_HEADROOM) };
  if (vmdata < 0 || setrlimit(RLIMIT_DATA, &rl) != 0) { printf("child_setrlimit_failed=%d\n", errno); fflush(stdout); _exit(2); }
  int create_failures = run_threads(CHILD_THREADS);
  long after = status_bytes("VmData");
  printf("child_vmdata_start_kib=%ld\nchild_vmdata_after_kib=%ld\nchild_create_failures=%d\n", vmdata >> 10, after >> 10,
         create_failures);
  size_t big = 16u << 20;
  char *volatile p = malloc(big);
  if (!p) { printf("child_malloc_16mib=failed\n"); fflush(stdout); _exit(3); }
  for (size_t i = 0; i < big; i += 4096) p[i] = (char)i;
  p[big - 1] = 1;
  free(p);
  printf("child_malloc_16mib=ok\n");
  fflush(stdout);
  _exit(create_failures || atomic_load(&failures) ? 4 : 0);
}

int main(void) {
  print_allocator();
  int ok = 1;

  // (a) No alternate signal stack appears in a thread that allocates.
  pthread_t t;
  int alt = -2;
  if (pthread_create(&t, NULL, altstack_body, &alt) != 0) { printf("FAIL pthread_create\n"); return 1; }
  pthread_join(t, NULL);
  printf("thread_has_altstack=%d\n", alt);
  if (alt != 0) {
    printf("FAIL %s\n", alt == 1 ? "an alternate signal stack was installed in a thread by its first malloc"
                                 : "sigaltstack query failed");
    ok = 0;
  }

  // (b) VmData after 5,000 short threads.
  run_threads(BATCH);  // warm-up: first-use costs of the thread machinery are not what is measured
  long before = status_bytes("VmData");
  int create_failures = run_threads(THREADS);
  long after = status_bytes("VmData");
  long growth = after - before;
  printf("vmdata_before_kib=%ld\nvmdata_after_%d_threads_kib=%ld\nvmdata_growth_kib=%ld\nvmdata_growth_per_thread_bytes=%ld\n",
         before >> 10, THREADS, after >> 10, growth >> 10, growth / THREADS);
  if (create_failures) { printf("FAIL %d of %d threads could not be created\n", create_failures, THREADS); ok = 0; }
  if (before < 0 || after < 0) { printf("FAIL cannot read VmData\n"); ok = 0; }
  else if (growth >= GROWTH_LIMIT)
    { printf("FAIL VmData grew by %ld KiB over %d short threads (limit %ld KiB): per-thread resources leak\n",
             growth >> 10, THREADS, GROWTH_LIMIT >> 10); ok = 0; }

  // (c) A child under RLIMIT_DATA = VmData + 128 MiB runs 10,000 threads, then mallocs 16 MiB.
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) { printf("FAIL fork: %s\n", strerror(errno)); return 1; }
  if (pid == 0) child_run();
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (WIFEXITED(status)) printf("child_exit=%d\n", WEXITSTATUS(status));
  else if (WIFSIGNALED(status)) printf("child_signal=%d\n", WTERMSIG(status));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf("FAIL child with RLIMIT_DATA = VmData + %ld MiB could not run %d threads and malloc 16 MiB\n",
           CHILD_HEADROOM >> 20, CHILD_THREADS);
    ok = 0;
  }
  if (atomic_load(&failures)) { printf("FAIL %d mallocs returned NULL in the threads\n", atomic_load(&failures)); ok = 0; }
  if (!ok) return 1;
  printf("compat_thread_resources ok\n");
  return 0;
}
