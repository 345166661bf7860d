// Shared by the misuse fixtures (misuse_*.c): runs one case in a forked child with its stderr on a
// pipe, and says whether the allocator stopped it the documented way.
#ifndef ARENA_MISUSE_FIXTURE_H
#define ARENA_MISUSE_FIXTURE_H
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// Returns `p`, opaque to the compiler: it cannot drop the calls and writes around it, nor reason
// about writes past an object's end (undefined behaviour it could otherwise remove).
static void *volatile misuse_sink;
static inline void *keep(void *p) {
  misuse_sink = p;
  __asm__ volatile("" : "+r"(p));
  return p;
}

// What a case did: the signal that ended the child (0 if it exited) and its stderr.
struct misuse_outcome {
  int signal;
  char err[512];
  size_t err_length;
};

static struct misuse_outcome run_misuse_case(void (*run)(void)) {
  struct misuse_outcome o = {0};
  int fds[2];
  if (pipe(fds) != 0) { perror("pipe"); exit(1); }
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    run();
    _exit(0);
  }
  close(fds[1]);
  ssize_t got;
  while (o.err_length < sizeof o.err - 1 && (got = read(fds[0], o.err + o.err_length, sizeof o.err - 1 - o.err_length)) > 0)
    o.err_length += (size_t)got;
  o.err[o.err_length] = 0;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  o.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return o;
}

// Stopped the documented way: killed by `signal` (or by `other`, when nonzero) after exactly one
// line "arena: ..." on stderr that names a pointer.
static int misuse_was_stopped(const struct misuse_outcome *o, int signal, int other) {
  const char *newline = strchr(o->err, '\n');
  int one_line = newline != NULL && newline[1] == 0;
  return (o->signal == signal || (other && o->signal == other)) && strncmp(o->err, "arena: ", 7) == 0 &&
         strstr(o->err, "0x") != NULL && one_line;
}

// Prints "stopped: <name>: <the line>" if the case was stopped that way, else a FAIL line; returns
// whether it was stopped.
static int report_misuse(const char *name, const struct misuse_outcome *o, int signal, int other) {
  if (misuse_was_stopped(o, signal, other)) {
    printf("stopped: %s: %s", name, o->err);
    return 1;
  }
  printf("FAIL %s: %s, stderr \"%s\"\n", name, o->signal ? strsignal(o->signal) : "survived", o->err);
  return 0;
}

#endif
