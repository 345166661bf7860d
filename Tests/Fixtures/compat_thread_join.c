// Hang on thread join: creating and joining many threads with default attributes (8 MiB stacks)
// must not hang. ROUNDS rounds of: start JOINABLE joinable threads that return at once, join
// them; then DETACHED detached threads that each do one malloc/free and exit, waited for with an
// atomic counter and short sleeps (bounded). A faulty allocator that deadlocks in thread
// creation/exit (seen with >= ~44 threads with 8 MiB stacks alive at once) hangs here; the hang
// may block signals, so the harness's `timeout -s KILL` is the real guard, alarm(15) only a backup.
// Afterwards the process must be single-threaded again within 3 s, as under glibc (a background
// thread the allocator started must not stay for good).
// Prints arena_malloc_is_active=N, elapsed_ms=N, then "compat_thread_join ok" and exits 0, or
// "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_thread_join Tests/Fixtures/compat_thread_join.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_thread_join
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { ROUNDS = 6, JOINABLE = 60, DETACHED = 60 };

static atomic_int detached_done;
static atomic_int failures;

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "FAIL hang: threads not created/joined within 15 s\n";
  ssize_t w = write(STDOUT_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(1);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *joinable_body(void *arg) { return arg; }

static void *detached_body(void *arg) {
  (void)arg;
  char *volatile p = malloc(100);
  if (!p) atomic_fetch_add(&failures, 1);
  else { p[0] = 1; p[99] = 2; }
  free(p);
  atomic_fetch_add(&detached_done, 1);
  return NULL;
}

int main(void) {
  print_allocator();
  signal(SIGALRM, on_alarm);
  alarm(15);
  double t0 = now_ms();
  int ok = 1;
  for (int round = 0; round < ROUNDS && ok; round++) {
    pthread_t t[JOINABLE];
    int started = 0;
    for (int i = 0; i < JOINABLE; i++) {
      int rc = pthread_create(&t[i], NULL, joinable_body, (void *)(uintptr_t)(i + 1));
      if (rc) { printf("FAIL round %d: pthread_create (joinable #%d): %s\n", round, i, strerror(rc)); ok = 0; break; }
      started++;
    }
    for (int i = 0; i < started; i++) {
      void *ret = NULL;
      int rc = pthread_join(t[i], &ret);
      if (rc) { printf("FAIL round %d: pthread_join: %s\n", round, strerror(rc)); ok = 0; }
      else if ((uintptr_t)ret != (uintptr_t)(i + 1)) { printf("FAIL round %d: thread %d returned %p\n", round, i, ret); ok = 0; }
    }
  }
  // One round of detached threads, each doing one malloc/free.
  int launched = 0;
  if (ok) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < DETACHED; i++) {
      pthread_t t;
      int rc = pthread_create(&t, &attr, detached_body, NULL);
      if (rc) { printf("FAIL pthread_create (detached #%d): %s\n", i, strerror(rc)); ok = 0; break; }
      launched++;
    }
    pthread_attr_destroy(&attr);
    // Bounded wait: up to 10 s in 1 ms steps.
    for (int waited = 0; atomic_load(&detached_done) < launched && waited < 10000; waited++) usleep(1000);
    if (atomic_load(&detached_done) < launched) {
      printf("FAIL only %d of %d detached threads finished within 10 s\n", atomic_load(&detached_done), launched);
      ok = 0;
    }
  }
  double elapsed = now_ms() - t0;
  alarm(0);
  printf("rounds=%d\njoinable_per_round=%d\ndetached=%d\nelapsed_ms=%.0f\n", ROUNDS, JOINABLE, launched, elapsed);
  if (atomic_load(&failures)) { printf("FAIL %d mallocs returned NULL in detached threads\n", atomic_load(&failures)); ok = 0; }
  // Once every thread is joined or gone the program is single-threaded again, as under glibc
  // (unshare(CLONE_NEWUSER) and friends need that): no helper thread may stay behind for good.
  long threads = -1;
  for (int waited = 0; waited < 3000; waited += 10) {
    threads = status_bytes("Threads") / 1024;
    if (threads == 1) break;
    usleep(10000);
  }
  printf("threads_after_join=%ld\n", threads);
  if (threads != 1) { printf("FAIL %ld threads remain 3 s after every thread was joined or exited\n", threads); ok = 0; }
  if (!ok) return 1;
  printf("compat_thread_join ok\n");
  return 0;
}
