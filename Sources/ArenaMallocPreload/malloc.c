// The libc allocation names, defined in C (Swift must not define them: the names are reserved to
// the compiler, and Swift's protected ELF symbols would not interpose) and forwarded to the Swift
// core's @c functions. Each function here carries glibc's exact contract; the core carries none.
#define _GNU_SOURCE
#include "ArenaMalloc.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The Swift core's entry points. Hidden: the calls below become direct tail jumps, not PLT calls.
#define ARENA_CORE __attribute__((visibility("hidden")))
ARENA_CORE extern void *arena_malloc(size_t size);
ARENA_CORE extern void arena_free(void *p);
ARENA_CORE extern void *arena_calloc(size_t count, size_t size);
ARENA_CORE extern void *arena_realloc(void *p, size_t size);
ARENA_CORE extern void *arena_aligned_alloc(size_t alignment, size_t size);
ARENA_CORE extern size_t arena_usable_size(void *p);

#define ARENA_EXPORT __attribute__((visibility("default")))

ARENA_EXPORT int arena_malloc_is_active(void) { return 1; }

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

ARENA_EXPORT void *aligned_alloc(size_t alignment, size_t size) {
  // glibc accepts any power of two (C17 drops the size-multiple rule).
  return arena_aligned_alloc(alignment, size);
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

ARENA_EXPORT void *valloc(size_t size) { return arena_aligned_alloc((size_t)sysconf(_SC_PAGESIZE), size); }

ARENA_EXPORT void *pvalloc(size_t size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (size > SIZE_MAX - page) { errno = ENOMEM; return NULL; }
  size_t rounded = (size + page - 1) & ~(page - 1);
  return arena_aligned_alloc(page, rounded ? rounded : page);
}

ARENA_EXPORT size_t malloc_usable_size(void *p) { return arena_usable_size(p); }
