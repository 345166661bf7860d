// Shared by the compatibility fixtures (compat_*.c): the first output line, and /proc fields read
// without allocating (open/read only), so that measuring a program does not change what the
// allocator under test sees.
#ifndef ARENA_COMPAT_FIXTURE_H
#define ARENA_COMPAT_FIXTURE_H
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// A "Name:  N kB" field of a /proc file, in bytes; -1 if missing.
static long proc_field(const char *path, const char *field) {
  char buf[8192];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  size_t len = strlen(field);
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, field, len) == 0 && line[len] == ':') return strtol(line + len + 1, NULL, 10) * 1024;
  return -1;
}

// A field of /proc/self/status (VmData, VmRSS, VmSize, ...) in bytes; -1 if missing.
static inline long status_bytes(const char *field) { return proc_field("/proc/self/status", field); }

// Line-buffered stdout, then "arena_malloc_is_active=N" (1 when the arena serves malloc): the
// harness checks it to know the allocator under test really ran.
static void print_allocator(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int (*is_active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "arena_malloc_is_active");
  printf("arena_malloc_is_active=%d\n", is_active ? is_active() : 0);
  fflush(stdout);
}

#endif
