// The C ABI of libArenaMalloc.so beyond the malloc family (the libc names need no header).
#ifndef ARENA_MALLOC_H
#define ARENA_MALLOC_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
/// Marker: lets a program check at run time that ArenaAllocator serves its malloc.
int arena_malloc_is_active(void);
#ifdef __cplusplus
}
#endif
#endif
