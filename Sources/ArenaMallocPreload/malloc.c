// The libc allocation names, defined in C (Swift must not define them: the names are reserved to
// the compiler, and Swift's protected ELF symbols would not interpose) and forwarded to the Swift
// core's @c functions. Each function here carries glibc's exact contract; the core carries none.
//
// The same file builds the ArenaMallocLinked product (ARENA_LINKED), whose core is the regular
// Swift compilation: in a debug build (-Onone) that code calls the Swift runtime for generic
// metadata, which would re-enter malloc, so there the names are not defined and glibc's malloc
// stays in place. Optimized builds get the arena.
#define _GNU_SOURCE
#include "ArenaMalloc.h"

#if !(defined(ARENA_LINKED) && defined(DEBUG))

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "CSystemShims.h"

// The Swift core's entry points. Hidden: the calls below become direct tail jumps, not PLT calls.
#define ARENA_CORE __attribute__((visibility("hidden")))
ARENA_CORE extern void *arena_malloc(size_t size);
ARENA_CORE extern void arena_free(void *p);
ARENA_CORE extern void *arena_calloc(size_t count, size_t size);
ARENA_CORE extern void *arena_realloc(void *p, size_t size);
ARENA_CORE extern void *arena_aligned_alloc(size_t alignment, size_t size);
ARENA_CORE extern size_t arena_usable_size(void *p);
ARENA_CORE extern int arena_trim(void);
ARENA_CORE extern int arena_offer_block(void *p);
ARENA_CORE extern int arena_reclaim_block(void *p);
extern long arena_statistics(uint64_t *out, long count);
ARENA_CORE extern void arena_safe_point_load(void);
ARENA_CORE extern void arena_safe_point_thread(void);
ARENA_CORE extern int arena_wants_thread_alt_stack(void);
ARENA_CORE extern void arena_thread_started(void);

#define ARENA_EXPORT __attribute__((visibility("default")))

ARENA_EXPORT int arena_malloc_is_active(void) { return 1; }

// MARK: - Safe points (SafePoint.swift): the only places that set up anything process-wide

static void write_stats(int fd);

// With stats:on, a copy of stderr taken at load: programs often close stderr before they exit
// (coreutils' close_stdout does), and the statistics still belong there.
static int stats_fd = -1;

// Load: before main (or at dlopen), on the only thread. Starts no thread. libc's pthread_create
// is looked up here, so the wrapper below never calls dlsym (which takes the loader's lock). The
// load safe point has read ARENA_OPTIONS.
__attribute__((constructor)) static void arena_at_load(void) {
  arena_safe_point_load();
  (void)arena_next_pthread_create();
  if (arena_globals.options.stats_at_exit) stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 64);
}

// Exit (exit() or return from main, not _exit): with stats:on, the statistics on stderr, as
// malloc_stats() prints them.
__attribute__((destructor)) static void arena_at_exit(void) {
  if (stats_fd >= 0) write_stats(stats_fd);
}

// Every thread created through the wrapper starts in this trampoline: it takes its thread cache
// (and with it its thread-exit hook) before the program's start routine runs, so the frees glibc
// makes on the thread's exit path, after the exit hooks ran, never create a cache that could not be
// handed back. With fault_handler:on it also gives itself an alternate signal stack (released by a
// thread-exit hook). The start record is freed at once.
struct arena_thread_start {
  void *(*routine)(void *);
  void *argument;
  int alt_stack;
};

static void *arena_thread_trampoline(void *raw) {
  struct arena_thread_start start = *(struct arena_thread_start *)raw;
  arena_thread_started();
  free(raw);
  if (start.alt_stack) arena_thread_alt_stack();
  return start.routine(start.argument);
}

// Thread creation: the program calls pthread_create itself, so no libc lock that pthread_create
// needs is held, and the scavenger thread can be started the same way. The program's thread is
// created first: under RLIMIT_NPROC or a pids limit the scavenger takes only what is left (the
// free paths release memory when it cannot start). glibc's own threads (timer and AIO helpers)
// are created internally and do not pass here; they need no safe point.
ARENA_EXPORT int pthread_create(pthread_t *restrict thread, const pthread_attr_t *restrict attr,
                                void *(*routine)(void *), void *restrict argument) {
  arena_pthread_create_t next = arena_next_pthread_create();
  int error;
  struct arena_thread_start *start = malloc(sizeof *start);
  if (start) {
    start->routine = routine;
    start->argument = argument;
    start->alt_stack = arena_wants_thread_alt_stack();
    error = next(thread, attr, arena_thread_trampoline, start);
    if (error) free(start);
  } else {
    error = next(thread, attr, routine, argument);  // out of memory: the thread starts without
  }
  if (error == 0) {
    int saved = errno;
    arena_safe_point_thread();
    errno = saved;
  }
  return error;
}

ARENA_EXPORT void *malloc(size_t size) { return arena_malloc(size); }
ARENA_EXPORT void free(void *p) { arena_free(p); }
ARENA_EXPORT void cfree(void *p) { arena_free(p); }
ARENA_EXPORT void *calloc(size_t count, size_t size) { return arena_calloc(count, size); }
ARENA_EXPORT void *realloc(void *p, size_t size) { return arena_realloc(p, size); }

ARENA_EXPORT void *reallocarray(void *p, size_t count, size_t size) {
  size_t bytes;
  if (__builtin_mul_overflow(count, size, &bytes)) { errno = ENOMEM; return NULL; }
  return arena_realloc(p, bytes);
}

ARENA_EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
  // POSIX: a power of two that is a multiple of sizeof(void *); errno is left alone.
  if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
  int saved = errno;
  void *p = arena_aligned_alloc(alignment, size);
  if (!p) { errno = saved; return ENOMEM; }
  *out = p;
  return 0;
}

ARENA_EXPORT void *memalign(size_t alignment, size_t size) {
  // glibc rounds a non-power-of-two alignment up to the next power of two.
  if (alignment > (SIZE_MAX >> 1) + 1) { errno = EINVAL; return NULL; }
  if (alignment & (alignment - 1)) {
    size_t a = 1;
    while (a < alignment) a <<= 1;
    alignment = a;
  }
  return arena_aligned_alloc(alignment ? alignment : 1, size);
}

ARENA_EXPORT void *aligned_alloc(size_t alignment, size_t size) {
  // glibc 2.36 serves aligned_alloc as memalign: 0 and non-powers of two are rounded up, not
  // refused (C17 drops the size-multiple rule; glibc 2.38 starts refusing non-powers of two).
  return memalign(alignment, size);
}

ARENA_EXPORT void *valloc(size_t size) { return arena_aligned_alloc((size_t)sysconf(_SC_PAGESIZE), size); }

ARENA_EXPORT void *pvalloc(size_t size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (size > SIZE_MAX - page) { errno = ENOMEM; return NULL; }
  size_t rounded = (size + page - 1) & ~(page - 1);
  return arena_aligned_alloc(page, rounded ? rounded : page);
}

ARENA_EXPORT size_t malloc_usable_size(void *p) { return arena_usable_size(p); }

ARENA_EXPORT int arena_offer(void *block) { return arena_offer_block(block); }
ARENA_EXPORT int arena_reclaim(void *block) { return arena_reclaim_block(block); }

ARENA_EXPORT int malloc_trim(size_t pad) {
  (void)pad;  // everything free is released; a pad would only keep memory the scavenger frees later
  return arena_trim();
}

enum { STAT_RESERVED, STAT_COMMITTED, STAT_METADATA, STAT_LIVE, STAT_SMALL_LIVE, STAT_LARGE_LIVE,
       STAT_LARGE_COUNT, STAT_HUGE_LIVE, STAT_HUGE_COUNT, STAT_CACHED, STAT_FREE_DIRTY,
       STAT_FREE_CLEAN, STAT_FREE_DECOMMITTED, STAT_PURGED_TOTAL, STAT_DECOMMITTED_TOTAL,
       STAT_RESERVATIONS, STAT_COMMIT_CALLS, STAT_SCAVENGER_CPU_NS, STAT_SCAVENGER_PASSES,
       STAT_OFFERED, STAT_RECLAIMED_INTACT, STAT_DISCARDED, STAT_CACHE_RECLAIMED, STAT_COUNT };

ARENA_EXPORT struct mallinfo2 mallinfo2(void) {
  uint64_t s[STAT_COUNT];
  arena_statistics(s, STAT_COUNT);
  struct mallinfo2 m;
  memset(&m, 0, sizeof m);
  m.arena = s[STAT_COMMITTED];                       // committed arena memory
  m.hblks = s[STAT_HUGE_COUNT];                      // blocks in their own mappings
  m.hblkhd = s[STAT_HUGE_LIVE];
  m.uordblks = s[STAT_LIVE] - s[STAT_HUGE_LIVE];     // in use inside the arena
  m.fordblks = s[STAT_COMMITTED] > m.uordblks ? s[STAT_COMMITTED] - m.uordblks : 0;
  m.fsmblks = s[STAT_CACHED];                        // free blocks parked in thread and transfer caches
  m.keepcost = s[STAT_FREE_DIRTY];                   // releasable by malloc_trim now
  return m;
}

static size_t clamp_int(size_t v) { return v > (size_t)0x7fffffff ? (size_t)0x7fffffff : v; }

ARENA_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo m;
  memset(&m, 0, sizeof m);
  m.arena = (int)clamp_int(m2.arena);
  m.hblks = (int)clamp_int(m2.hblks);
  m.hblkhd = (int)clamp_int(m2.hblkhd);
  m.uordblks = (int)clamp_int(m2.uordblks);
  m.fordblks = (int)clamp_int(m2.fordblks);
  m.fsmblks = (int)clamp_int(m2.fsmblks);
  m.keepcost = (int)clamp_int(m2.keepcost);
  return m;
}

// Formats without stdio (stdio may allocate): "label value\n".
static size_t put_line(char *buf, size_t at, size_t cap, const char *label, uint64_t value) {
  while (*label && at < cap) buf[at++] = *label++;
  char digits[24];
  int n = 0;
  do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value);
  while (n && at < cap) buf[at++] = digits[--n];
  if (at < cap) buf[at++] = '\n';
  return at;
}

ARENA_EXPORT void malloc_stats(void) { write_stats(2); }

static void write_stats(int fd) {
  uint64_t s[STAT_COUNT];
  arena_statistics(s, STAT_COUNT);
  char buf[1024];
  size_t at = 0, cap = sizeof buf;
  at = put_line(buf, at, cap, "ArenaAllocator\nreserved bytes     = ", s[STAT_RESERVED]);
  at = put_line(buf, at, cap, "committed bytes    = ", s[STAT_COMMITTED]);
  at = put_line(buf, at, cap, "metadata bytes     = ", s[STAT_METADATA]);
  at = put_line(buf, at, cap, "in use bytes       = ", s[STAT_LIVE]);
  at = put_line(buf, at, cap, "cached bytes       = ", s[STAT_CACHED]);
  at = put_line(buf, at, cap, "free dirty bytes   = ", s[STAT_FREE_DIRTY]);
  at = put_line(buf, at, cap, "free clean bytes   = ", s[STAT_FREE_CLEAN]);
  at = put_line(buf, at, cap, "decommitted bytes  = ", s[STAT_FREE_DECOMMITTED]);
  at = put_line(buf, at, cap, "huge mappings      = ", s[STAT_HUGE_COUNT]);
  at = put_line(buf, at, cap, "purged total       = ", s[STAT_PURGED_TOTAL]);
  at = put_line(buf, at, cap, "decommitted total  = ", s[STAT_DECOMMITTED_TOTAL]);
  at = put_line(buf, at, cap, "idle caches taken  = ", s[STAT_CACHE_RECLAIMED]);
  at = put_line(buf, at, cap, "scavenger cpu ns   = ", s[STAT_SCAVENGER_CPU_NS]);
  int saved = errno;
  size_t off = 0;
  while (off < at) {
    ssize_t w = write(fd, buf + off, at - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  errno = saved;
}

#else  // ARENA_LINKED && DEBUG

// A debug build of a program that links ArenaMallocLinked keeps glibc's malloc (see above). It
// says so rather than doing nothing silently: one line on stderr at start-up when stderr is a
// terminal (a person running the program), and arena_malloc_is_active() answers 0.
#include <unistd.h>

__attribute__((visibility("default"))) int arena_malloc_is_active(void) { return 0; }

__attribute__((constructor)) static void arena_linked_debug_note(void) {
  static const char note[] =
      "arena: ArenaMallocLinked is inactive in a debug build, malloc stays glibc's "
      "(build with -c release, or preload libArenaMalloc.so)\n";
  if (isatty(2)) (void)!write(2, note, sizeof note - 1);
}

#endif  // !(ARENA_LINKED && DEBUG)
