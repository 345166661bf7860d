// CSystemShims: the only code in ArenaAllocator that talks to the kernel.
//
// Everything above this layer is written in Swift and must never allocate or call the Swift
// runtime, so this header also carries the few things Swift cannot express without the runtime:
// initial-exec thread-locals, atomics on raw memory, a futex lock, errno, and a fatal-error writer
// that formats without malloc. Every system-call wrapper returns 0 or the errno it failed with;
// nothing here hides an error.
#ifndef ARENA_CSYSTEMSHIMS_H
#define ARENA_CSYSTEMSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#pragma clang assume_nonnull begin

// MARK: - Virtual memory (the whole kernel interface of the allocator)

/// Reserves `size` bytes of address space as PROT_NONE + MAP_NORESERVE: costs no commit charge in
/// any overcommit mode. Returns 0 and the base in `*out`, or the errno (ENOMEM under RLIMIT_AS).
int arena_sys_reserve(size_t size, void *_Nullable *_Nonnull out);
/// Commits a range inside a reservation (mprotect RW). Charged against the commit limit; fails
/// with ENOMEM under vm.overcommit_memory=2 or RLIMIT_DATA. Commit within one VMA of uniform state:
/// a multi-VMA mprotect is not atomic on failure (roll back with arena_sys_decommit).
int arena_sys_commit(void *_Nullable addr, size_t size);
/// Decommits a range: replaces it by a fresh PROT_NONE MAP_NORESERVE mapping (MAP_FIXED). The
/// contents are dropped and the commit charge is given back; neighbouring PROT_NONE VMAs merge.
int arena_sys_decommit(void *_Nullable addr, size_t size);
/// Purges a committed range with MADV_DONTNEED: RSS drops at once, the commit charge stays, the
/// pages read back as zero.
int arena_sys_purge(void *_Nullable addr, size_t size);
/// Offers a committed range with MADV_FREE: RSS only drops under memory pressure.
int arena_sys_purge_lazy(void *_Nullable addr, size_t size);
/// Marks a range MADV_NOHUGEPAGE so khugepaged never re-inflates a region released in pieces.
int arena_sys_no_huge_pages(void *_Nullable addr, size_t size);
/// Makes a committed range fault on access without changing its VMA: MADV_GUARD_INSTALL where the
/// kernel has it (6.13+), else mprotect PROT_NONE (which splits the VMA).
int arena_sys_guard_install(void *_Nullable addr, size_t size);
/// Undoes arena_sys_guard_install (the range reads as zero afterwards).
int arena_sys_guard_remove(void *_Nullable addr, size_t size);
/// Maps `size` committed read-write bytes of their own (huge allocations).
int arena_sys_map(size_t size, void *_Nullable *_Nonnull out);
/// Grows or shrinks a mapping made by arena_sys_map, moving it if needed (mremap MAYMOVE).
int arena_sys_remap(void *_Nullable addr, size_t old_size, size_t new_size, void *_Nullable *_Nonnull out);
/// Unmaps a range (a reservation, a trimmed head or tail, a huge allocation).
int arena_sys_release(void *_Nullable addr, size_t size);

/// The system page size (4096 here); read once.
size_t arena_sys_page_size(void);
/// /proc/sys/vm/overcommit_memory (0, 1 or 2), read with open/read/close (never malloc), once.
int arena_sys_overcommit_mode(void);
/// Monotonic clock in nanoseconds at tick resolution (CLOCK_MONOTONIC_COARSE: vDSO, no syscall,
/// no TSC read; 1-4 ms steps).
uint64_t arena_sys_now_ns(void);
/// Resident set size of the process in bytes, read from /proc/self/statm without malloc; 0 on error.
uint64_t arena_sys_resident_bytes(void);
/// Number of VMAs of the process (lines of /proc/self/maps), counted without malloc; -1 on error.
long arena_sys_vma_count(void);
/// 64 random bits from the kernel (AT_RANDOM / getrandom), never zero.
uint64_t arena_sys_random64(void);
/// Threads of the process (field 20 of /proc/self/stat, read without malloc); -1 on error.
long arena_sys_thread_count(void);
/// The RLIMIT_AS soft limit in bytes, or UINT64_MAX when there is none.
uint64_t arena_sys_address_space_limit(void);
/// CPU time used by the calling thread, in nanoseconds.
uint64_t arena_sys_thread_cpu_ns(void);
/// Sleeps the calling thread for `ns` nanoseconds (restarted on EINTR).
void arena_sys_sleep_ns(uint64_t ns);
/// Starts a detached thread running `body(NULL)` with every signal blocked. Returns 0 or an errno.
/// Creates a thread: call it only at a safe point (SafePoint.swift), never from inside malloc or
/// free, where libc may hold the locks pthread_create needs. Uses the next `pthread_create` after
/// this library's own (the library interposes it to find safe points).
int arena_sys_thread_start(void (*body)(void *_Nullable));
/// The `pthread_create` this library's wrapper forwards to: the next definition after the caller
/// (libc's), resolved once with dlsym(RTLD_NEXT). Resolve it at a safe point first (dlsym may
/// take the loader's lock).
typedef int (*arena_pthread_create_t)(void *thread, const void *_Nullable attr,
                                      void *_Nullable (*start)(void *_Nullable), void *_Nullable arg);
arena_pthread_create_t _Nullable arena_next_pthread_create(void);
/// Parses ARENA_OPTIONS (getenv, no malloc) into `arena_globals.options`, once.
void arena_options_load(void);
/// Parses ARENA_OPTIONS again (tests that change it after the allocator has started).
void arena_options_reload(void);

// MARK: - Fault handler
//
// Nothing here is installed unless the user asks for it (ARENA_OPTIONS fault_handler:on or
// commit_probe:on), and then only at a safe point (SafePoint.swift): the process sees the signal
// dispositions, alternate stacks and stderr output it would see under glibc.

/// Describes a faulting address into `buffer` (one line, no allocation, async-signal-safe);
/// returns its length, or 0 if the address is outside every arena.
typedef size_t (*arena_fault_describer_t)(uintptr_t address, char *buffer, size_t capacity);

/// Installs the SIGSEGV/SIGBUS handler once (SA_SIGINFO | SA_ONSTACK | SA_NODEFER), saving the
/// previous handlers. A fault is passed to the previous handler when there is one, silently (the
/// program handles its own faults). Where the previous disposition was SIG_DFL or SIG_IGN, a
/// fault the describer recognises gets one line on stderr (when `describe` is set), the default
/// action is restored and the handler returns, so the fault re-raises with the usual signal and
/// core. Returns 0 or an errno.
int arena_fault_handler_install(arena_fault_describer_t describer, int describe);
/// Whether the fault handler is installed.
int arena_fault_handler_installed(void);
/// Touches one byte per page of [addr, addr+size) (reading and writing back the same value) under
/// a per-thread sigsetjmp guard: a SIGSEGV/SIGBUS inside the range makes it return EFAULT instead
/// of killing the process. Needs the fault handler (ARENA_OPTIONS commit_probe:on installs it at
/// load): without it nothing is touched and 0 is returned. Protects against faults the kernel
/// does deliver (file-backed or hugetlb memory, injected faults, a protected page); on this kernel
/// real memory exhaustion is a SIGKILL from the OOM killer, which nothing can catch.
int arena_probe_range(void *addr, size_t size);

/// Gives the calling thread its own alternate signal stack (mmap'd, at least 64 KiB) if it has
/// none, so a stack-overflow fault can still be diagnosed; the stack is disabled and unmapped when
/// the thread exits (a pthread key destructor). Only for `fault_handler:on`, at a safe point: the
/// load of the library (main thread) and the start of each thread created through pthread_create.
/// Returns 0 or an errno.
int arena_thread_alt_stack(void);

// MARK: - errno

void arena_set_errno(int value);
int arena_get_errno(void);

// MARK: - Fatal diagnosis

/// Writes one line "arena: <what> <pointer>\n" to stderr with write(2) and aborts. Never allocates.
_Noreturn void arena_fatal_pointer(const char *what, const void *_Nullable pointer);
/// Writes one line "arena: <what> <pointer> (<detail> <number>)\n" and aborts.
_Noreturn void arena_fatal_pointer_detail(const char *what, const void *_Nullable pointer,
                                          const char *detail, uint64_t number);

// MARK: - Thread-locals (initial-exec: one %fs-relative load, no __tls_get_addr, no malloc)

/// A thread's allocator slot: `cache` is 0 (no cache yet), 1 (the thread is exiting), 2 (the cache
/// is lent to the scavenger, which is emptying it: use the centrals) or the cache's address.
/// `busy` counts the allocator calls of this thread that hold the cache (nested calls balance).
/// The owner raises `busy` before it reads `cache`; the scavenger stores 2 into `cache`, issues
/// membarrier(PRIVATE_EXPEDITED) (a full barrier on every running thread of the process) and then
/// reads `busy`: either it sees the owner busy and gives the cache back at once, or the owner's
/// next read of `cache` sees 2. The owner's fast path thus pays two plain stores and no fence.
typedef struct {
  void *_Nullable cache;
  uintptr_t busy;
  /// Frees this thread made while it had no cache (the cache is created by its first malloc, or
  /// by its 32nd free: see ThreadCaches.enterOrCreateForFree).
  uintptr_t uncached_frees;
} arena_tls_t;

extern __thread arena_tls_t arena_tls __attribute__((tls_model("initial-exec")));

static inline void *_Nullable arena_tls_get(void) { return __atomic_load_n(&arena_tls.cache, __ATOMIC_RELAXED); }
/// Counts a free made without a cache; returns the count so far.
static inline uintptr_t arena_tls_count_uncached_free(void) { return ++arena_tls.uncached_frees; }
static inline void arena_tls_set(void *_Nullable value) { __atomic_store_n(&arena_tls.cache, value, __ATOMIC_RELAXED); }
/// Marks the calling thread as holding its cache, then reads the slot.
static inline void *_Nullable arena_tls_enter(void) {
  __atomic_store_n(&arena_tls.busy, __atomic_load_n(&arena_tls.busy, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);  // the compiler must not read the slot first
  return __atomic_load_n(&arena_tls.cache, __ATOMIC_RELAXED);
}
/// Ends an `arena_tls_enter`: every write to the cache before it is visible to the scavenger.
static inline void arena_tls_leave(void) {
  __atomic_store_n(&arena_tls.busy, __atomic_load_n(&arena_tls.busy, __ATOMIC_RELAXED) - 1, __ATOMIC_RELEASE);
}
/// The calling thread's slot, for another thread to reach it (scavenger, fork child).
static inline arena_tls_t *_Nonnull arena_tls_address(void) { return &arena_tls; }
static inline void arena_tls_remote_set(arena_tls_t *_Nonnull slot, void *_Nullable value) {
  __atomic_store_n(&slot->cache, value, __ATOMIC_RELEASE);
}
static inline uintptr_t arena_tls_remote_busy(const arena_tls_t *_Nonnull slot) {
  return __atomic_load_n(&slot->busy, __ATOMIC_ACQUIRE);
}

/// Registers for and issues membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): returns 0 when every
/// running thread of the process has passed a full memory barrier, -1 when the kernel offers no
/// such barrier (then thread caches are never taken from their owners).
int arena_sys_membarrier(void);

/// Creates the thread-exit key for `hook` once (at load, before the program can use up its
/// 1,024 keys). Returns 0 or an errno.
int arena_thread_exit_prepare(void (*hook)(void *_Nullable));
/// Arranges for `hook(value)` to run when the calling thread exits (a pthread key destructor).
/// The key is created once; pthread_setspecific may itself call calloc, so set the thread-local
/// slot before calling this. Returns 0 or an errno (then the hook will not run).
int arena_thread_exit_register(void (*hook)(void *_Nullable), void *value);

/// Installs fork handlers once (pthread_atfork); later calls are ignored.
void arena_atfork_install(void (*prepare)(void), void (*parent)(void), void (*child)(void));

// MARK: - Atomics on raw memory

static inline uint64_t arena_atomic_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void arena_atomic_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t arena_atomic_add64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline uint64_t arena_atomic_sub64(uint64_t *p, uint64_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
static inline uint64_t arena_atomic_exchange64(uint64_t *p, uint64_t v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
static inline uint32_t arena_atomic_load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void arena_atomic_store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int arena_atomic_cas32(uint32_t *p, uint32_t *expected, uint32_t desired) {
  return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

// MARK: - Lock (a futex mutex in raw memory; all-zero is unlocked, so zero-filled storage is ready)

typedef struct { uint32_t word; } arena_lock_t;

void arena_lock_wait(arena_lock_t *lock);
void arena_lock_wake(arena_lock_t *lock);

static inline void arena_lock_acquire(arena_lock_t *lock) {
  uint32_t expected = 0;
  if (__builtin_expect(__atomic_compare_exchange_n(&lock->word, &expected, 1, 0,
                                                   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED), 1)) return;
  arena_lock_wait(lock);
}
static inline void arena_lock_release(arena_lock_t *lock) {
  if (__builtin_expect(__atomic_exchange_n(&lock->word, 0, __ATOMIC_RELEASE) == 1, 1)) return;
  arena_lock_wake(lock);
}
/// Re-initialises a lock in a fork child (the thread that held it no longer exists there).
static inline void arena_lock_reset(arena_lock_t *lock) { __atomic_store_n(&lock->word, 0, __ATOMIC_RELAXED); }

// MARK: - Process-wide state in zero-filled static storage
//
// The allocator keeps no Swift globals (they would be lazily initialised through swift_once, which
// deadlocks inside malloc). Its process-wide state is this one C struct, zero at load time.

enum { ARENA_MAX_RESERVATIONS = 256, ARENA_CLASS_CAPACITY = 80 };

/// Run-time options, from the environment variable ARENA_OPTIONS ("decay_ms:500,scavenger:off").
typedef struct {
  uint64_t decay_ns;            // free memory older than this is purged (decay_ms, default 500)
  uint64_t decommit_ns;         // purged memory older than this is decommitted (decommit_ms, default 5000)
  uint64_t hot_reserve_bytes;   // dirty free memory kept for reuse (hot_reserve_kb, default 4096)
  uint32_t scavenger_enabled;   // scavenger:on|off (default on)
  uint32_t lazy_free;           // purge:dontneed|free (MADV_FREE: RSS drops only under pressure)
  uint32_t fault_handler;       // fault_handler:on|off (default off): SIGSEGV/SIGBUS diagnosis
  uint32_t commit_probe;        // commit_probe:on|off (default off): touch new commits under a guard
  uint32_t hardened;            // hardened:on|off (default off; guard_pages:on is an alias): guard
                                // pages, canaries, poisoned free blocks, checked links (Hardening.swift)
  uint32_t stats_at_exit;       // stats:on|off (default off): malloc_stats() when the process exits
} arena_options_t;

typedef struct {
  uintptr_t data_start;     // first byte of the reservation's data region
  uintptr_t data_end;       // one past its last byte
  void *_Nullable reservation;  // the reservation header
} arena_reservation_entry_t;

typedef struct {
  // malloc's fast path serves sizes up to this (the small limit; 0 while the default heap does not
  // exist or is hardened, so that every call takes the slow path).
  uint64_t fast_small_limit;
  // Free fast path: the default heap's first reservation, cached (an empty range when hardened).
  uintptr_t primary_data_start;
  uintptr_t primary_data_end;
  uintptr_t hardened_data_end;             // a hardened default heap's real primary_data_end (else
                                           // primary_data_start: an empty range)
  uint32_t *_Nullable primary_page_map;
  uint64_t secret;                         // tags free blocks: word 1 of a free block = secret ^ address
  void *_Nullable default_heap;                      // the process-wide heap (malloc's), once initialised
  uint32_t default_heap_state;             // 0 none, 1 initialising, 2 ready
  uint32_t class_count;                    // number of small size classes in use
  uint32_t class_size[ARENA_CLASS_CAPACITY];
  uint64_t class_magic[ARENA_CLASS_CAPACITY]; // ceil(2^40 / size): exact block-index division
  uint32_t class_run_pages[ARENA_CLASS_CAPACITY];
  uint32_t class_cache_limit[ARENA_CLASS_CAPACITY];
  arena_lock_t registry_lock;
  uint32_t reservation_count;
  arena_reservation_entry_t reservations[ARENA_MAX_RESERVATIONS];
  arena_options_t options;                 // parsed once from ARENA_OPTIONS
  uint32_t options_state;                  // 0 not parsed, 1 parsing, 2 parsed
  uint32_t scavenger_state;                // 0 not started, 1 starting/running
  uint32_t load_setup_done;                // 1 once SafePoint.atLoad has run
  uint32_t inline_release_busy;            // 1 while a thread runs an inline release (no scavenger)
  uint64_t inline_release_next_ns;         // when the next inline release pass is due
  uint32_t commit_scarce;                  // 1 once a commit failed: decommit free memory at once
  uint64_t inline_clean_floor_pages;       // clean free pages left by the last inline release
  uint64_t scavenger_cpu_ns;               // CPU time the scavenger thread has used
  uint64_t scavenger_passes;
} arena_globals_t;

extern arena_globals_t arena_globals;

static inline arena_globals_t *arena_globals_pointer(void) { return &arena_globals; }
static inline uint32_t *arena_class_size_table(void) { return arena_globals.class_size; }
static inline uint64_t *arena_class_magic_table(void) { return arena_globals.class_magic; }
static inline uint32_t *arena_class_run_pages_table(void) { return arena_globals.class_run_pages; }
static inline uint32_t *arena_class_cache_limit_table(void) { return arena_globals.class_cache_limit; }
static inline arena_reservation_entry_t *arena_reservation_table(void) { return arena_globals.reservations; }

#pragma clang assume_nonnull end

#ifdef __cplusplus
}
#endif
#endif
