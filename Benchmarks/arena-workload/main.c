// arena-workload: allocator workloads for the side-by-side benchmark (arena-bench).
//
//   arena-workload <workload> [key=value ...]
//
// The allocator under test is chosen by the parent with LD_PRELOAD; this program only calls the
// malloc family. Bookkeeping (slot arrays, queues) lives in mmap'd memory so it does not perturb
// the allocator being measured. Every block is filled with a pattern derived from a per-block tag
// and its offset, and checked before it is freed (and after realloc), so a broken allocator fails
// loudly: "VERIFY FAILED ..." on stderr and a non-zero exit status.
//
// Output (stdout, one line each, written with write(2) so nothing is buffered):
//   PHASE <name> <monotonic seconds> [key=value ...]     (spike-idle only)
//   RESULT workload=<w> ops=<n> seconds=<s> checksum=<hex> [key=value ...]
//   PEAK hwm_kib=<VmHWM>                                   (after the workload is done)
//   (exec prints the child's wait4 ru_maxrss in the PEAK line instead of its own VmHWM)
// The checksum depends only on the workload, its parameters and the seed (never on addresses or
// timing), so it must be identical for every allocator.
//
// Workloads: churn, mixed, prodcons, realloc, large, server, spike-idle, xfer, larson, leak, and
// exec (runs another program under the same allocator). `arena-workload help` lists their
// parameters. Only libc and pthreads are used.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "arena-workload assumes a little-endian machine"
#endif

// MARK: - Output and failure

static const char *g_workload = "?";

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(1, p, (size_t)n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= (int)w;
  }
}

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 1) n = (int)sizeof buf - 1;
  char line[1200];
  int m = snprintf(line, sizeof line, "%s (workload=%s)\n", buf, g_workload);
  if (m > 0) {
    ssize_t ignored = write(2, line, (size_t)(m < (int)sizeof line ? m : (int)sizeof line - 1));
    (void)ignored;
  }
  _exit(code);
}

enum { EXIT_USAGE = 2, EXIT_VERIFY = 3, EXIT_ALLOC = 4, EXIT_SYSTEM = 5 };

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_seconds(double s) {
  if (s <= 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double end = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + s;
  struct timespec until;
  until.tv_sec = (time_t)end;
  until.tv_nsec = (long)((end - (double)until.tv_sec) * 1e9);
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec += 1;
    until.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
  }
}

// Resident set size of this process in KiB, read without allocating.
static long self_rss_kib(void) {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = buf;
  while (*p && *p != ' ') p++;  // skip size
  long pages = strtol(p, NULL, 10);
  return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

// Peak resident set size (VmHWM) in KiB. The parent's wait4 ru_maxrss is not enough on its own:
// exec folds the spawning process's RSS into it, so small workloads would all show the driver's size.
static long self_hwm_kib(void) {
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[8192];
  ssize_t n = 0, r;
  while (n < (ssize_t)sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - (size_t)n)) > 0) n += r;
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = strstr(buf, "VmHWM:");
  return p ? strtol(p + 6, NULL, 10) : -1;
}

// MARK: - Parameters (key=value)

static int g_argc;
static char **g_argv;
static unsigned char g_used[256];

static const char *param_raw(const char *key) {
  size_t kl = strlen(key);
  for (int i = 2; i < g_argc && i < 256; i++) {
    if (strncmp(g_argv[i], key, kl) == 0 && g_argv[i][kl] == '=') {
      g_used[i] = 1;
      return g_argv[i] + kl + 1;
    }
  }
  return NULL;
}

static uint64_t param_u64(const char *key, uint64_t def) {
  const char *v = param_raw(key);
  if (!v) return def;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 0);
  if (errno || end == v || *end) die(EXIT_USAGE, "bad value for %s: '%s'", key, v);
  return (uint64_t)x;
}

static double param_double(const char *key, double def) {
  const char *v = param_raw(key);
  if (!v) return def;
  char *end;
  double x = strtod(v, &end);
  if (end == v || *end) die(EXIT_USAGE, "bad value for %s: '%s'", key, v);
  return x;
}

static void params_done(void) {
  for (int i = 2; i < g_argc; i++)
    if (i >= 256 || !g_used[i]) die(EXIT_USAGE, "unknown parameter '%s'", g_argv[i]);
}

// MARK: - PRNG (xorshift64*, seeded with splitmix64)

typedef struct {
  uint64_t s;
} rng_t;

static void rng_seed(rng_t *r, uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  r->s = z ? z : 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_next(rng_t *r) {
  uint64_t x = r->s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  r->s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

// Uniform in [lo, hi].
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi) {
  return lo + (rng_next(r) >> 11) % (hi - lo + 1);
}

// Roughly log-uniform in [lo, hi] (lo > 0): many small, few large.
static inline uint64_t rng_log(rng_t *r, uint64_t lo, uint64_t hi) {
  int lb = 63 - __builtin_clzll(lo), hb = 63 - __builtin_clzll(hi);
  if ((hi & (hi - 1)) == 0 && hb > lb) hb--;  // hi = 2^k: the top octave is [2^(k-1), 2^k]
  int b = lb + (int)rng_range(r, 0, (uint64_t)(hb - lb));
  uint64_t base = 1ULL << b;
  uint64_t v = base + rng_range(r, 0, base - 1);
  if (v < lo) v = lo;
  if (v > hi) v = hi;
  return v;
}

// MARK: - Bookkeeping memory (never from the allocator under test)

static void *xmap(size_t bytes) {
  if (bytes == 0) bytes = 1;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die(EXIT_SYSTEM, "mmap of %zu bytes for bookkeeping failed", bytes);
  return p;
}

static void xunmap(void *p, size_t bytes) {
  if (bytes == 0) bytes = 1;
  munmap(p, bytes);
}

// MARK: - Allocation with checks

static inline void check_ptr(void *p, size_t n, size_t align, const char *what) {
  if (!p) die(EXIT_ALLOC, "ALLOC FAILED: %s(%zu) returned NULL", what, n);
  if (((uintptr_t)p & (align - 1)) != 0)
    die(EXIT_VERIFY, "ALIGNMENT FAILED: %s(%zu) returned %p, not %zu-byte aligned", what, n, p, align);
}

// glibc guarantees 16-byte alignment for requests >= 16 on 64-bit; programs rely on it.
static inline size_t min_align(size_t n) { return n >= 16 ? 16 : 8; }

static inline unsigned char *xmalloc(size_t n) {
  void *p = malloc(n);
  check_ptr(p, n, min_align(n), "malloc");
  return p;
}

// MARK: - Pattern fill / verify
//
// Byte i of a block with tag t is byte (i & 7) of word(t, i & ~7), word(t, o) = t*K1 ^ o*K2.
// Distinct blocks have distinct tags; distinct offsets give distinct words.

#define K1 0x9E3779B97F4A7C15ULL
#define K2 0xD6E8FEB86659FD93ULL

static inline uint64_t pat_word(uint64_t tag, size_t off) { return (tag * K1) ^ ((uint64_t)off * K2); }
static inline unsigned char pat_byte(uint64_t tag, size_t i) {
  return (unsigned char)(pat_word(tag, i & ~(size_t)7) >> ((i & 7) * 8));
}

static void fill_range(unsigned char *p, size_t a, size_t b, uint64_t tag) {
  size_t i = a;
  while (i < b && (i & 7)) {
    p[i] = pat_byte(tag, i);
    i++;
  }
  uint64_t base = tag * K1;
  for (; i + 8 <= b; i += 8) {
    uint64_t w = base ^ ((uint64_t)i * K2);
    memcpy(p + i, &w, 8);
  }
  for (; i < b; i++) p[i] = pat_byte(tag, i);
}

static void report_mismatch(const unsigned char *p, size_t n, size_t a, size_t b, uint64_t tag, const char *ctx) {
  for (size_t i = a; i < b; i++) {
    if (p[i] != pat_byte(tag, i))
      die(EXIT_VERIFY,
          "VERIFY FAILED: %s: block %p size %zu tag %llu: byte %zu is 0x%02x, expected 0x%02x", ctx,
          (const void *)p, n, (unsigned long long)tag, i, p[i], pat_byte(tag, i));
  }
  die(EXIT_VERIFY, "VERIFY FAILED: %s: block %p size %zu (mismatch not reproducible)", ctx, (const void *)p, n);
}

// Checks [a, b); returns a value folded from the data read (for the checksum).
static uint64_t verify_range(const unsigned char *p, size_t n, size_t a, size_t b, uint64_t tag, const char *ctx) {
  size_t i = a;
  uint64_t acc = 0;
  int bad = 0;
  while (i < b && (i & 7)) {
    bad |= p[i] != pat_byte(tag, i);
    acc += p[i];
    i++;
  }
  uint64_t base = tag * K1;
  for (; i + 8 <= b; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    bad |= w != (base ^ ((uint64_t)i * K2));
    acc ^= w;
  }
  for (; i < b; i++) {
    bad |= p[i] != pat_byte(tag, i);
    acc += p[i];
  }
  if (bad) report_mismatch(p, n, a, b, tag, ctx);
  return acc;
}

// Blocks up to DENSE_LIMIT are filled completely; larger ones get their first and last EDGE bytes
// and one word every 4 KiB (which touches every page of the block).
#define DENSE_LIMIT 2048
#define EDGE 256
#define STRIDE 4096

static void fill_block(unsigned char *p, size_t n, uint64_t tag) {
  if (n <= DENSE_LIMIT) {
    fill_range(p, 0, n, tag);
    return;
  }
  fill_range(p, 0, EDGE, tag);
  for (size_t off = STRIDE; off + 8 <= n - EDGE; off += STRIDE) fill_range(p, off, off + 8, tag);
  fill_range(p, n - EDGE, n, tag);
}

static uint64_t verify_block(const unsigned char *p, size_t n, uint64_t tag, const char *ctx) {
  if (n <= DENSE_LIMIT) return verify_range(p, n, 0, n, tag, ctx);
  uint64_t acc = verify_range(p, n, 0, EDGE, tag, ctx);
  for (size_t off = STRIDE; off + 8 <= n - EDGE; off += STRIDE) acc += verify_range(p, n, off, off + 8, tag, ctx);
  acc += verify_range(p, n, n - EDGE, n, tag, ctx);
  return acc;
}

// Checks that memory from calloc reads as zero at the places fill_block would write.
static void verify_zero(const unsigned char *p, size_t n) {
  size_t lim = n <= DENSE_LIMIT ? n : EDGE;
  for (size_t i = 0; i < lim; i++)
    if (p[i]) die(EXIT_VERIFY, "VERIFY FAILED: calloc(%zu) block %p byte %zu is 0x%02x", n, (const void *)p, i, p[i]);
  if (n > DENSE_LIMIT) {
    for (size_t off = STRIDE; off + 8 <= n - EDGE; off += STRIDE)
      for (size_t i = off; i < off + 8; i++)
        if (p[i]) die(EXIT_VERIFY, "VERIFY FAILED: calloc(%zu) block %p byte %zu is 0x%02x", n, (const void *)p, i, p[i]);
    for (size_t i = n - EDGE; i < n; i++)
      if (p[i]) die(EXIT_VERIFY, "VERIFY FAILED: calloc(%zu) block %p byte %zu is 0x%02x", n, (const void *)p, i, p[i]);
  }
}

typedef struct {
  unsigned char *p;
  uint32_t size;
  uint32_t usable;  // bytes filled (churn fills the whole usable size)
  uint64_t tag;
} slot_t;

static inline uint64_t fold(uint64_t acc, uint64_t data, uint64_t size) { return acc + ((data ^ size) * 0x100000001B3ULL); }

// MARK: - churn: Swift-shaped small objects, 1 thread

// Sizes of Swift heap objects and small Arrays/Strings: 16-byte header plus fields, mostly small.
static inline size_t swift_like_size(rng_t *r) {
  uint64_t k = rng_next(r) >> 60;  // 0..15
  if (k < 6) return 16 + 8 * rng_range(r, 0, 6);   // class instances / boxes: 16..64
  if (k < 11) return 32 + 8 * rng_range(r, 0, 12); // array/dictionary storage: 32..128
  if (k < 14) return 48 + 8 * rng_range(r, 0, 6);  // closures contexts: 48..96
  return rng_range(r, 16, 128);                    // string storage: any size
}

static void churn_alloc(slot_t *s, size_t n, uint64_t tag) {
  unsigned char *p = xmalloc(n);
  size_t u = malloc_usable_size(p);
  if (u < n) die(EXIT_VERIFY, "USABLE SIZE FAILED: malloc_usable_size(%p) = %zu < requested %zu", (void *)p, u, n);
  if (u > n + 4096) u = n + 4096;  // sanity bound; usable size of a small block is never that large
  // Swift's Array uses the whole usable size, so write all of it: an exaggerated usable size
  // corrupts a neighbour and is caught when that neighbour is checked.
  fill_range(p, 0, u, tag);
  s->p = p;
  s->size = (uint32_t)n;
  s->usable = (uint32_t)u;
  s->tag = tag;
}

static uint64_t churn_free(slot_t *s, uint64_t acc) {
  size_t u = malloc_usable_size(s->p);
  if (u < s->size)
    die(EXIT_VERIFY, "USABLE SIZE FAILED: malloc_usable_size(%p) = %zu < requested %u before free", (void *)s->p, u, s->size);
  uint64_t d = verify_range(s->p, s->usable, 0, s->usable, s->tag, "churn free");
  (void)d;
  uint64_t w0;
  memcpy(&w0, s->p, 8);  // only requested bytes go into the checksum (usable size differs per allocator)
  acc = fold(acc, w0, s->size);
  free(s->p);
  s->p = NULL;
  return acc;
}

static int run_churn(void) {
  uint64_t ops = param_u64("ops", 10000000);
  uint64_t window = param_u64("window", 20000);
  uint64_t temp_pct = param_u64("temp", 50);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (window == 0) window = 1;
  rng_t r;
  rng_seed(&r, seed, 0);
  slot_t *slots = xmap(window * sizeof(slot_t));
  uint64_t tag = 1, acc = 0, nallocs = 0;
  double t0 = now_seconds();
  for (uint64_t i = 0; i < window; i++) churn_alloc(&slots[i], swift_like_size(&r), tag++), nallocs++;
  for (uint64_t i = 0; i < ops; i++) {
    uint64_t k = (rng_next(&r) >> 11) % window;
    acc = churn_free(&slots[k], acc);
    churn_alloc(&slots[k], swift_like_size(&r), tag++);
    nallocs++;
    if ((rng_next(&r) >> 57) < temp_pct * 128 / 100) {
      // A short-lived temporary (iterator box, bridging buffer): allocated, used, freed at once.
      slot_t t;
      churn_alloc(&t, rng_range(&r, 16, 64), tag++);
      nallocs++;
      acc = churn_free(&t, acc);
    }
  }
  for (uint64_t i = 0; i < window; i++) acc = churn_free(&slots[i], acc);
  double t1 = now_seconds();
  xunmap(slots, window * sizeof(slot_t));
  emit("RESULT workload=churn ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)nallocs, t1 - t0,
       (unsigned long long)acc);
  return 0;
}

// MARK: - mixed: 16 B .. 64 KiB on N threads, each with its own window

static int g_strict_align = 0;

typedef struct {
  int index;
  uint64_t ops, window, seed;
  uint64_t acc, nallocs;
} mixed_arg_t;

static inline size_t mixed_size(rng_t *r) {
  uint64_t k = (rng_next(r) >> 11) % 100;
  if (k < 60) return rng_range(r, 16, 256);
  if (k < 90) return rng_range(r, 257, 4096);
  return rng_range(r, 4097, 65536);
}

static void mixed_alloc(rng_t *r, slot_t *s, uint64_t tag) {
  size_t n = mixed_size(r);
  uint64_t how = rng_next(r) >> 58;  // 0..63
  unsigned char *p;
  if (how < 4) {  // 1/16: calloc, must read as zero
    p = calloc(1, n);
    check_ptr(p, n, min_align(n), "calloc");
    verify_zero(p, n);
  } else if (how == 4) {  // 1/64: posix_memalign with 64..4096
    size_t align = (size_t)64 << rng_range(r, 0, 6);
    // mimalloc 2.0.9 (Debian's libmimalloc2.0) returns misaligned blocks when size == alignment
    // for 256/512/1024 (microsoft/mimalloc#700). Step around that one case so the peer can still
    // be compared; strict_align=1 keeps it (and makes that mimalloc fail here).
    if (n == align && !g_strict_align) n += 16;
    void *q = NULL;
    int rc = posix_memalign(&q, align, n);
    if (rc != 0) die(EXIT_ALLOC, "ALLOC FAILED: posix_memalign(%zu, %zu) = %d", align, n, rc);
    check_ptr(q, n, align, "posix_memalign");
    p = q;
  } else {
    p = xmalloc(n);
  }
  fill_block(p, n, tag);
  s->p = p;
  s->size = (uint32_t)n;
  s->usable = (uint32_t)n;
  s->tag = tag;
}

static uint64_t block_free(slot_t *s, uint64_t acc, const char *ctx) {
  uint64_t d = verify_block(s->p, s->size, s->tag, ctx);
  acc = fold(acc, d, s->size);
  free(s->p);
  s->p = NULL;
  return acc;
}

static void *mixed_thread(void *argp) {
  mixed_arg_t *a = argp;
  rng_t r;
  rng_seed(&r, a->seed, (uint64_t)a->index + 100);
  slot_t *slots = xmap(a->window * sizeof(slot_t));
  uint64_t tag = ((uint64_t)a->index << 48) + 1, acc = 0, n = 0;
  for (uint64_t i = 0; i < a->window; i++) mixed_alloc(&r, &slots[i], tag++), n++;
  for (uint64_t i = 0; i < a->ops; i++) {
    uint64_t k = (rng_next(&r) >> 11) % a->window;
    acc = block_free(&slots[k], acc, "mixed free");
    mixed_alloc(&r, &slots[k], tag++);
    n++;
  }
  for (uint64_t i = 0; i < a->window; i++) acc = block_free(&slots[i], acc, "mixed final free");
  xunmap(slots, a->window * sizeof(slot_t));
  a->acc = acc;
  a->nallocs = n;
  return NULL;
}

static int run_mixed(void) {
  uint64_t ops = param_u64("ops", 2000000);  // per thread
  uint64_t window = param_u64("window", 4000);
  uint64_t threads = param_u64("threads", 2);
  uint64_t seed = param_u64("seed", 1);
  g_strict_align = (int)param_u64("strict_align", 0);
  params_done();
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  if (window == 0) window = 1;
  mixed_arg_t args[64];
  pthread_t tids[64];
  double t0 = now_seconds();
  for (uint64_t i = 0; i < threads; i++) {
    args[i] = (mixed_arg_t){.index = (int)i, .ops = ops, .window = window, .seed = seed};
    if (pthread_create(&tids[i], NULL, mixed_thread, &args[i]) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  }
  uint64_t acc = 0, n = 0;
  for (uint64_t i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    acc += args[i].acc;
    n += args[i].nallocs;
  }
  double t1 = now_seconds();
  emit("RESULT workload=mixed ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)n, t1 - t0,
       (unsigned long long)acc);
  return 0;
}

// MARK: - prodcons: one thread allocates, another verifies and frees (bounded SPSC ring)

typedef struct {
  unsigned char *p;
  uint64_t size;
  uint64_t tag;
} msg_t;

typedef struct {
  _Alignas(64) _Atomic uint64_t head;  // next slot the consumer reads
  _Alignas(64) _Atomic uint64_t tail;  // next slot the producer writes
  _Alignas(64) uint64_t cap;
  msg_t *ring;
  uint64_t ops, seed;
  uint64_t acc;
} queue_t;

static inline void backoff(unsigned *spins) {
  if (++*spins < 64) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  } else {
    sched_yield();
  }
}

static void *producer_thread(void *argp) {
  queue_t *q = argp;
  rng_t r;
  rng_seed(&r, q->seed, 200);
  for (uint64_t i = 0; i < q->ops; i++) {
    size_t n = (rng_next(&r) >> 62) ? rng_range(&r, 16, 128) : rng_range(&r, 129, 512);
    uint64_t tag = i + 1;
    unsigned char *p = xmalloc(n);
    fill_range(p, 0, n, tag);
    uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    unsigned spins = 0;
    while (t - atomic_load_explicit(&q->head, memory_order_acquire) >= q->cap) backoff(&spins);
    q->ring[t % q->cap] = (msg_t){p, n, tag};
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);
  }
  return NULL;
}

static void *consumer_thread(void *argp) {
  queue_t *q = argp;
  uint64_t acc = 0;
  for (uint64_t i = 0; i < q->ops; i++) {
    uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
    unsigned spins = 0;
    while (atomic_load_explicit(&q->tail, memory_order_acquire) == h) backoff(&spins);
    msg_t m = q->ring[h % q->cap];
    atomic_store_explicit(&q->head, h + 1, memory_order_release);
    if (m.tag != i + 1) die(EXIT_VERIFY, "VERIFY FAILED: queue out of order (%llu != %llu)", (unsigned long long)m.tag, (unsigned long long)(i + 1));
    uint64_t d = verify_range(m.p, m.size, 0, m.size, m.tag, "prodcons consumer");
    acc = fold(acc, d, m.size);
    free(m.p);
  }
  q->acc = acc;
  return NULL;
}

static int run_prodcons(void) {
  uint64_t ops = param_u64("ops", 5000000);
  uint64_t cap = param_u64("queue", 1024);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (cap < 1) cap = 1;
  queue_t *q = xmap(sizeof(queue_t));
  q->cap = cap;
  q->ring = xmap(cap * sizeof(msg_t));
  q->ops = ops;
  q->seed = seed;
  pthread_t prod, cons;
  double t0 = now_seconds();
  if (pthread_create(&cons, NULL, consumer_thread, q) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  if (pthread_create(&prod, NULL, producer_thread, q) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  pthread_join(prod, NULL);
  pthread_join(cons, NULL);
  double t1 = now_seconds();
  emit("RESULT workload=prodcons ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)ops, t1 - t0,
       (unsigned long long)q->acc);
  xunmap(q->ring, cap * sizeof(msg_t));
  xunmap(q, sizeof(queue_t));
  return 0;
}

// MARK: - realloc: many buffers grow 16 B -> max by doubling and small increments, interleaved

static int run_realloc(void) {
  uint64_t buffers = param_u64("buffers", 64);
  uint64_t rounds = param_u64("rounds", 10);
  uint64_t maxsize = param_u64("max", 1 << 20);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (buffers == 0) buffers = 1;
  if (maxsize < 32) maxsize = 32;
  rng_t r;
  rng_seed(&r, seed, 300);
  slot_t *b = xmap(buffers * sizeof(slot_t));
  uint64_t acc = 0, nops = 0, tag = 1;
  double t0 = now_seconds();
  for (uint64_t round = 0; round < rounds; round++) {
    for (uint64_t i = 0; i < buffers; i++) b[i] = (slot_t){NULL, 0, 0, tag++};
    uint64_t done = 0;
    while (done < buffers) {
      done = 0;
      for (uint64_t i = 0; i < buffers; i++) {
        slot_t *s = &b[i];
        if (s->size >= maxsize) {
          done++;
          continue;
        }
        size_t old = s->size, n;
        if (old == 0) n = 16;
        else if (rng_next(&r) >> 63) n = old * 2;
        else n = old + rng_range(&r, 1, 64);
        if (n > maxsize) n = maxsize;
        unsigned char *p = realloc(s->p, n);
        check_ptr(p, n, min_align(n), "realloc");
        nops++;
        if (old) acc = fold(acc, verify_block(p, old, s->tag, "realloc preserved contents"), old);
        fill_range(p, old, n, s->tag);
        s->p = p;
        s->size = (uint32_t)n;
      }
    }
    for (uint64_t i = 0; i < buffers; i++) {
      acc = fold(acc, verify_range(b[i].p, b[i].size, 0, b[i].size, b[i].tag, "realloc final"), b[i].size);
      free(b[i].p);
    }
  }
  double t1 = now_seconds();
  xunmap(b, buffers * sizeof(slot_t));
  emit("RESULT workload=realloc ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)nops, t1 - t0,
       (unsigned long long)acc);
  return 0;
}

// MARK: - large: 64 KiB .. 4 MiB blocks, allocate / touch every page / free, with a window

static int run_large(void) {
  uint64_t ops = param_u64("ops", 4000);
  uint64_t window = param_u64("window", 16);
  uint64_t minsize = param_u64("min", 64 << 10);
  uint64_t maxsize = param_u64("max", 4 << 20);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (window == 0) window = 1;
  if (minsize < 16) minsize = 16;
  if (maxsize < minsize) maxsize = minsize;
  rng_t r;
  rng_seed(&r, seed, 400);
  slot_t *slots = xmap(window * sizeof(slot_t));
  uint64_t acc = 0, tag = 1, n = 0;
  double t0 = now_seconds();
  for (uint64_t i = 0; i < ops; i++) {
    uint64_t k = i < window ? i : (rng_next(&r) >> 11) % window;
    if (i >= window) acc = block_free(&slots[k], acc, "large free");
    size_t sz = rng_log(&r, minsize, maxsize);
    unsigned char *p = xmalloc(sz);
    fill_block(p, sz, tag);
    slots[k] = (slot_t){p, (uint32_t)sz, (uint32_t)sz, tag++};
    n++;
  }
  for (uint64_t j = 0; j < window; j++)
    if (slots[j].p) acc = block_free(&slots[j], acc, "large final free");
  double t1 = now_seconds();
  xunmap(slots, window * sizeof(slot_t));
  emit("RESULT workload=large ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)n, t1 - t0,
       (unsigned long long)acc);
  return 0;
}

// MARK: - server: bursts of request handling on worker threads, then idle pauses

typedef struct {
  int index;
  uint64_t cycles, requests, cache_size, seed;
  pthread_barrier_t *start, *end;
  uint64_t acc, nallocs;
} server_arg_t;

static void *server_thread(void *argp) {
  server_arg_t *a = argp;
  rng_t r;
  rng_seed(&r, a->seed, 500 + (uint64_t)a->index);
  uint64_t tag = ((uint64_t)a->index << 48) + 1, acc = 0, n = 0;
  slot_t *cache = xmap(a->cache_size * sizeof(slot_t));  // long-lived entries (sessions, caches)
  for (uint64_t cycle = 0; cycle < a->cycles; cycle++) {
    pthread_barrier_wait(a->start);
    for (uint64_t req = 0; req < a->requests; req++) {
      slot_t live[48];
      int nlive = 0;
      // Request context and headers.
      size_t sz = 256;
      live[nlive] = (slot_t){xmalloc(sz), (uint32_t)sz, (uint32_t)sz, tag++};
      fill_block(live[nlive].p, sz, live[nlive].tag), nlive++, n++;
      int headers = (int)rng_range(&r, 8, 24);
      for (int h = 0; h < headers; h++) {
        sz = rng_range(&r, 16, 128);
        live[nlive] = (slot_t){xmalloc(sz), (uint32_t)sz, (uint32_t)sz, tag++};
        fill_block(live[nlive].p, sz, live[nlive].tag), nlive++, n++;
      }
      // Body.
      sz = rng_log(&r, 512, 65536);
      live[nlive] = (slot_t){xmalloc(sz), (uint32_t)sz, (uint32_t)sz, tag++};
      fill_block(live[nlive].p, sz, live[nlive].tag), nlive++, n++;
      // Parsing: short-lived temporaries, half freed at once.
      int temps = (int)rng_range(&r, 4, 16);
      for (int t = 0; t < temps; t++) {
        slot_t tmp = {xmalloc(sz = rng_range(&r, 32, 256)), 0, 0, tag++};
        tmp.size = tmp.usable = (uint32_t)sz;
        fill_block(tmp.p, sz, tmp.tag);
        n++;
        if ((t & 1) && nlive < 48) live[nlive++] = tmp;
        else acc = block_free(&tmp, acc, "server temp");
      }
      // Response: a buffer grown with realloc while pieces are appended.
      slot_t resp = {NULL, 0, 0, tag++};
      size_t cap = 0, used = 0;
      int pieces = (int)rng_range(&r, 4, 32);
      for (int pc = 0; pc < pieces; pc++) {
        size_t len = rng_log(&r, 64, 2048);
        if (used + len > cap) {
          size_t ncap = cap ? cap * 2 : 256;
          while (ncap < used + len) ncap *= 2;
          unsigned char *p = realloc(resp.p, ncap);
          check_ptr(p, ncap, 16, "realloc");
          if (used) acc = fold(acc, verify_range(p, used, 0, used, resp.tag, "server response realloc"), used);
          resp.p = p;
          cap = ncap;
          n++;
        }
        fill_range(resp.p, used, used + len, resp.tag);
        used += len;
      }
      acc = fold(acc, verify_range(resp.p, used, 0, used, resp.tag, "server response"), used);
      free(resp.p);
      // Sometimes update the long-lived cache.
      if (a->cache_size && (rng_next(&r) >> 59) < 4) {  // 1/8 of requests
        slot_t *c = &cache[(rng_next(&r) >> 11) % a->cache_size];
        if (c->p) acc = block_free(c, acc, "server cache replace");
        sz = rng_log(&r, 64, 4096);
        *c = (slot_t){xmalloc(sz), (uint32_t)sz, (uint32_t)sz, tag++};
        fill_block(c->p, sz, c->tag);
        n++;
      }
      // Request done: release everything it allocated (in a scrambled order).
      for (int i = nlive - 1; i > 0; i--) {
        int j = (int)((rng_next(&r) >> 11) % (uint64_t)(i + 1));
        slot_t t = live[i];
        live[i] = live[j];
        live[j] = t;
      }
      for (int i = 0; i < nlive; i++) acc = block_free(&live[i], acc, "server request free");
    }
    pthread_barrier_wait(a->end);
  }
  for (uint64_t i = 0; i < a->cache_size; i++)
    if (cache[i].p) acc = block_free(&cache[i], acc, "server cache final");
  xunmap(cache, a->cache_size * sizeof(slot_t));
  a->acc = acc;
  a->nallocs = n;
  return NULL;
}

static int run_server(void) {
  uint64_t cycles = param_u64("cycles", 12);
  uint64_t requests = param_u64("requests", 4000);  // per thread per cycle
  uint64_t threads = param_u64("threads", 2);
  double idle_ms = param_double("idle_ms", 150);
  uint64_t cache = param_u64("cache", 5000);  // per thread
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  pthread_barrier_t start, end;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&end, NULL, (unsigned)threads + 1);
  server_arg_t args[64];
  pthread_t tids[64];
  for (uint64_t i = 0; i < threads; i++) {
    args[i] = (server_arg_t){.index = (int)i, .cycles = cycles, .requests = requests, .cache_size = cache,
                             .seed = seed, .start = &start, .end = &end};
    if (pthread_create(&tids[i], NULL, server_thread, &args[i]) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  }
  double busy = 0;
  long idle_rss_sum = 0, idle_rss_max = 0, busy_rss_max = 0;
  for (uint64_t c = 0; c < cycles; c++) {
    double t0 = now_seconds();
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&end);
    busy += now_seconds() - t0;
    long rb = self_rss_kib();
    if (rb > busy_rss_max) busy_rss_max = rb;
    sleep_seconds(idle_ms / 1000.0);  // idle: nobody calls the allocator
    long ri = self_rss_kib();
    idle_rss_sum += ri;
    if (ri > idle_rss_max) idle_rss_max = ri;
  }
  uint64_t acc = 0, n = 0;
  double t0 = now_seconds();
  for (uint64_t i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    acc += args[i].acc;
    n += args[i].nallocs;
  }
  busy += now_seconds() - t0;
  pthread_barrier_destroy(&start);
  pthread_barrier_destroy(&end);
  emit("RESULT workload=server ops=%llu seconds=%.6f checksum=%016llx busy_rss_kib=%ld idle_rss_kib=%ld "
       "idle_rss_max_kib=%ld",
       (unsigned long long)n, busy, (unsigned long long)acc, busy_rss_max,
       cycles ? idle_rss_sum / (long)cycles : 0, idle_rss_max);
  return 0;
}

// MARK: - spike-idle: allocate a lot, free 90% in random order, then sit idle (parent samples RSS)

typedef struct {
  int index;
  uint64_t target_bytes, small_pct, free_pct, seed;
  int by_count;  // small_pct is a share of the blocks (1) or of the bytes (0)
  pthread_barrier_t *b;
  // results
  uint64_t peak_bytes, live_bytes, nallocs, nfrees, acc;
  slot_t *survivors;
  uint64_t nsurvivors;
} spike_arg_t;

static void *spike_thread(void *argp) {
  spike_arg_t *a = argp;
  rng_t r;
  rng_seed(&r, a->seed, 600 + (uint64_t)a->index);
  uint64_t small_target = a->target_bytes * a->small_pct / 100;
  uint64_t medium_target = a->target_bytes - small_target;
  uint64_t cap = small_target / 16 + medium_target / 4096 + 16;
  uint64_t small_bytes = 0, medium_bytes = 0, count = 0, tag = ((uint64_t)a->index << 48) + 1;
  if (a->by_count) {
    // Blocks, not bytes, are split: a small block averages 520 B, a medium one 36 KiB.
    double small_share = (double)a->small_pct * 520.0 / ((double)a->small_pct * 520.0 + (double)(100 - a->small_pct) * 36864.0);
    small_target = (uint64_t)((double)a->target_bytes * small_share);
    medium_target = a->target_bytes - small_target;
    cap = small_target / 16 + medium_target / 4096 + 16;
  }
  size_t slots_bytes = cap * sizeof(slot_t);
  slot_t *slots = xmap(slots_bytes);
  // Phase 1: allocate (small 16 B..1 KiB and medium 4..68 KiB, interleaved to keep the shares).
  while ((small_bytes < small_target || medium_bytes < medium_target) && count < cap) {
    int medium;
    if (small_bytes >= small_target) medium = 1;
    else if (medium_bytes >= medium_target) medium = 0;
    else medium = (double)medium_bytes * (double)small_target < (double)small_bytes * (double)medium_target;
    size_t sz = medium ? rng_range(&r, 4096, 68 << 10) : rng_range(&r, 16, 1024);
    unsigned char *p = xmalloc(sz);
    fill_block(p, sz, tag);
    slots[count++] = (slot_t){p, (uint32_t)sz, (uint32_t)sz, tag++};
    if (medium) medium_bytes += sz;
    else small_bytes += sz;
  }
  a->peak_bytes = small_bytes + medium_bytes;
  a->nallocs = count;
  pthread_barrier_wait(a->b);  // main prints PHASE peak
  pthread_barrier_wait(a->b);
  // Phase 2: free free_pct% in random order (Fisher-Yates over the indices).
  size_t order_bytes = count * sizeof(uint32_t);
  uint32_t *order = xmap(order_bytes);
  for (uint64_t i = 0; i < count; i++) order[i] = (uint32_t)i;
  for (uint64_t i = count; i > 1; i--) {
    uint64_t j = (rng_next(&r) >> 11) % i;
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  uint64_t nfree = count * a->free_pct / 100, acc = 0;
  for (uint64_t i = 0; i < nfree; i++) acc = block_free(&slots[order[i]], acc, "spike-idle free");
  // Survivors go to a small array; the big bookkeeping arrays are unmapped so RSS shows the heap.
  uint64_t ns = count - nfree, live = 0;
  slot_t *surv = xmap(ns * sizeof(slot_t));
  for (uint64_t i = 0, k = 0; i < count; i++)
    if (slots[i].p) {
      surv[k++] = slots[i];
      live += slots[i].size;
    }
  xunmap(order, order_bytes);
  xunmap(slots, slots_bytes);
  a->survivors = surv;
  a->nsurvivors = ns;
  a->live_bytes = live;
  a->nfrees = nfree;
  a->acc = acc;
  pthread_barrier_wait(a->b);  // free phase over: main prints PHASE idle, sleeps
  pthread_barrier_wait(a->b);  // idle over
  // Phase 4: the survivors must be intact after the idle period.
  for (uint64_t i = 0; i < ns; i++) a->acc = block_free(&surv[i], a->acc, "spike-idle survivor after idle");
  xunmap(surv, ns * sizeof(slot_t));
  return NULL;
}

static int run_spike_idle(void) {
  uint64_t mib = param_u64("mib", 1024);
  uint64_t threads = param_u64("threads", 2);
  uint64_t small_pct = param_u64("small_pct", 50);
  uint64_t free_pct = param_u64("free_pct", 90);
  double idle = param_double("idle", 11);
  uint64_t seed = param_u64("seed", 1);
  const char *mix = param_raw("mix");
  params_done();
  if (mix && strcmp(mix, "count") != 0 && strcmp(mix, "bytes") != 0) die(EXIT_USAGE, "mix must be count or bytes");
  int by_count = !mix || strcmp(mix, "count") == 0;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  if (small_pct > 100) small_pct = 100;
  if (free_pct > 100) free_pct = 100;
  pthread_barrier_t b;
  pthread_barrier_init(&b, NULL, (unsigned)threads + 1);
  spike_arg_t args[64];
  pthread_t tids[64];
  double t0 = now_seconds();
  emit("PHASE start %.6f rss_kib=%ld", t0, self_rss_kib());
  for (uint64_t i = 0; i < threads; i++) {
    args[i] = (spike_arg_t){.index = (int)i, .target_bytes = (mib << 20) / threads, .small_pct = small_pct,
                            .by_count = by_count, .free_pct = free_pct, .seed = seed, .b = &b};
    if (pthread_create(&tids[i], NULL, spike_thread, &args[i]) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  }
  pthread_barrier_wait(&b);
  uint64_t peak = 0, allocs = 0;
  for (uint64_t i = 0; i < threads; i++) peak += args[i].peak_bytes, allocs += args[i].nallocs;
  double t_peak = now_seconds();
  emit("PHASE peak %.6f live_bytes=%llu blocks=%llu rss_kib=%ld", t_peak, (unsigned long long)peak,
       (unsigned long long)allocs, self_rss_kib());
  t_peak = now_seconds() - t_peak;  // time spent printing is not the allocator's
  pthread_barrier_wait(&b);
  pthread_barrier_wait(&b);
  double t_idle = now_seconds();
  uint64_t live = 0, frees = 0;
  for (uint64_t i = 0; i < threads; i++) live += args[i].live_bytes, frees += args[i].nfrees;
  emit("PHASE idle %.6f live_bytes=%llu blocks=%llu rss_kib=%ld", t_idle, (unsigned long long)live,
       (unsigned long long)(allocs - frees), self_rss_kib());
  sleep_seconds(idle);  // nobody calls the allocator now; the worker threads wait on the barrier
  emit("PHASE wake %.6f rss_kib=%ld", now_seconds(), self_rss_kib());
  double t_wake = now_seconds();
  pthread_barrier_wait(&b);
  uint64_t acc = 0;
  for (uint64_t i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    acc += args[i].acc;
  }
  double t_end = now_seconds();
  pthread_barrier_destroy(&b);
  double busy = (t_idle - t0 - t_peak) + (t_end - t_wake);
  emit("PHASE end %.6f", t_end);
  emit("RESULT workload=spike-idle ops=%llu seconds=%.6f checksum=%016llx peak_live_bytes=%llu live_bytes=%llu "
       "idle_seconds=%.3f",
       (unsigned long long)(allocs + allocs), busy, (unsigned long long)acc, (unsigned long long)peak,
       (unsigned long long)live, idle);
  return 0;
}

// MARK: - xfer: N producers fill batches of small blocks, N consumers verify and free them

// A batch: `count` blocks, filled by one producer and freed by whichever consumer takes it.
typedef struct {
  uint64_t index;  // batch number (its contents depend only on the seed and this)
  uint64_t count;
  msg_t *blocks;  // `batch` entries, xmap'd once and recycled through the pool
} xfer_batch_t;

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  xfer_batch_t **ring;  // queue of full batches, capacity `cap`
  uint64_t cap, head, count;
  xfer_batch_t **pool;  // empty batches; cap + 2 * threads exist, so a producer always finds one
  uint64_t npool;
  uint64_t producers_left;
  uint64_t ops, batch, nbatches, maxsize, seed, threads;
} xfer_t;

typedef struct {
  xfer_t *x;
  int index;
  uint64_t acc, nblocks;
} xfer_arg_t;

static void *xfer_producer(void *argp) {
  xfer_arg_t *a = argp;
  xfer_t *x = a->x;
  for (uint64_t b = (uint64_t)a->index; b < x->nbatches; b += x->threads) {
    pthread_mutex_lock(&x->lock);
    xfer_batch_t *bt = x->pool[--x->npool];
    pthread_mutex_unlock(&x->lock);
    // Sizes and tags depend only on (seed, batch number), not on which producer fills it.
    rng_t r;
    rng_seed(&r, x->seed, 700 + b);
    uint64_t first = b * x->batch;
    uint64_t n = x->ops - first < x->batch ? x->ops - first : x->batch;
    for (uint64_t i = 0; i < n; i++) {
      size_t sz = rng_log(&r, 8, x->maxsize);
      uint64_t tag = first + i + 1;
      unsigned char *p = xmalloc(sz);
      fill_range(p, 0, sz, tag);
      bt->blocks[i] = (msg_t){p, sz, tag};
    }
    bt->index = b;
    bt->count = n;
    a->nblocks += n;
    pthread_mutex_lock(&x->lock);
    while (x->count == x->cap) pthread_cond_wait(&x->not_full, &x->lock);
    x->ring[(x->head + x->count) % x->cap] = bt;
    x->count++;
    pthread_cond_signal(&x->not_empty);
    pthread_mutex_unlock(&x->lock);
  }
  pthread_mutex_lock(&x->lock);
  if (--x->producers_left == 0) pthread_cond_broadcast(&x->not_empty);
  pthread_mutex_unlock(&x->lock);
  return NULL;
}

static void *xfer_consumer(void *argp) {
  xfer_arg_t *a = argp;
  xfer_t *x = a->x;
  uint64_t acc = 0;
  for (;;) {
    pthread_mutex_lock(&x->lock);
    while (x->count == 0 && x->producers_left > 0) pthread_cond_wait(&x->not_empty, &x->lock);
    if (x->count == 0) {
      pthread_mutex_unlock(&x->lock);
      break;
    }
    xfer_batch_t *bt = x->ring[x->head];
    x->head = (x->head + 1) % x->cap;
    x->count--;
    pthread_cond_signal(&x->not_full);
    pthread_mutex_unlock(&x->lock);
    uint64_t first = bt->index * x->batch;
    for (uint64_t i = 0; i < bt->count; i++) {
      msg_t m = bt->blocks[i];
      if (m.tag != first + i + 1)
        die(EXIT_VERIFY, "VERIFY FAILED: xfer batch %llu entry %llu has tag %llu", (unsigned long long)bt->index,
            (unsigned long long)i, (unsigned long long)m.tag);
      uint64_t d = verify_range(m.p, m.size, 0, m.size, m.tag, "xfer consumer");
      acc = fold(acc, d, m.size);  // a sum: the same whichever consumer frees which batch
      free(m.p);
    }
    a->nblocks += bt->count;
    pthread_mutex_lock(&x->lock);
    x->pool[x->npool++] = bt;
    pthread_mutex_unlock(&x->lock);
  }
  a->acc = acc;
  return NULL;
}

static int run_xfer(void) {
  uint64_t ops = param_u64("ops", 8000000);  // blocks in total
  uint64_t threads = param_u64("threads", 2);  // producers, and as many consumers
  uint64_t cap = param_u64("queue", 32);     // batches
  uint64_t batch = param_u64("batch", 1024);  // blocks per batch
  uint64_t maxsize = param_u64("max", 256);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  if (cap < 1) cap = 1;
  if (batch < 1) batch = 1;
  if (maxsize < 8) maxsize = 8;
  if (maxsize > 1 << 20) maxsize = 1 << 20;
  xfer_t *x = xmap(sizeof(xfer_t));
  pthread_mutex_init(&x->lock, NULL);
  pthread_cond_init(&x->not_empty, NULL);
  pthread_cond_init(&x->not_full, NULL);
  x->cap = cap;
  x->ops = ops;
  x->batch = batch;
  x->nbatches = (ops + batch - 1) / batch;
  x->maxsize = maxsize;
  x->seed = seed;
  x->threads = threads;
  x->producers_left = threads;
  uint64_t nbuf = cap + 2 * threads;
  x->ring = xmap(cap * sizeof(xfer_batch_t *));
  x->pool = xmap(nbuf * sizeof(xfer_batch_t *));
  xfer_batch_t *bufs = xmap(nbuf * sizeof(xfer_batch_t));
  for (uint64_t i = 0; i < nbuf; i++) {
    bufs[i].blocks = xmap(batch * sizeof(msg_t));
    x->pool[x->npool++] = &bufs[i];
  }
  xfer_arg_t args[128];
  pthread_t tids[128];
  double t0 = now_seconds();
  for (uint64_t i = 0; i < 2 * threads; i++) {
    args[i] = (xfer_arg_t){.x = x, .index = (int)(i % threads)};
    if (pthread_create(&tids[i], NULL, i < threads ? xfer_consumer : xfer_producer, &args[i]) != 0)
      die(EXIT_SYSTEM, "pthread_create failed");
  }
  uint64_t acc = 0, consumed = 0, produced = 0;
  for (uint64_t i = 0; i < 2 * threads; i++) {
    pthread_join(tids[i], NULL);
    acc += args[i].acc;
    if (i < threads) consumed += args[i].nblocks;
    else produced += args[i].nblocks;
  }
  double t1 = now_seconds();
  if (produced != ops || consumed != ops)
    die(EXIT_VERIFY, "VERIFY FAILED: xfer produced %llu and consumed %llu blocks, expected %llu",
        (unsigned long long)produced, (unsigned long long)consumed, (unsigned long long)ops);
  emit("RESULT workload=xfer ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)ops, t1 - t0,
       (unsigned long long)acc);
  for (uint64_t i = 0; i < nbuf; i++) xunmap(bufs[i].blocks, batch * sizeof(msg_t));
  xunmap(bufs, nbuf * sizeof(xfer_batch_t));
  xunmap(x->pool, nbuf * sizeof(xfer_batch_t *));
  xunmap(x->ring, cap * sizeof(xfer_batch_t *));
  pthread_cond_destroy(&x->not_full);
  pthread_cond_destroy(&x->not_empty);
  pthread_mutex_destroy(&x->lock);
  xunmap(x, sizeof(xfer_t));
  return 0;
}

// MARK: - larson: worker threads replace random blocks in slot arrays that rotate between threads

// One slot array. It moves to the next thread after every round, so most frees are of blocks
// another thread allocated. Its tags count up per array, so they do not depend on which thread ran it.
typedef struct {
  slot_t *slots;
  uint64_t next_tag;
} larson_array_t;

typedef struct {
  int index;
  uint64_t threads, nslots, minsize, maxsize, steps, rounds, seed;
  larson_array_t *arrays;
  pthread_barrier_t *barrier;
  uint64_t acc, nallocs;
} larson_arg_t;

static inline void larson_alloc(rng_t *r, larson_arg_t *a, larson_array_t *arr, slot_t *s) {
  size_t sz = rng_range(r, a->minsize, a->maxsize);
  uint64_t tag = arr->next_tag++;
  unsigned char *p = xmalloc(sz);
  fill_range(p, 0, sz, tag);
  *s = (slot_t){p, (uint32_t)sz, (uint32_t)sz, tag};
}

static void *larson_thread(void *argp) {
  larson_arg_t *a = argp;
  uint64_t acc = 0, n = 0, T = a->threads;
  // Every thread fills its own array first.
  {
    larson_array_t *arr = &a->arrays[a->index];
    rng_t r;
    rng_seed(&r, a->seed, 800 + (uint64_t)a->index);
    for (uint64_t i = 0; i < a->nslots; i++) larson_alloc(&r, a, arr, &arr->slots[i]), n++;
  }
  for (uint64_t round = 0; round < a->rounds; round++) {
    pthread_barrier_wait(a->barrier);  // the arrays have moved on by one thread
    uint64_t ai = ((uint64_t)a->index + T - round % T) % T;  // array i is on thread (i + round) % T
    larson_array_t *arr = &a->arrays[ai];
    // The work on an array in a round depends only on (seed, round, array index).
    rng_t r;
    rng_seed(&r, a->seed, 800 + (round + 1) * 64 + ai);
    for (uint64_t s = 0; s < a->steps; s++) {
      slot_t *sl = &arr->slots[(rng_next(&r) >> 11) % a->nslots];
      uint64_t d = verify_range(sl->p, sl->size, 0, sl->size, sl->tag, "larson replace");
      acc = fold(acc, d, sl->size);
      free(sl->p);
      larson_alloc(&r, a, arr, sl);
      n++;
    }
  }
  a->acc = acc;
  a->nallocs = n;
  return NULL;
}

static int run_larson(void) {
  uint64_t threads = param_u64("threads", 2);
  uint64_t nslots = param_u64("slots", 1000);  // per thread
  uint64_t minsize = param_u64("min", 16);
  uint64_t maxsize = param_u64("max", 1000);
  uint64_t steps = param_u64("steps", 5000);  // per thread per round
  uint64_t rounds = param_u64("rounds", 40);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  if (nslots < 1) nslots = 1;
  if (minsize < 1) minsize = 1;
  if (maxsize < minsize) maxsize = minsize;
  if (maxsize > 1 << 24) maxsize = 1 << 24;
  size_t arrays_bytes = threads * sizeof(larson_array_t);
  larson_array_t *arrays = xmap(arrays_bytes);
  for (uint64_t i = 0; i < threads; i++) arrays[i] = (larson_array_t){xmap(nslots * sizeof(slot_t)), (i + 1) << 48};
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)threads);
  larson_arg_t args[64];
  pthread_t tids[64];
  double t0 = now_seconds();
  for (uint64_t i = 0; i < threads; i++) {
    args[i] = (larson_arg_t){.index = (int)i, .threads = threads, .nslots = nslots, .minsize = minsize,
                             .maxsize = maxsize, .steps = steps, .rounds = rounds, .seed = seed,
                             .arrays = arrays, .barrier = &barrier};
    if (pthread_create(&tids[i], NULL, larson_thread, &args[i]) != 0) die(EXIT_SYSTEM, "pthread_create failed");
  }
  uint64_t acc = 0, n = 0;
  for (uint64_t i = 0; i < threads; i++) {
    pthread_join(tids[i], NULL);
    acc += args[i].acc;
    n += args[i].nallocs;
  }
  // The main thread, which allocated none of them, verifies and frees what is left.
  for (uint64_t i = 0; i < threads; i++)
    for (uint64_t j = 0; j < nslots; j++) acc = block_free(&arrays[i].slots[j], acc, "larson final free");
  double t1 = now_seconds();
  pthread_barrier_destroy(&barrier);
  for (uint64_t i = 0; i < threads; i++) xunmap(arrays[i].slots, nslots * sizeof(slot_t));
  xunmap(arrays, arrays_bytes);
  emit("RESULT workload=larson ops=%llu seconds=%.6f checksum=%016llx", (unsigned long long)n, t1 - t0,
       (unsigned long long)acc);
  return 0;
}

// MARK: - leak: a cache that mostly grows; small long-lived blocks, few frees, 1 thread

// Compact entries (16 B) so the bookkeeping stays small next to the heap whose peak RSS is measured.
typedef struct {
  unsigned char *p;
  uint32_t size;
  uint32_t index;  // allocation number; the tag is index + 1
} leak_entry_t;

static int run_leak(void) {
  uint64_t ops = param_u64("ops", 2000000);  // allocations
  uint64_t free_every = param_u64("free_every", 16);  // 0: never free before the end
  uint64_t minsize = param_u64("min", 16);
  uint64_t maxsize = param_u64("max", 256);
  uint64_t seed = param_u64("seed", 1);
  params_done();
  if (ops > UINT32_MAX) die(EXIT_USAGE, "ops must be at most %u", UINT32_MAX);
  if (minsize < 1) minsize = 1;
  if (maxsize < minsize) maxsize = minsize;
  if (maxsize > 1 << 24) maxsize = 1 << 24;
  rng_t r;
  rng_seed(&r, seed, 900);
  size_t live_bytes_map = ops * sizeof(leak_entry_t);
  leak_entry_t *live = xmap(live_bytes_map);
  uint64_t nlive = 0, acc = 0, bytes = 0, peak_bytes = 0, peak_blocks = 0;
  double t0 = now_seconds();
  for (uint64_t i = 0; i < ops; i++) {
    size_t sz = rng_range(&r, minsize, maxsize);
    unsigned char *p = xmalloc(sz);
    fill_range(p, 0, sz, i + 1);
    live[nlive++] = (leak_entry_t){p, (uint32_t)sz, (uint32_t)i};
    bytes += sz;
    if (bytes > peak_bytes) peak_bytes = bytes, peak_blocks = nlive;
    if (free_every && (i + 1) % free_every == 0) {
      uint64_t k = (rng_next(&r) >> 11) % nlive;
      leak_entry_t e = live[k];
      acc = fold(acc, verify_range(e.p, e.size, 0, e.size, (uint64_t)e.index + 1, "leak free"), e.size);
      free(e.p);
      bytes -= e.size;
      live[k] = live[--nlive];
    }
  }
  for (uint64_t k = 0; k < nlive; k++) {
    leak_entry_t e = live[k];
    acc = fold(acc, verify_range(e.p, e.size, 0, e.size, (uint64_t)e.index + 1, "leak final free"), e.size);
    free(e.p);
  }
  double t1 = now_seconds();
  xunmap(live, live_bytes_map);
  emit("RESULT workload=leak ops=%llu seconds=%.6f checksum=%016llx peak_live_bytes=%llu peak_live_blocks=%llu",
       (unsigned long long)ops, t1 - t0, (unsigned long long)acc, (unsigned long long)peak_bytes,
       (unsigned long long)peak_blocks);
  return 0;
}

// MARK: - exec: run a real program under the same allocator, report it like a workload

// `arena-workload exec <prog> [args...]`: the child inherits the environment (LD_PRELOAD,
// ARENA_OPTIONS, ...) and stderr; its stdout is read through a pipe and hashed (FNV-1a), so the
// checksum is that of the program's output. seconds is the wall time from fork to wait4, and PEAK
// is the child's ru_maxrss (which covers its own children that it waited for), not this process's.
static int run_exec(void) {
  if (g_argc < 3) die(EXIT_USAGE, "usage: arena-workload exec <program> [args...]");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) die(EXIT_SYSTEM, "pipe2 failed: %s", strerror(errno));
  pid_t parent = getpid();
  double t0 = now_seconds();
  pid_t pid = fork();
  if (pid < 0) die(EXIT_SYSTEM, "fork failed: %s", strerror(errno));
  if (pid == 0) {
    // Killed with us (e.g. when arena-bench kills this process on a timeout).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (dup2(fds[1], 1) < 0) _exit(127);  // dup2 clears close-on-exec on fd 1
    execvp(g_argv[2], g_argv + 2);
    char msg[512];
    int m = snprintf(msg, sizeof msg, "arena-workload exec: cannot run '%s': %s\n", g_argv[2], strerror(errno));
    if (m > 0) {
      ssize_t ignored = write(2, msg, (size_t)(m < (int)sizeof msg ? m : (int)sizeof msg - 1));
      (void)ignored;
    }
    _exit(127);
  }
  close(fds[1]);
  uint64_t h = 0xCBF29CE484222325ULL, nbytes = 0;
  unsigned char buf[65536];
  for (;;) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      die(EXIT_SYSTEM, "read from the child's stdout failed: %s", strerror(errno));
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001B3ULL;
    nbytes += (uint64_t)n;
  }
  close(fds[0]);
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  while (wait4(pid, &status, 0, &ru) < 0)
    if (errno != EINTR) die(EXIT_SYSTEM, "wait4 failed: %s", strerror(errno));
  double t1 = now_seconds();
  if (WIFSIGNALED(status))
    die(EXIT_VERIFY, "EXEC FAILED: '%s' was killed by signal %d (%s)", g_argv[2], WTERMSIG(status),
        strsignal(WTERMSIG(status)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    die(EXIT_VERIFY, "EXEC FAILED: '%s' exited with status %d", g_argv[2], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  emit("RESULT workload=exec ops=1 seconds=%.6f checksum=%016llx stdout_bytes=%llu", t1 - t0, (unsigned long long)h,
       (unsigned long long)nbytes);
  emit("PEAK hwm_kib=%ld", (long)ru.ru_maxrss);
  return 0;
}

// MARK: - main

static void usage(FILE *f) {
  fprintf(f,
          "usage: arena-workload <workload> [key=value ...]\n"
          "  churn       ops=10000000 window=20000 temp=50 seed=1   Swift-shaped 16-128 B objects, 1 thread\n"
          "  mixed       ops=2000000 window=4000 threads=2 seed=1 strict_align=0\n"
          "                                                         16 B-64 KiB, skewed small, per-thread windows\n"
          "  prodcons    ops=5000000 queue=1024 seed=1              allocate on one thread, verify+free on another\n"
          "  realloc     buffers=64 rounds=10 max=1048576 seed=1    realloc growth 16 B -> max, interleaved\n"
          "  large       ops=4000 window=16 min=65536 max=4194304   large blocks, every page touched\n"
          "  server      cycles=12 requests=4000 threads=2 idle_ms=150 cache=5000 seed=1\n"
          "  spike-idle  mib=1024 threads=2 small_pct=50 mix=count free_pct=90 idle=11 seed=1\n"
          "                                                         small_pct of the blocks (mix=count) or bytes (mix=bytes)\n"
          "  xfer        ops=8000000 threads=2 queue=32 batch=1024 max=256 seed=1\n"
          "                                                         N producers, N consumers: batches of 8-max B blocks, remote frees\n"
          "  larson      threads=2 slots=1000 min=16 max=1000 steps=5000 rounds=40 seed=1\n"
          "                                                         random replacements; slot arrays move to the next thread each round\n"
          "  leak        ops=2000000 free_every=16 min=16 max=256 seed=1\n"
          "                                                         a growing cache: keep blocks, free a random one every free_every\n"
          "  exec        <program> [args...]                        run a program under the same allocator; checksum: its stdout\n"
          "Prints RESULT workload=<w> ops=<n> seconds=<s> checksum=<hex> [...]; exits 3 on a data error,\n"
          "4 on an allocation failure, 2 on bad usage.\n");
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_USAGE : 0;
  }
  g_workload = argv[1];
  int (*run)(void) = NULL;
  if (!strcmp(argv[1], "churn")) run = run_churn;
  else if (!strcmp(argv[1], "mixed")) run = run_mixed;
  else if (!strcmp(argv[1], "prodcons")) run = run_prodcons;
  else if (!strcmp(argv[1], "realloc")) run = run_realloc;
  else if (!strcmp(argv[1], "large")) run = run_large;
  else if (!strcmp(argv[1], "server")) run = run_server;
  else if (!strcmp(argv[1], "spike-idle")) run = run_spike_idle;
  else if (!strcmp(argv[1], "xfer")) run = run_xfer;
  else if (!strcmp(argv[1], "larson")) run = run_larson;
  else if (!strcmp(argv[1], "leak")) run = run_leak;
  else if (!strcmp(argv[1], "exec")) return run_exec();  // no key=value parameters; prints its own PEAK
  if (!run) {
    fprintf(stderr, "arena-workload: unknown workload '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
  }
  int rc = run();
  emit("PEAK hwm_kib=%ld", self_hwm_kib());
  return rc;
}
