// The kernel interface of ArenaAllocator. Nothing here calls malloc: it runs underneath it.
#define _GNU_SOURCE
#include "CSystemShims.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

arena_globals_t arena_globals;
__thread arena_tls_t arena_tls __attribute__((tls_model("initial-exec")));

// MARK: - Virtual memory

int arena_sys_reserve(size_t size, void *_Nullable *_Nonnull out) {
  void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return errno;
  *out = p;
  return 0;
}

int arena_sys_commit(void *_Nullable addr, size_t size) {
  return mprotect(addr, size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
}

int arena_sys_decommit(void *_Nullable addr, size_t size) {
  void *p = mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  return p == MAP_FAILED ? errno : 0;
}

int arena_sys_purge(void *_Nullable addr, size_t size) {
  return madvise(addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

int arena_sys_purge_lazy(void *_Nullable addr, size_t size) {
  return madvise(addr, size, MADV_FREE) == 0 ? 0 : errno;
}

int arena_sys_no_huge_pages(void *_Nullable addr, size_t size) {
  return madvise(addr, size, MADV_NOHUGEPAGE) == 0 ? 0 : errno;
}

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

int arena_sys_guard_install(void *_Nullable addr, size_t size) {
  if (madvise(addr, size, MADV_GUARD_INSTALL) == 0) return 0;
  return mprotect(addr, size, PROT_NONE) == 0 ? 0 : errno;
}

int arena_sys_guard_remove(void *_Nullable addr, size_t size) {
  int saved = errno;
  madvise(addr, size, MADV_GUARD_REMOVE);  // EINVAL on kernels without guards: the mprotect did it
  int result = mprotect(addr, size, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
  errno = saved;
  return result;
}

int arena_sys_map(size_t size, void *_Nullable *_Nonnull out) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return errno;
  *out = p;
  return 0;
}

int arena_sys_remap(void *_Nullable addr, size_t old_size, size_t new_size, void *_Nullable *_Nonnull out) {
  void *p = mremap(addr, old_size, new_size, MREMAP_MAYMOVE);
  if (p == MAP_FAILED) return errno;
  *out = p;
  return 0;
}

int arena_sys_release(void *_Nullable addr, size_t size) {
  return munmap(addr, size) == 0 ? 0 : errno;
}

size_t arena_sys_page_size(void) {
  static size_t cached;
  size_t v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (v == 0) {
    long s = sysconf(_SC_PAGESIZE);
    v = s > 0 ? (size_t)s : 4096;
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
  }
  return v;
}

// Reads a small /proc file into `buffer` with raw syscalls (no stdio: it allocates).
static long read_small_file(const char *path, char *buffer, size_t capacity) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t used = 0;
  while (used + 1 < capacity) {
    ssize_t n = read(fd, buffer + used, capacity - 1 - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    used += (size_t)n;
  }
  close(fd);
  buffer[used] = 0;
  return (long)used;
}

int arena_sys_overcommit_mode(void) {
  static int cached = -1;
  int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (v < 0) {
    char buf[16];
    int saved = errno;
    v = (read_small_file("/proc/sys/vm/overcommit_memory", buf, sizeof buf) > 0 && buf[0] >= '0' && buf[0] <= '2')
        ? buf[0] - '0' : 0;
    errno = saved;
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
  }
  return v;
}

uint64_t arena_sys_now_ns(void) {
  // The coarse clock (the last tick, 1-4 ms resolution) is read from the vDSO without a TSC
  // read; every use here (decay stamps, scavenger ticks) is measured in hundreds of ms.
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t arena_sys_resident_bytes(void) {
  char buf[128];
  int saved = errno;
  long n = read_small_file("/proc/self/statm", buf, sizeof buf);
  errno = saved;
  if (n <= 0) return 0;
  const char *s = buf;
  while (*s && *s != ' ') s++;  // skip total size
  while (*s == ' ') s++;
  uint64_t pages = 0;
  while (*s >= '0' && *s <= '9') pages = pages * 10 + (uint64_t)(*s++ - '0');
  return pages * arena_sys_page_size();
}

long arena_sys_vma_count(void) {
  int saved = errno;
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) { errno = saved; return -1; }
  char buf[4096];
  long lines = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
  }
  close(fd);
  errno = saved;
  return lines;
}

uint64_t arena_sys_random64(void) {
  uint64_t v = 0;
  int saved = errno;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    if (r) memcpy(&v, r, sizeof v);
    v ^= arena_sys_now_ns() * 0x9E3779B97F4A7C15ull;
  }
  errno = saved;
  return v ? v : 0x5DEECE66Dull;
}

long arena_sys_thread_count(void) {
  char buf[1024];
  int saved = errno;
  long n = read_small_file("/proc/self/stat", buf, sizeof buf);
  errno = saved;
  if (n <= 0) return -1;
  // "pid (comm) state ppid ...": fields after the last ')' start with field 3.
  const char *s = strrchr(buf, ')');
  if (!s) return -1;
  int field = 2;
  for (s++; *s && field < 20; s++) if (*s == ' ') field++;
  long count = 0;
  while (*s >= '0' && *s <= '9') count = count * 10 + (*s++ - '0');
  return count > 0 ? count : -1;
}

uint64_t arena_sys_address_space_limit(void) {
  struct rlimit limit;
  int saved = errno;
  int ok = getrlimit(RLIMIT_AS, &limit) == 0;
  errno = saved;
  return ok && limit.rlim_cur != RLIM_INFINITY ? (uint64_t)limit.rlim_cur : UINT64_MAX;
}

uint64_t arena_sys_thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void arena_sys_sleep_ns(uint64_t ns) {
  struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
  int saved = errno;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
  errno = saved;
}

int arena_sys_membarrier(void) {
  // 0: not tried yet, 1: registered, 2: unavailable. Only the scavenger and malloc_trim call this.
  static uint32_t state;
  uint32_t now = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  int saved = errno;
  if (now == 0) {
    long query = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    int ok = query >= 0 && (query & MEMBARRIER_CMD_PRIVATE_EXPEDITED)
      && syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    now = ok ? 1 : 2;
    __atomic_store_n(&state, now, __ATOMIC_RELEASE);
  }
  int result = now == 1 && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : -1;
  errno = saved;
  return result;
}

static void *thread_trampoline(void *body) {
  pthread_setname_np(pthread_self(), "arena-scavenger");  // prctl: what top and gdb show
  ((void (*)(void *))body)(NULL);
  return NULL;
}

arena_pthread_create_t _Nullable arena_next_pthread_create(void) {
  static arena_pthread_create_t next;
  arena_pthread_create_t f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
  if (!f) {
    int saved = errno;
    f = (arena_pthread_create_t)dlsym(RTLD_NEXT, "pthread_create");
    if (!f) f = (arena_pthread_create_t)pthread_create;
    __atomic_store_n(&next, f, __ATOMIC_RELEASE);
    errno = saved;
  }
  return f;
}

int arena_sys_thread_start(void (*body)(void *_Nullable)) {
  arena_pthread_create_t create = arena_next_pthread_create();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  // An ordinary time-shared thread, whatever the creating thread runs as (SCHED_FIFO, ...).
  struct sched_param normal = { .sched_priority = 0 };
  pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
  pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
  pthread_attr_setschedparam(&attr, &normal);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // the new thread inherits "all blocked"
  pthread_t thread;
  int error = create(&thread, &attr, thread_trampoline, (void *)body);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return error;
}

// Parses "name:value" pairs separated by commas. Unknown names are ignored.
static int option_is(const char *s, size_t n, const char *name) {
  size_t k = strlen(name);
  return n == k && memcmp(s, name, k) == 0;
}

// A switch's value: "on", "true", "yes", "1" or nothing (a bare name) turn it on; anything else
// ("off", "false", "no", "0") off.
static int option_on(const char *s, size_t n) {
  return n == 0 || option_is(s, n, "on") || option_is(s, n, "true") || option_is(s, n, "yes") || option_is(s, n, "1");
}

static uint64_t option_number(const char *s, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + (uint64_t)(s[i] - '0');
  return v;
}

static void parse_options(void);

void arena_options_load(void) {
  uint32_t expected = 0;
  if (!__atomic_compare_exchange_n(&arena_globals.options_state, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(&arena_globals.options_state, __ATOMIC_ACQUIRE) != 2) {}
    return;
  }
  parse_options();
}

void arena_options_reload(void) { parse_options(); }

static void parse_options(void) {
  arena_options_t o = { 500ull * 1000000, 5000ull * 1000000, 4096ull * 1024, 1, 0, 0, 0, 0 };
  const char *env = getenv("ARENA_OPTIONS");
  int decommit_set = 0, fault_set = 0;
  while (env && *env) {
    const char *end = env;
    while (*end && *end != ',') end++;
    const char *colon = env;
    while (colon < end && *colon != ':') colon++;
    size_t name_len = (size_t)(colon - env);
    const char *value = colon < end ? colon + 1 : end;
    size_t value_len = (size_t)(end - value);
    if (option_is(env, name_len, "decay_ms")) o.decay_ns = option_number(value, value_len) * 1000000;
    else if (option_is(env, name_len, "decommit_ms")) { o.decommit_ns = option_number(value, value_len) * 1000000; decommit_set = 1; }
    else if (option_is(env, name_len, "hot_reserve_kb")) o.hot_reserve_bytes = option_number(value, value_len) * 1024;
    else if (option_is(env, name_len, "scavenger")) o.scavenger_enabled = option_on(value, value_len);
    else if (option_is(env, name_len, "purge")) o.lazy_free = option_is(value, value_len, "free");
    else if (option_is(env, name_len, "fault_handler")) { o.fault_handler = option_on(value, value_len); fault_set = 1; }
    else if (option_is(env, name_len, "commit_probe")) o.commit_probe = option_on(value, value_len);
    else if (option_is(env, name_len, "hardened") || option_is(env, name_len, "guard_pages"))
      o.hardened = option_on(value, value_len);
    else if (option_is(env, name_len, "stats")) o.stats_at_exit = option_on(value, value_len);
    env = *end ? end + 1 : end;
  }
  // Under strict overcommit the commit charge is the scarce resource, shared with every other
  // process: unless the user chose otherwise, give it back as soon as a run is purged. (A finite
  // RLIMIT_DATA only limits this process: the charge is given back when a commit fails.)
  if (!decommit_set && arena_sys_overcommit_mode() == 2) o.decommit_ns = 0;
  // Asking for a hardened heap is asking for its diagnoses: a fault on a guard page is described
  // (and passed on to the program's own handler, if any) unless fault_handler:off says otherwise.
  if (o.hardened && !fault_set) o.fault_handler = 1;
  arena_globals.options = o;
  __atomic_store_n(&arena_globals.options_state, 2, __ATOMIC_RELEASE);
}

// MARK: - errno

void arena_set_errno(int value) { errno = value; }
int arena_get_errno(void) { return errno; }

// MARK: - Fatal diagnosis

static size_t append(char *buf, size_t at, size_t cap, const char *s) {
  while (*s && at < cap) buf[at++] = *s++;
  return at;
}

static size_t append_hex(char *buf, size_t at, size_t cap, uint64_t v) {
  char digits[19] = "0x";
  int n = 0;
  char rev[16];
  do { rev[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v && n < 16);
  int k = 2;
  while (n) digits[k++] = rev[--n];
  digits[k] = 0;
  return append(buf, at, cap, digits);
}

static size_t append_decimal(char *buf, size_t at, size_t cap, uint64_t v) {
  char rev[21];
  int n = 0;
  do { rev[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n && at < cap) buf[at++] = rev[--n];
  return at;
}

static _Noreturn void write_and_abort(const char *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(STDERR_FILENO, buf + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  abort();
}

_Noreturn void arena_fatal_pointer(const char *what, const void *_Nullable pointer) {
  char buf[256];
  size_t at = append(buf, 0, sizeof buf - 1, "arena: ");
  at = append(buf, at, sizeof buf - 1, what);
  at = append(buf, at, sizeof buf - 1, " ");
  at = append_hex(buf, at, sizeof buf - 1, (uint64_t)(uintptr_t)pointer);
  buf[at++] = '\n';
  write_and_abort(buf, at);
}

_Noreturn void arena_fatal_pointer_detail(const char *what, const void *_Nullable pointer,
                                          const char *detail, uint64_t number) {
  char buf[320];
  size_t cap = sizeof buf - 1;
  size_t at = append(buf, 0, cap, "arena: ");
  at = append(buf, at, cap, what);
  at = append(buf, at, cap, " ");
  at = append_hex(buf, at, cap, (uint64_t)(uintptr_t)pointer);
  at = append(buf, at, cap, " (");
  at = append(buf, at, cap, detail);
  at = append(buf, at, cap, " ");
  at = append_decimal(buf, at, cap, number);
  at = append(buf, at, cap, ")");
  buf[at++] = '\n';
  write_and_abort(buf, at);
}

// MARK: - Thread exit and fork

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static void (*exit_hook)(void *_Nullable);
static int exit_key_error;

static void exit_trampoline(void *value) {
  if (value && exit_hook) exit_hook(value);
}

static void create_exit_key(void) {
  exit_key_error = pthread_key_create(&exit_key, exit_trampoline);
}

int arena_thread_exit_prepare(void (*hook)(void *_Nullable)) {
  exit_hook = hook;
  pthread_once(&exit_key_once, create_exit_key);
  return exit_key_error;
}

int arena_thread_exit_register(void (*hook)(void *_Nullable), void *value) {
  int error = arena_thread_exit_prepare(hook);
  return error ? error : pthread_setspecific(exit_key, value);
}

static int atfork_installed;

void arena_atfork_install(void (*prepare)(void), void (*parent)(void), void (*child)(void)) {
  if (__atomic_exchange_n(&atfork_installed, 1, __ATOMIC_ACQ_REL)) return;
  pthread_atfork(prepare, parent, child);
}

// MARK: - Lock slow paths
//
// Word states: 0 unlocked, 1 locked, 2 locked with waiters (Drepper, "Futexes Are Tricky").

void arena_lock_wait(arena_lock_t *lock) {
  for (int spin = 0; spin < 100; spin++) {
    uint32_t expected = 0;
    if (__atomic_load_n(&lock->word, __ATOMIC_RELAXED) == 0 &&
        __atomic_compare_exchange_n(&lock->word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
      return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  int saved = errno;
  while (__atomic_exchange_n(&lock->word, 2, __ATOMIC_ACQUIRE) != 0)
    syscall(SYS_futex, &lock->word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
  errno = saved;
}

void arena_lock_wake(arena_lock_t *lock) {
  int saved = errno;
  syscall(SYS_futex, &lock->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  errno = saved;
}

// MARK: - Fault handler

static struct sigaction previous_segv, previous_bus;
static arena_fault_describer_t fault_describer;
static int fault_describe;
static int fault_handler_installed;

// The commit probe's per-thread guard (initial-exec: safe to read in a signal handler).
static __thread sigjmp_buf *probe_jump __attribute__((tls_model("initial-exec")));
static __thread uintptr_t probe_low __attribute__((tls_model("initial-exec")));
static __thread uintptr_t probe_high __attribute__((tls_model("initial-exec")));

static void fault_handler(int sig, siginfo_t *info, void *context) {
  uintptr_t address = (uintptr_t)info->si_addr;
  if (probe_jump && address >= probe_low && address < probe_high) {
    sigjmp_buf *jump = probe_jump;
    probe_jump = NULL;
    siglongjmp(*jump, 1);  // SA_NODEFER: no signal mask to restore
  }
  struct sigaction *previous = sig == SIGSEGV ? &previous_segv : &previous_bus;
  // The program's own handler gets the fault as if the arena's were not there: no output. A
  // handler installed with SA_RESETHAND runs once; the next fault takes the default action.
  struct sigaction chained = *previous;
  if (chained.sa_flags & SA_RESETHAND) {
    memset(previous, 0, sizeof *previous);
    previous->sa_handler = SIG_DFL;
  }
  if ((chained.sa_flags & SA_SIGINFO) && chained.sa_sigaction) {
    chained.sa_sigaction(sig, info, context);
    return;
  }
  if (!(chained.sa_flags & SA_SIGINFO) && chained.sa_handler != SIG_DFL && chained.sa_handler != SIG_IGN) {
    chained.sa_handler(sig);
    return;
  }
  if (!(chained.sa_flags & SA_SIGINFO) && chained.sa_handler == SIG_IGN && info->si_code <= 0) return;
  // The fault is fatal: say what the address was, restore the default action and return; the
  // faulting instruction runs again and the process dies with the usual signal (and core).
  int saved = errno;
  char line[320];
  size_t n = fault_describe && fault_describer ? fault_describer(address, line, sizeof line) : 0;
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(STDERR_FILENO, line + off, n - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  // A signal sent with kill/raise (si_code <= 0) has no faulting instruction to run again:
  // send it once more, now to the default action.
  if (info->si_code <= 0) raise(sig);
  errno = saved;
}

// Alternate signal stacks made by arena_thread_alt_stack: disabled and unmapped at thread exit.
static pthread_key_t alt_stack_key;
static pthread_once_t alt_stack_key_once = PTHREAD_ONCE_INIT;
static int alt_stack_key_error;

static size_t alt_stack_size(void) {
  long minimum = sysconf(_SC_SIGSTKSZ);
  return minimum > 64 * 1024 ? (size_t)minimum : 64 * 1024;
}

// At thread exit: the library's stack is unmapped, whether the thread still uses it (it is
// disabled first), replaced it with its own or disabled it.
static void alt_stack_release(void *stack) {
  stack_t current;
  if (sigaltstack(NULL, &current) == 0 && current.ss_sp == stack) {
    if (current.ss_flags & SS_ONSTACK) return;  // running on it: leave it
    stack_t off = { .ss_sp = NULL, .ss_flags = SS_DISABLE, .ss_size = 0 };
    sigaltstack(&off, NULL);
  }
  munmap(stack, alt_stack_size());
}

static void create_alt_stack_key(void) { alt_stack_key_error = pthread_key_create(&alt_stack_key, alt_stack_release); }

int arena_thread_alt_stack(void) {
  int saved = errno;
  stack_t current;
  if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return 0;
  pthread_once(&alt_stack_key_once, create_alt_stack_key);
  if (alt_stack_key_error) return alt_stack_key_error;
  size_t size = alt_stack_size();
  void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (stack == MAP_FAILED) { int e = errno; errno = saved; return e; }
  stack_t alt = { .ss_sp = stack, .ss_flags = 0, .ss_size = size };
  if (sigaltstack(&alt, NULL) != 0) { int e = errno; munmap(stack, size); errno = saved; return e; }
  pthread_setspecific(alt_stack_key, stack);
  errno = saved;
  return 0;
}

int arena_fault_handler_install(arena_fault_describer_t describer, int describe) {
  if (__atomic_exchange_n(&fault_handler_installed, 1, __ATOMIC_ACQ_REL)) return 0;
  int saved = errno;
  fault_describer = describer;
  fault_describe = describe;
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = fault_handler;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  int error = 0;
  if (sigaction(SIGSEGV, &action, &previous_segv) != 0) error = errno;
  if (!error && sigaction(SIGBUS, &action, &previous_bus) != 0) error = errno;
  errno = saved;
  return error;
}

int arena_fault_handler_installed(void) { return __atomic_load_n(&fault_handler_installed, __ATOMIC_ACQUIRE); }

int arena_probe_range(void *addr, size_t size) {
  if (!arena_fault_handler_installed()) return 0;  // no guard: touching could only crash
  sigjmp_buf jump;
  volatile uintptr_t low = (uintptr_t)addr, high = (uintptr_t)addr + size;
  if (sigsetjmp(jump, 0)) return EFAULT;  // savemask 0: no rt_sigprocmask syscall (~8 ns)
  probe_low = low;
  probe_high = high;
  probe_jump = &jump;
  size_t page = arena_sys_page_size();
  for (uintptr_t p = low; p < high; p += page) {
    volatile char *byte = (volatile char *)p;
    *byte = *byte;
  }
  probe_jump = NULL;
  return 0;
}
