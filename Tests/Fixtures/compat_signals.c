// Signal dispositions unchanged: the allocator must not install signal handlers, alternate signal
// stacks or write to stderr (glibc does none of these).
//  (a) The SIGSEGV and SIGBUS dispositions are read with raw sigaction queries before any malloc;
//      after a malloc and pthread_getattr_np on the main thread (which mallocs via fopen), both
//      must still be SIG_DFL (no SA_SIGINFO handler), and the main thread has no alternate stack.
//  (b) With the program's own SA_SIGINFO SIGSEGV handler installed, 100 times: a page inside a
//      malloc'd 64 KiB block is mprotect'ed PROT_NONE and written; the handler makes it
//      read-write again and counts. All 100 faults must reach the program's handler, the writes
//      must land, and the disposition must still be the program's handler afterwards.
//  (c) During (b) fd 2 is redirected to a pipe, which must stay empty (nothing like "arena: ...").
//  (d) The same as (b)+(c) in a child forked before the first malloc, where the program installs
//      its handler BEFORE its first malloc: after the malloc the disposition must still be the
//      program's own handler (an allocator that installs its own and chains fails here), every
//      fault reaches it and stderr stays empty.
// Prints arena_malloc_is_active=N and name=value figures, then "compat_signals ok" and exits 0, or
// "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o compat_signals Tests/Fixtures/compat_signals.c
//   timeout -s KILL 30 env LD_PRELOAD=libArenaMalloc.so ./compat_signals
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compat_fixture.h"

enum { FAULTS = 100, BLOCK = 64 << 10 };

static volatile sig_atomic_t fault_count;
static long page_size;

static void program_handler(int sig, siginfo_t *info, void *context) {
  (void)sig; (void)context;
  uintptr_t page = (uintptr_t)info->si_addr & ~(uintptr_t)(page_size - 1);
  fault_count++;
  if (mprotect((void *)page, (size_t)page_size, PROT_READ | PROT_WRITE) != 0) _exit(90);
}

static int install_program_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = program_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGSEGV, &sa, NULL);
}

static int is_program_handler(const struct sigaction *sa) {
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == program_handler;
}

static int is_default(const struct sigaction *sa) {
  return !(sa->sa_flags & SA_SIGINFO) && sa->sa_handler == SIG_DFL;
}

// Redirects fd 2 into a non-blocking pipe (a chatty allocator can't block on it); returns the
// saved fd 2 and sets *read_end, or -1.
static int redirect_stderr(int *read_end) {
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
  int saved = dup(STDERR_FILENO);
  if (saved < 0 || dup2(p[1], STDERR_FILENO) < 0) { close(p[0]); close(p[1]); return -1; }
  close(p[1]);
  *read_end = p[0];
  return saved;
}

// Restores fd 2; returns the bytes that had been written to it (first bytes in `sample`).
static long restore_stderr(int saved, int read_end, char *sample, size_t sample_size) {
  dup2(saved, STDERR_FILENO);
  close(saved);
  long total = 0;
  char buf[4096];
  ssize_t n;
  while ((n = read(read_end, buf, sizeof buf)) > 0) {
    if (total < (long)sample_size - 1) {
      size_t k = (size_t)n < sample_size - 1 - (size_t)total ? (size_t)n : sample_size - 1 - (size_t)total;
      memcpy(sample + total, buf, k);
      sample[total + (long)k] = 0;
    }
    total += n;
  }
  close(read_end);
  return total;
}

// The protect-and-write loop of (b). Returns the number of writes that did not land (or -1).
static int fault_loop(void) {
  unsigned char *block = malloc(BLOCK);
  if (!block) return -1;
  memset(block, 0x11, BLOCK);
  unsigned char *volatile page = (unsigned char *)(((uintptr_t)block + (uintptr_t)page_size) & ~(uintptr_t)(page_size - 1));
  int lost = 0;
  for (int i = 0; i < FAULTS; i++) {
    if (mprotect((void *)page, (size_t)page_size, PROT_NONE) != 0) { free(block); return -1; }
    page[i] = (unsigned char)(i + 1);  // faults; the handler makes the page writable; the write retries
    if (page[i] != (unsigned char)(i + 1)) lost++;
  }
  free(block);
  return lost;
}

// The child of (d): forked before the first malloc. Exit status: bit 1 disposition replaced by
// the first malloc, bit 2 stderr written, bit 4 faults lost or miscounted, bit 8 disposition
// replaced after the faults, 64 setup failure.
static void child_run(void) {
  alarm(10);  // default action: a fault loop that never ends kills the child
  if (install_program_handler() != 0) _exit(64);
  int read_end = -1;
  int saved = redirect_stderr(&read_end);
  if (saved < 0) _exit(64);
  char *volatile first = malloc(100);  // the first malloc of this process image
  if (first) first[0] = 1;
  struct sigaction now;
  sigaction(SIGSEGV, NULL, &now);
  int result = is_program_handler(&now) ? 0 : 1;
  fault_count = 0;
  int lost = fault_loop();
  if (lost != 0 || fault_count != FAULTS) result |= 4;
  sigaction(SIGSEGV, NULL, &now);
  if (!is_program_handler(&now)) result |= 8;
  char sample[200];
  sample[0] = 0;
  if (restore_stderr(saved, read_end, sample, sizeof sample) > 0) result |= 2;
  free(first);
  _exit(result);
}

int main(void) {
  page_size = sysconf(_SC_PAGESIZE);
  // Before any malloc: raw queries only, no stdio.
  struct sigaction segv0, bus0;
  sigaction(SIGSEGV, NULL, &segv0);
  sigaction(SIGBUS, NULL, &bus0);
  int child_status = -1;
  pid_t child = fork();
  if (child == 0) child_run();
  if (child > 0) while (waitpid(child, &child_status, 0) < 0 && errno == EINTR) {}

  print_allocator();
  int ok = 1;

  // (a)
  char *volatile p = malloc(1000);
  if (p) p[0] = 1;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) pthread_attr_destroy(&attr);
  struct sigaction segv1, bus1;
  sigaction(SIGSEGV, NULL, &segv1);
  sigaction(SIGBUS, NULL, &bus1);
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  sigaltstack(NULL, &ss);
  free(p);
  printf("sigsegv_default_before=%d\nsigbus_default_before=%d\n", is_default(&segv0), is_default(&bus0));
  printf("sigsegv_default_after_malloc=%d\nsigbus_default_after_malloc=%d\nmain_has_altstack=%d\n", is_default(&segv1),
         is_default(&bus1), !(ss.ss_flags & SS_DISABLE));
  if (!is_default(&segv0) || !is_default(&bus0))
    printf("note: SIGSEGV/SIGBUS were not SIG_DFL at start (inherited); checking they are unchanged instead\n");
  if (memcmp(&segv0.sa_handler, &segv1.sa_handler, sizeof segv0.sa_handler) != 0 || segv0.sa_flags != segv1.sa_flags)
    { printf("FAIL the SIGSEGV disposition changed after the first malloc (handler %p, flags %#x)\n",
             (void *)segv1.sa_handler, (unsigned)segv1.sa_flags); ok = 0; }
  if (memcmp(&bus0.sa_handler, &bus1.sa_handler, sizeof bus0.sa_handler) != 0 || bus0.sa_flags != bus1.sa_flags)
    { printf("FAIL the SIGBUS disposition changed after the first malloc (handler %p, flags %#x)\n",
             (void *)bus1.sa_handler, (unsigned)bus1.sa_flags); ok = 0; }
  if (!(ss.ss_flags & SS_DISABLE)) { printf("FAIL the main thread got an alternate signal stack\n"); ok = 0; }

  // (b) + (c)
  if (install_program_handler() != 0) { printf("FAIL sigaction: %s\n", strerror(errno)); return 1; }
  int read_end = -1;
  int saved = redirect_stderr(&read_end);
  if (saved < 0) { printf("FAIL cannot redirect stderr\n"); return 1; }
  fault_count = 0;
  int lost = fault_loop();
  int faults = fault_count;
  struct sigaction after;
  sigaction(SIGSEGV, NULL, &after);
  char sample[200];
  sample[0] = 0;
  long stderr_bytes = restore_stderr(saved, read_end, sample, sizeof sample);
  printf("faults_handled=%d\nwrites_lost=%d\nhandler_kept=%d\nstderr_bytes=%ld\n", faults, lost, is_program_handler(&after),
         stderr_bytes);
  if (lost != 0) { printf("FAIL %d of %d writes to the reprotected page did not land (%s)\n", lost, FAULTS, lost < 0 ? "setup" : "lost"); ok = 0; }
  if (faults != FAULTS) { printf("FAIL the program's SIGSEGV handler ran %d times, expected %d\n", faults, FAULTS); ok = 0; }
  if (!is_program_handler(&after)) { printf("FAIL the program's SIGSEGV handler was replaced\n"); ok = 0; }
  if (stderr_bytes) {
    char *nl = strchr(sample, '\n');
    if (nl) *nl = 0;
    printf("FAIL the allocator wrote %ld bytes to stderr, first line: %s\n", stderr_bytes, sample);
    ok = 0;
  }

  // (d)
  if (child < 0) { printf("FAIL fork: %s\n", strerror(errno)); ok = 0; }
  else if (WIFEXITED(child_status)) {
    int r = WEXITSTATUS(child_status);
    printf("child_status=%d\n", r);
    if (r & 64) { printf("FAIL child: setup failed\n"); ok = 0; }
    else {
      if (r & 1) { printf("FAIL child: the program's SIGSEGV handler, installed before the first malloc, was replaced by it\n"); ok = 0; }
      if (r & 2) { printf("FAIL child: the allocator wrote to stderr when the program's pages faulted\n"); ok = 0; }
      if (r & 4) { printf("FAIL child: faults lost or not all delivered to the program's handler\n"); ok = 0; }
      if (r & 8) { printf("FAIL child: the program's SIGSEGV handler was replaced after the faults\n"); ok = 0; }
    }
  } else {
    printf("child_signal=%d\n", WIFSIGNALED(child_status) ? WTERMSIG(child_status) : -1);
    printf("FAIL child: killed by signal %d\n", WIFSIGNALED(child_status) ? WTERMSIG(child_status) : -1);
    ok = 0;
  }
  if (!ok) return 1;
  printf("compat_signals ok\n");
  return 0;
}
