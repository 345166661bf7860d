// glibc's malloc-family contracts, checked exactly. Run with and without LD_PRELOAD of
// libArenaMalloc.so (the unpreloaded run proves the checks themselves against glibc).
// Prints one line per failed check ("FAIL <what>: <detail>") and a final line "N passed, M failed";
// exits 1 on any failure. The sections run one after another in a forked child (so heap state carries
// over from section to section, as in one process); a section that crashes or hangs (alarm) is
// reported as a failure and a fresh child carries on with the next section.
//   cc -O2 -pthread -o contract Tests/Fixtures/contract.c
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

// A failed realloc leaves the old block valid: using it afterwards is the point of those checks.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wuse-after-free"
#endif

// Shared with the parent (MAP_SHARED), so counts survive a crashed child.
static struct shared { int passed, failed, section; char doing[160]; } *shared;
#define passed (shared->passed)
#define failed (shared->failed)
static char outbuf[1 << 16];
static int active;
enum { SECTION_SECONDS = 15 };

// Records the call about to be made, for the report of a section that crashes or hangs.
static void doing(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(shared->doing, sizeof shared->doing, fmt, ap);
  va_end(ap);
}

static void check(int ok, const char *what, const char *fmt, ...) {
  if (ok) { passed++; return; }
  failed++;
  printf("FAIL %s: ", what);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

// Hides values from the optimiser, so it cannot fold or drop a malloc/free pair.
static size_t opaque(size_t x) { __asm__ volatile("" : "+r"(x)); return x; }
static void *opaque_ptr(void *p) { __asm__ volatile("" : "+r"(p)); return p; }

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}
// Returns the index of the first wrong byte, or n.
static size_t verify(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 31 + seed)) return i;
  return n;
}
static int is_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) if (p[i]) return 0;
  return 1;
}
static int aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static size_t page;

// --- malloc(0), free(NULL), errno across free -------------------------------------------------

static void malloc_zero(void) {
  enum { N = 64 };
  void *ps[N];
  int nulls = 0, dups = 0;
  for (int i = 0; i < N; i++) {
    ps[i] = malloc(opaque(0));
    if (!ps[i]) nulls++;
    for (int j = 0; j < i; j++) if (ps[i] && ps[i] == ps[j]) dups++;
  }
  check(nulls == 0, "malloc(0) returns non-NULL", "%d of %d calls returned NULL", nulls, N);
  check(dups == 0, "malloc(0) returns a unique pointer each time", "%d duplicates among %d live blocks", dups, N);
  for (int i = 0; i < N; i++) free(ps[i]);
  void *c = calloc(opaque(0), opaque(0));
  check(c != NULL, "calloc(0, 0) returns non-NULL", "NULL");
  free(c);
}

static void free_null(void) {
  errno = 1234;
  free(opaque_ptr(NULL));
  int e = errno;
  check(e == 1234, "free(NULL) is a no-op that keeps errno", "errno %d", e);
}

static void free_keeps_errno(void) {
  static const size_t sizes[] = {16, 1000, 1 << 20, 64 << 20};
  static const char *names[] = {"small (16)", "small (1000)", "large (1 MiB)", "huge (64 MiB)"};
  for (int i = 0; i < 4; i++) {
    unsigned char *p = malloc(opaque(sizes[i]));
    if (!p) { check(0, "free preserves errno", "malloc(%zu) failed", sizes[i]); continue; }
    memset(p, 0x5A, sizes[i]);
    errno = 1234;
    free(p);
    int e = errno;
    check(e == 1234, "free preserves errno", "%s block: errno %d after free, expected 1234", names[i], e);
  }
}

// --- impossible sizes -------------------------------------------------------------------------

static void expect_enomem(void *p, const char *what) {
  int e = errno;
  check(p == NULL, what, "returned %p, expected NULL", p);
  check(e == ENOMEM, what, "errno %d (%s), expected ENOMEM", e, strerror(e));
  free(p);
}

static void impossible_sizes(void) {
  errno = 0;
  expect_enomem(malloc(opaque(SIZE_MAX)), "malloc(SIZE_MAX) -> NULL, ENOMEM");
  errno = 0;
  expect_enomem(malloc(opaque((size_t)PTRDIFF_MAX + 1)), "malloc(PTRDIFF_MAX+1) -> NULL, ENOMEM");
  errno = 0;
  expect_enomem(malloc(opaque(SIZE_MAX - 4095)), "malloc(SIZE_MAX-4095) -> NULL, ENOMEM");
  errno = 0;
  expect_enomem(calloc(opaque(SIZE_MAX / 2), opaque(3)), "calloc(SIZE_MAX/2, 3) overflow -> NULL, ENOMEM");
  errno = 0;
  expect_enomem(calloc(opaque((size_t)1 << 33), opaque((size_t)1 << 31)), "calloc(2^33, 2^31) overflow -> NULL, ENOMEM");
  errno = 0;
  expect_enomem(calloc(opaque(1), opaque(SIZE_MAX)), "calloc(1, SIZE_MAX) -> NULL, ENOMEM");

  // reallocarray overflow: NULL + ENOMEM, the old block untouched and still usable.
  unsigned char *p = malloc(opaque(100));
  fill(p, 100, 7);
  errno = 0;
  void *q = reallocarray(p, opaque(SIZE_MAX / 2), opaque(3));
  int e = errno;
  check(q == NULL, "reallocarray overflow -> NULL", "returned %p", q);
  check(e == ENOMEM, "reallocarray overflow -> ENOMEM", "errno %d", e);
  size_t bad = verify(p, 100, 7);
  check(bad == 100, "reallocarray overflow leaves the old block intact", "byte %zu differs", bad);
  check(malloc_usable_size(p) >= 100, "reallocarray overflow leaves the old block intact",
        "malloc_usable_size %zu < 100", malloc_usable_size(p));
  unsigned char *r = reallocarray(p, opaque(50), opaque(4));
  check(r != NULL && verify(r, 100, 7) == 100, "reallocarray(p, 50, 4) grows and keeps contents", "r=%p", (void *)r);
  free(r ? r : p);

  // realloc(p, SIZE_MAX): NULL + ENOMEM, p still valid with its bytes.
  static const size_t olds[] = {24, 5000, 300000, 8 << 20};
  for (int i = 0; i < 4; i++) {
    size_t n = olds[i];
    unsigned char *b = malloc(opaque(n));
    fill(b, n, 11);
    errno = 0;
    void *x = realloc(b, opaque(SIZE_MAX));
    int ee = errno;
    check(x == NULL, "realloc(p, SIZE_MAX) -> NULL", "old size %zu: returned %p", n, x);
    check(ee == ENOMEM, "realloc(p, SIZE_MAX) -> ENOMEM", "old size %zu: errno %d", n, ee);
    size_t where = verify(b, n, 11);
    check(where == n, "realloc(p, SIZE_MAX) leaves p valid with its bytes", "old size %zu: byte %zu differs", n, where);
    errno = 0;
    x = realloc(b, opaque((size_t)PTRDIFF_MAX + 1));
    ee = errno;
    check(x == NULL && ee == ENOMEM, "realloc(p, PTRDIFF_MAX+1) -> NULL, ENOMEM", "old size %zu: %p errno %d", n, x, ee);
    // p must still be usable: grow it for real.
    unsigned char *y = realloc(b, n * 2);
    check(y != NULL && verify(y, n, 11) == n, "p usable after a failed realloc", "old size %zu", n);
    free(y ? y : b);
  }

  // realloc(NULL, n) works like malloc.
  static const size_t ns[] = {0, 1, 100, 70000, 4 << 20};
  for (int i = 0; i < 5; i++) {
    unsigned char *m = realloc(opaque_ptr(NULL), opaque(ns[i]));
    check(m != NULL, "realloc(NULL, n) works like malloc", "n=%zu returned NULL", ns[i]);
    if (!m) continue;
    check(malloc_usable_size(m) >= ns[i], "realloc(NULL, n) works like malloc", "n=%zu usable %zu", ns[i], malloc_usable_size(m));
    check(aligned(m, 16), "realloc(NULL, n) is 16-byte aligned", "n=%zu p=%p", ns[i], (void *)m);
    fill(m, ns[i], 3);
    check(verify(m, ns[i], 3) == ns[i], "realloc(NULL, n) memory is writable", "n=%zu", ns[i]);
    free(m);
  }
}

// --- alignment --------------------------------------------------------------------------------

static const size_t asizes[] = {0, 1, 7, 16, 100, 255, 256, 257, 4095, 4096, 4097, 65536, 1 << 20, 3 << 20};
#define NSIZES (sizeof asizes / sizeof asizes[0])

// Checks one aligned block: non-NULL, aligned, usable >= size, and writable.
static void check_aligned_block(const char *fn, void *p, size_t a, size_t n) {
  char what[64];
  snprintf(what, sizeof what, "%s alignment property", fn);
  if (!p) { check(0, what, "%s(%zu, %zu) returned NULL", fn, a, n); return; }
  check(aligned(p, a), what, "%s(%zu, %zu) = %p is not %zu-aligned", fn, a, n, p, a);
  size_t u = malloc_usable_size(p);
  check(u >= n, what, "%s(%zu, %zu): malloc_usable_size %zu < size", fn, a, n, u);
  if (n) {
    unsigned char *b = p;
    memset(b, 0xC3, n);
    check(b[0] == 0xC3 && b[n - 1] == 0xC3, what, "%s(%zu, %zu): not writable", fn, a, n);
  }
}

static void posix_memalign_contract(void) {
  // EINVAL: 0, 3, 24, sizeof(void *)/2, any non-power-of-two; *out and errno untouched.
  static const size_t bad[] = {0, 1, 2, 3, sizeof(void *) / 2, sizeof(void *) + 1, 24, 48, 1000, 4097, 3 << 20, (size_t)1 << 63 | 8};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    void *out = (void *)0x1234;
    errno = 777;
    int rc = posix_memalign(&out, opaque(bad[i]), 64);
    int e = errno;
    check(rc == EINVAL, "posix_memalign rejects a bad alignment with EINVAL", "alignment %zu: rc %d", bad[i], rc);
    check(out == (void *)0x1234, "posix_memalign leaves *memptr alone on failure", "alignment %zu: *memptr %p", bad[i], out);
    check(e == 777, "posix_memalign leaves errno alone", "alignment %zu: errno %d", bad[i], e);
    if (rc == 0) free(out);
  }
  // Every power of two from sizeof(void *) to 1 MiB x every size: 0 and an aligned block.
  int allocations = 0;
  for (size_t a = sizeof(void *); a <= (1u << 20); a <<= 1) {
    for (size_t s = 0; s < NSIZES; s++) {
      void *p = NULL;
      errno = 777;
      doing("posix_memalign(&p, %zu, %zu) after the earlier ones of this loop", a, asizes[s]);
      int rc = posix_memalign(&p, opaque(a), opaque(asizes[s]));
      int e = errno;
      check(rc == 0, "posix_memalign returns 0 for a power-of-two alignment", "(%zu, %zu): rc %d", a, asizes[s], rc);
      check(e == 777, "posix_memalign leaves errno untouched on success", "(%zu, %zu): errno %d", a, asizes[s], e);
      if (rc == 0) { check_aligned_block("posix_memalign", p, a, asizes[s]); free(p); allocations++; }
    }
  }
  // The case that must not be confused with anything else: posix_memalign(256, 256).
  void *p = NULL;
  int rc = posix_memalign(&p, 256, 256);
  check(rc == 0 && p && aligned(p, 256) && malloc_usable_size(p) >= 256, "posix_memalign(256, 256)",
        "rc %d p %p usable %zu", rc, p, p ? malloc_usable_size(p) : 0);
  free(p);
  // Several live at once, so alignment holds for more than the first block of a run.
  void *live[64];
  for (int i = 0; i < 64; i++) {
    live[i] = NULL;
    rc = posix_memalign(&live[i], 256, 256);
    check(rc == 0 && aligned(live[i], 256), "posix_memalign(256, 256), 64 live", "#%d rc %d p %p", i, rc, live[i]);
  }
  for (int i = 0; i < 64; i++) free(live[i]);
  // Impossible size with a valid alignment: ENOMEM returned (not EINVAL), *memptr untouched.
  void *out = (void *)0x1234;
  rc = posix_memalign(&out, 64, opaque(SIZE_MAX - 10));
  check(rc == ENOMEM, "posix_memalign(64, SIZE_MAX-10) returns ENOMEM", "rc %d", rc);
  check(out == (void *)0x1234, "posix_memalign leaves *memptr alone on ENOMEM", "*memptr %p", out);
}

static void aligned_alloc_memalign(void) {
  for (size_t a = 1; a <= (1u << 20); a <<= 1) {
    for (size_t s = 0; s < NSIZES; s++) {
      doing("aligned_alloc(%zu, %zu) after the earlier ones of this loop", a, asizes[s]);
      void *p = aligned_alloc(opaque(a), opaque(asizes[s]));
      check_aligned_block("aligned_alloc", p, a, asizes[s]);
      free(p);
      doing("memalign(%zu, %zu) after the earlier ones of this loop", a, asizes[s]);
      p = memalign(opaque(a), opaque(asizes[s]));
      check_aligned_block("memalign", p, a, asizes[s]);
      free(p);
    }
  }
}

static void memalign_rounding_and_enomem(void) {
  // glibc's memalign rounds a non-power-of-two alignment up to the next power of two.
  void *m = memalign(opaque(24), 100);
  check(m && aligned(m, 32), "memalign(24, 100) is 32-aligned", "%p", m);
  free(m);
  // glibc 2.36 serves aligned_alloc as memalign: 0 and non-powers of two are rounded up.
  void *a = aligned_alloc(opaque(24), 40);
  check(a && aligned(a, 32), "aligned_alloc(24, 40) is 32-aligned (glibc 2.36 rounds up)", "%p", a);
  free(a);
  a = aligned_alloc(opaque(0), 40);
  check(a != NULL, "aligned_alloc(0, 40) is served (glibc 2.36)", "%p", a);
  free(a);
  // Alignments above the page-run limit with size 0: a unique block, freeable and resizable.
  void *z1 = aligned_alloc(opaque((size_t)4 << 20), 0), *z2 = aligned_alloc(opaque((size_t)4 << 20), 0);
  check(z1 && z2 && z1 != z2 && aligned(z1, (size_t)4 << 20) && aligned(z2, (size_t)4 << 20),
        "aligned_alloc(4 MiB, 0) twice gives two distinct aligned blocks", "%p %p", z1, z2);
  if (z1) check(malloc_usable_size(z1) < ((size_t)1 << 30), "malloc_usable_size of a 0-byte aligned block", "%zu", malloc_usable_size(z1));
  void *z3 = realloc(z1, 100);
  check(z3 != NULL, "realloc of a 0-byte 4 MiB-aligned block", "%p", z3);
  free(z3);
  free(z2);
  errno = 0;
  void *x = aligned_alloc(opaque(64), opaque(SIZE_MAX - 10));
  int e = errno;
  check(x == NULL && e == ENOMEM, "aligned_alloc(64, SIZE_MAX-10) -> NULL, ENOMEM", "%p errno %d", x, e);
}

static void valloc_page_aligned(void) {
  static const size_t vs[] = {0, 1, 100, 4096, 5000, 1 << 20};
  for (int i = 0; i < 6; i++) {
    void *v = valloc(opaque(vs[i]));
    check(v && aligned(v, page), "valloc is page-aligned", "valloc(%zu) = %p", vs[i], v);
    if (v) check(malloc_usable_size(v) >= vs[i], "valloc usable size", "valloc(%zu): %zu", vs[i], malloc_usable_size(v));
    free(v);
  }
}

static void pvalloc_whole_pages(void) {
  static const size_t pvs[] = {0, 1, 4095, 4096, 4097};
  for (int i = 0; i < 5; i++) {
    void *v = pvalloc(opaque(pvs[i]));
    size_t want = pvs[i] == 0 ? page : (pvs[i] + page - 1) / page * page;
    check(v && aligned(v, page), "pvalloc is page-aligned", "pvalloc(%zu) = %p", pvs[i], v);
    // glibc 2.36 itself hands out a minimum chunk for pvalloc(0); the arena promises a page.
    if (v && (active || pvs[i] != 0))
      check(malloc_usable_size(v) >= want && malloc_usable_size(v) >= 4096, "pvalloc rounds up to whole pages (>= 4096)",
                 "pvalloc(%zu): malloc_usable_size %zu < %zu", pvs[i], malloc_usable_size(v), want);
    if (v) memset(v, 0xEE, malloc_usable_size(v));
    free(v);
  }
}

// --- calloc zeroes ----------------------------------------------------------------------------

static void calloc_zero(void) {
  static const size_t sizes[] = {16, 1000, 40000, 1 << 20};
  for (int i = 0; i < 4; i++) {
    size_t n = sizes[i];
    unsigned char *c = calloc(1, opaque(n));
    check(c && is_zero(c, n), "calloc memory is zero", "fresh calloc(1, %zu)", n);
    free(c);
    // Dirty memory of the same size, freed, then calloc again (repeated, with several blocks, so
    // the dirty block is reused whatever the cache order).
    for (int round = 0; round < 3; round++) {
      unsigned char *d[8];
      for (int k = 0; k < 8; k++) { d[k] = malloc(opaque(n)); memset(d[k], 0xAB, malloc_usable_size(d[k])); }
      for (int k = 0; k < 8; k++) free(d[k]);
      for (int k = 0; k < 8; k++) {
        d[k] = calloc(opaque(n), 1);
        size_t u = d[k] ? malloc_usable_size(d[k]) : 0;
        check(d[k] && is_zero(d[k], n), "calloc memory is zero after freeing dirty memory", "calloc(%zu, 1) #%d has non-zero bytes", n, k);
        (void)u;
      }
      for (int k = 0; k < 8; k++) free(d[k]);
    }
    // calloc(count, size) form with the same byte count.
    unsigned char *e = malloc(opaque(n));
    memset(e, 0xAB, n);
    free(e);
    e = calloc(opaque(n / 8), 8);
    check(e && is_zero(e, n / 8 * 8), "calloc(n/8, 8) memory is zero after dirty free", "n=%zu", n);
    free(e);
  }
  // Large calloc (fresh mapping territory).
  size_t big = 48 << 20;
  unsigned char *b = malloc(opaque(big));
  memset(b, 0xAB, big);
  free(b);
  b = calloc(1, opaque(big));
  check(b && is_zero(b, big), "calloc(1, 48 MiB) is zero after a dirty 48 MiB free", "%p", (void *)b);
  free(b);
}

// --- malloc_usable_size -----------------------------------------------------------------------

static void usable_size(void) {
  check(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) == 0", "%zu", malloc_usable_size(NULL));
  size_t sizes[2200];
  int n = 0;
  for (size_t s = 0; s <= 1100; s++) sizes[n++] = s;
  for (size_t s = 1101; s < 70000; s = s * 9 / 8 + 13) sizes[n++] = s;
  for (int sh = 10; sh <= 24; sh++) {
    sizes[n++] = ((size_t)1 << sh) - 1;
    sizes[n++] = (size_t)1 << sh;
    sizes[n++] = ((size_t)1 << sh) + 1;
    sizes[n++] = ((size_t)3 << sh) / 2 + 8;
  }
  int bad_size = 0, bad_bytes = 0, bad_neighbours = 0;
  for (int i = 0; i < n; i++) {
    size_t s = sizes[i];
    doing("malloc(%zu) and 4 neighbours, all usable bytes written", s);
    unsigned char *p = malloc(opaque(s));
    if (!p) { check(0, "malloc(n) succeeds", "n=%zu", s); continue; }
    size_t u = malloc_usable_size(p);
    if (u < s) { if (bad_size++ < 5) check(0, "malloc_usable_size >= requested", "n=%zu usable %zu", s, u); }
    // Fill all usable bytes, then allocate neighbours of the same size and fill them too.
    fill(p, u, 41);
    unsigned char *nb[4];
    size_t nu[4];
    for (int k = 0; k < 4; k++) {
      nb[k] = malloc(opaque(s));
      nu[k] = nb[k] ? malloc_usable_size(nb[k]) : 0;
      if (nb[k]) fill(nb[k], nu[k], (unsigned)(k + 1) * 17);
    }
    size_t at = verify(p, u, 41);
    if (at != u && bad_bytes++ < 5)
      check(0, "writing all usable bytes is safe", "n=%zu usable %zu: byte %zu changed after neighbours were filled", s, u, at);
    for (int k = 0; k < 4; k++) {
      if (nb[k] && verify(nb[k], nu[k], (unsigned)(k + 1) * 17) != nu[k] && bad_neighbours++ < 5)
        check(0, "writing all usable bytes is safe", "n=%zu: neighbour %d corrupted", s, k);
      free(nb[k]);
    }
    free(p);
  }
  check(bad_size == 0, "malloc_usable_size >= requested (all sizes)", "%d sizes short", bad_size);
  check(bad_bytes == 0 && bad_neighbours == 0, "writing all usable bytes is safe (all sizes)",
        "%d blocks, %d neighbours corrupted", bad_bytes, bad_neighbours);
}

// --- realloc keeps contents -------------------------------------------------------------------

static void realloc_chain(void) {
  static const size_t chain[] = {16, 1 << 20, 100 << 20, 10};
  unsigned char *p = malloc(opaque(chain[0]));
  fill(p, chain[0], 99);
  size_t have = chain[0];
  for (int i = 1; i < 4; i++) {
    size_t n = chain[i];
    unsigned char *q = realloc(p, opaque(n));
    check(q != NULL, "realloc grow/shrink succeeds", "%zu -> %zu returned NULL", have, n);
    if (!q) { free(p); return; }
    size_t keep = have < n ? have : n;
    size_t at = verify(q, keep, 99);
    check(at == keep, "realloc keeps contents", "%zu -> %zu: byte %zu differs", have, n, at);
    check(malloc_usable_size(q) >= n, "realloc usable size", "%zu -> %zu: usable %zu", have, n, malloc_usable_size(q));
    fill(q, n, 99);
    p = q;
    have = n;
  }
  free(p);
  // Same-block grow/shrink around class boundaries.
  unsigned char *r = malloc(1);
  fill(r, 1, 5);
  size_t cur = 1;
  for (size_t n = 2; n < 300000; n = n * 3 / 2 + 1) {
    unsigned char *q = realloc(r, opaque(n));
    if (!q) { check(0, "realloc step", "%zu -> %zu NULL", cur, n); free(r); return; }
    size_t at = verify(q, cur, 5);
    if (at != cur) { check(0, "realloc keeps contents (steps)", "%zu -> %zu: byte %zu", cur, n, at); }
    fill(q, n, 5);
    r = q;
    cur = n;
  }
  for (size_t n = cur; n > 1; n = n / 3) {
    unsigned char *q = realloc(r, opaque(n));
    if (!q) { check(0, "realloc shrink step", "%zu -> %zu NULL", cur, n); free(r); return; }
    size_t at = verify(q, n, 5);
    if (at != n) { check(0, "realloc keeps contents (shrink steps)", "%zu -> %zu: byte %zu", cur, n, at); }
    r = q;
    cur = n;
  }
  free(r);
  passed++;
}

// --- malloc_trim / mallinfo2 / malloc_stats, and who serves each name -------------------------

static void introspection(void) {
  int rc = malloc_trim(0);
  check(rc == 0 || rc == 1, "malloc_trim(0) returns 0 or 1", "returned %d", rc);
  size_t big = 10 << 20;
  unsigned char *b = malloc(opaque(big));
  memset(b, 1, big);
  struct mallinfo2 mi = mallinfo2();
  if (active) {
    check(mi.uordblks >= big, "mallinfo2().uordblks >= bytes allocated (10 MiB live)",
          "uordblks %zu < %zu (arena %zu, hblkhd %zu)", mi.uordblks, big, mi.arena, mi.hblkhd);
  } else {
    // glibc counts mmapped chunks in hblkhd, not uordblks.
    check(mi.uordblks + mi.hblkhd >= big, "mallinfo2() counts the 10 MiB block", "uordblks %zu hblkhd %zu", mi.uordblks, mi.hblkhd);
  }
  free(b);
  rc = malloc_trim(0);
  check(rc == 0 || rc == 1, "malloc_trim(0) returns 0 or 1 after a free", "returned %d", rc);
  fflush(stdout);
  malloc_stats();  // prints to stderr; must not crash
  passed++;

  if (!active) return;
  // Every allocator name must be served by the same object as malloc: a name left to glibc would
  // report glibc's (empty) heap or, worse, touch our blocks with glibc's code.
  Dl_info mine;
  void *m = dlsym(RTLD_DEFAULT, "malloc");
  if (!m || !dladdr(m, &mine)) { check(0, "dladdr(malloc)", "failed"); return; }
  static const char *names[] = {"free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
                                "memalign", "valloc", "pvalloc", "malloc_usable_size", "malloc_trim",
                                "malloc_stats", "mallinfo", "mallinfo2"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    void *f = dlsym(RTLD_DEFAULT, names[i]);
    Dl_info info;
    const char *who = (f && dladdr(f, &info)) ? info.dli_fname : "(not found)";
    check(strcmp(who, mine.dli_fname) == 0, "every malloc-family name is served by the preloaded allocator",
          "%s is served by %s, malloc by %s", names[i], who, mine.dli_fname);
  }
}

static const struct { const char *name; void (*run)(void); } sections[] = {
  {"malloc(0)", malloc_zero},
  {"free(NULL)", free_null},
  {"free keeps errno", free_keeps_errno},
  {"impossible sizes", impossible_sizes},
  {"posix_memalign", posix_memalign_contract},
  {"aligned_alloc/memalign alignment", aligned_alloc_memalign},
  {"memalign rounding, aligned_alloc ENOMEM", memalign_rounding_and_enomem},
  {"valloc", valloc_page_aligned},
  {"pvalloc", pvalloc_whole_pages},
  {"calloc zeroes", calloc_zero},
  {"malloc_usable_size", usable_size},
  {"realloc keeps contents", realloc_chain},
  {"malloc_trim/mallinfo2/malloc_stats", introspection},
};
#define NSECTIONS (int)(sizeof sections / sizeof sections[0])

int main(void) {
  setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);
  page = (size_t)sysconf(_SC_PAGESIZE);
  // The hang detector is SIGALRM: make sure it is neither blocked nor ignored (a test runner's
  // spawned children may inherit either).
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGALRM, SIG_DFL);
  shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) { perror("mmap"); return 2; }
  int (*is_active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "arena_malloc_is_active");
  active = is_active ? is_active() : 0;
  printf("arena_malloc_is_active=%d\n", active);
  fflush(stdout);

  int next = 0;
  while (next < NSECTIONS) {
    shared->section = next;
    shared->doing[0] = 0;
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
      for (int i = next; i < NSECTIONS; i++) {
        shared->section = i;
        shared->doing[0] = 0;
        alarm(SECTION_SECONDS);
        sections[i].run();
        fflush(stdout);
      }
      alarm(0);
      shared->section = NSECTIONS;
      _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    int at = shared->section;
    if (at >= NSECTIONS && WIFEXITED(status) && WEXITSTATUS(status) == 0) break;
    failed++;
    const char *name = sections[at < NSECTIONS ? at : NSECTIONS - 1].name;
    char what[96];
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
      snprintf(what, sizeof what, "hung (did not finish within %d s)", SECTION_SECONDS);
    else if (WIFSIGNALED(status))
      snprintf(what, sizeof what, "crashed with signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
      snprintf(what, sizeof what, "child exited with status %d", WEXITSTATUS(status));
    printf("FAIL section \"%s\": %s%s%s\n", name, what, shared->doing[0] ? "; last call started: " : "", shared->doing);
    fflush(stdout);
    next = at + 1;
  }

  printf("%d passed, %d failed\n", passed, failed);
  fflush(stdout);
  return failed ? 1 : 0;
}
