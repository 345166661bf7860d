// The C ABI of libArenaMalloc.so beyond the malloc family (the libc names need no header).
#ifndef ARENA_MALLOC_H
#define ARENA_MALLOC_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
/// Marker: lets a program check at run time that ArenaAllocator serves its malloc.
int arena_malloc_is_active(void);

/// Offers the whole pages of `block` (from malloc & co., larger than 32 KiB) to the kernel
/// (MADV_FREE): under memory pressure they may be discarded. Returns 0, or -1 with errno
/// (EINVAL: a smaller block, or already offered). The block must not be used until reclaimed;
/// it may be freed.
int arena_offer(void *block);
/// Takes an offered block back: 1 if every byte survived, 0 if any page was discarded (those
/// pages read as zero, the others keep their data), -1 with errno EINVAL if it was not offered.
int arena_reclaim(void *block);
#ifdef __cplusplus
}
#endif
#endif
