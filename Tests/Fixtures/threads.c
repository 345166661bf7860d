// 8 threads doing random malloc/free of 16 B - 64 KiB with content verification, plus a
// producer/consumer pair passing blocks across threads (every consumer free is a cross-thread free,
// and the consumer sends blocks back for the producer to free). Prints "threads ok" and exits 0, or
// prints "FAIL ..." lines and exits 1.
//   cc -O2 -pthread -o threads Tests/Fixtures/threads.c
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WORKERS = 8, SLOTS = 512, OPS = 200000, HANDOFFS = 200000, RING = 256 };

static atomic_int failures;

static void fail(const char *fmt, unsigned long a, unsigned long b, unsigned long c) {
  if (atomic_fetch_add(&failures, 1) < 20) {
    char line[256];
    snprintf(line, sizeof line, fmt, a, b, c);
    // One write per line: threads do not interleave inside a line.
    fprintf(stdout, "FAIL %s\n", line);
    fflush(stdout);
  }
}

static uint64_t next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *s = x;
}

// Mostly small, sometimes medium, occasionally up to 64 KiB.
static size_t random_size(uint64_t *s) {
  uint64_t r = next(s);
  unsigned pick = (unsigned)(r % 100);
  r >>= 8;
  if (pick < 80) return 16 + r % (512 - 16 + 1);
  if (pick < 95) return 512 + r % (8192 - 512 + 1);
  return 8192 + r % (65536 - 8192 + 1);
}

// The pattern depends on a tag (owner and generation), so a block handed to two owners is caught.
// Byte i is byte i%8 of word i/8, so any prefix of a block can be checked (realloc shrinks).
static uint64_t word(uint64_t tag, size_t i) { return tag ^ (i * 0x9E3779B97F4A7C15ull); }
static void fill(void *p, size_t n, uint64_t tag) {
  uint64_t *w = p;
  size_t words = n / 8;
  for (size_t i = 0; i < words; i++) w[i] = word(tag, i);
  unsigned char *b = p;
  for (size_t i = words * 8; i < n; i++) b[i] = (unsigned char)(word(tag, i / 8) >> (i % 8 * 8));
}
static int intact(const void *p, size_t n, uint64_t tag) {
  const uint64_t *w = p;
  size_t words = n / 8;
  for (size_t i = 0; i < words; i++) if (w[i] != word(tag, i)) return 0;
  const unsigned char *b = p;
  for (size_t i = words * 8; i < n; i++) if (b[i] != (unsigned char)(word(tag, i / 8) >> (i % 8 * 8))) return 0;
  return 1;
}

struct slot { void *p; size_t n; uint64_t tag; };

static void *worker(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  uint64_t seed = 0x1234567ull * (id + 1) + 99;
  struct slot *slots = calloc(SLOTS, sizeof *slots);
  if (!slots) { fail("worker %lu: calloc of slots failed", id, 0, 0); return NULL; }
  for (unsigned long op = 0; op < OPS; op++) {
    struct slot *s = &slots[next(&seed) % SLOTS];
    if (s->p) {
      if (!intact(s->p, s->n, s->tag)) fail("worker %lu: block of %lu bytes corrupted (op %lu)", id, s->n, op);
      if ((next(&seed) & 7) == 0) {
        // Sometimes grow/shrink instead of free.
        size_t n = random_size(&seed);
        void *q = realloc(s->p, n);
        if (!q) { fail("worker %lu: realloc to %lu failed", id, n, 0); continue; }
        size_t keep = n < s->n ? n : s->n;
        if (!intact(q, keep, s->tag)) fail("worker %lu: realloc %lu -> %lu lost contents", id, s->n, n);
        s->p = q; s->n = n; s->tag = ((uint64_t)id << 56) | op;
        fill(q, n, s->tag);
        continue;
      }
      free(s->p);
      s->p = NULL;
    } else {
      size_t n = random_size(&seed);
      void *p = (next(&seed) & 15) == 0 ? calloc(1, n) : malloc(n);
      if (!p) { fail("worker %lu: malloc(%lu) failed", id, n, 0); continue; }
      if (malloc_usable_size(p) < n) fail("worker %lu: malloc_usable_size %lu < %lu", id, malloc_usable_size(p), n);
      s->p = p; s->n = n; s->tag = ((uint64_t)id << 56) | op;
      fill(p, n, s->tag);
    }
  }
  for (unsigned i = 0; i < SLOTS; i++) {
    if (slots[i].p && !intact(slots[i].p, slots[i].n, slots[i].tag)) fail("worker %lu: block %lu corrupted at the end", id, i, 0);
    free(slots[i].p);
  }
  free(slots);
  return NULL;
}

// A bounded ring protected by a mutex: the producer allocates, the consumer checks and frees.
struct ring {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  struct slot *items;
  unsigned capacity, head, count;
  int done;
};
// The way back holds every block the consumer can send, so the consumer never waits on a producer
// that is itself waiting on the way forward.
enum { BACK = HANDOFFS / 4 + 1 };
static struct slot forward_items[RING], back_items[BACK];
static struct ring forward = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, forward_items, RING, 0, 0, 0};
static struct ring back = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, back_items, BACK, 0, 0, 0};

static void push(struct ring *r, struct slot s) {
  pthread_mutex_lock(&r->lock);
  while (r->count == r->capacity) pthread_cond_wait(&r->not_full, &r->lock);
  r->items[(r->head + r->count) % r->capacity] = s;
  r->count++;
  pthread_cond_signal(&r->not_empty);
  pthread_mutex_unlock(&r->lock);
}
// Returns 0 when the ring is closed and empty.
static int pop(struct ring *r, struct slot *out, int wait) {
  pthread_mutex_lock(&r->lock);
  while (r->count == 0 && !r->done && wait) pthread_cond_wait(&r->not_empty, &r->lock);
  if (r->count == 0) { pthread_mutex_unlock(&r->lock); return 0; }
  *out = r->items[r->head];
  r->head = (r->head + 1) % r->capacity;
  r->count--;
  pthread_cond_signal(&r->not_full);
  pthread_mutex_unlock(&r->lock);
  return 1;
}
static void close_ring(struct ring *r) {
  pthread_mutex_lock(&r->lock);
  r->done = 1;
  pthread_cond_broadcast(&r->not_empty);
  pthread_mutex_unlock(&r->lock);
}

static atomic_ulong consumed, returned;

static void *producer(void *arg) {
  (void)arg;
  uint64_t seed = 0xABCDEF;
  for (unsigned long i = 0; i < HANDOFFS; i++) {
    size_t n = random_size(&seed);
    void *p = malloc(n);
    if (!p) { fail("producer: malloc(%lu) failed", n, 0, 0); continue; }
    struct slot s = {p, n, 0xF00D000000000000ull | i};
    fill(p, n, s.tag);
    push(&forward, s);
    // Free what the consumer sent back (allocated there: cross-thread in the other direction).
    struct slot b;
    while (pop(&back, &b, 0)) {
      if (!intact(b.p, b.n, b.tag)) fail("producer: returned block of %lu bytes corrupted", b.n, 0, 0);
      free(b.p);
      atomic_fetch_add(&returned, 1);
    }
  }
  close_ring(&forward);
  struct slot b;
  while (pop(&back, &b, 1)) {
    if (!intact(b.p, b.n, b.tag)) fail("producer: returned block of %lu bytes corrupted", b.n, 0, 0);
    free(b.p);
    atomic_fetch_add(&returned, 1);
  }
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  struct slot s;
  unsigned long k = 0;
  while (pop(&forward, &s, 1)) {
    if (!intact(s.p, s.n, s.tag)) fail("consumer: block #%lu of %lu bytes corrupted", s.tag & 0xFFFFFFFF, s.n, 0);
    free(s.p);  // cross-thread free
    atomic_fetch_add(&consumed, 1);
    if ((k++ & 3) == 0) {
      size_t n = 16 + (k * 37) % 4000;
      void *p = malloc(n);
      if (!p) { fail("consumer: malloc(%lu) failed", n, 0, 0); continue; }
      struct slot b = {p, n, 0xBAC0000000000000ull | k};
      fill(p, n, b.tag);
      push(&back, b);
    }
  }
  close_ring(&back);
  return NULL;
}

int main(void) {
  int (*is_active)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "arena_malloc_is_active");
  printf("arena_malloc_is_active=%d\n", is_active ? is_active() : 0);
  fflush(stdout);
  pthread_t w[WORKERS], prod, cons;
  for (unsigned i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, worker, (void *)(uintptr_t)i);
  pthread_create(&prod, NULL, producer, NULL);
  pthread_create(&cons, NULL, consumer, NULL);
  for (unsigned i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
  pthread_join(prod, NULL);
  pthread_join(cons, NULL);
  if (atomic_load(&consumed) != HANDOFFS) fail("consumer saw %lu of %lu blocks", atomic_load(&consumed), HANDOFFS, 0);
  unsigned long expected_back = (HANDOFFS + 3) / 4;
  if (atomic_load(&returned) != expected_back) fail("producer got back %lu of %lu blocks", atomic_load(&returned), expected_back, 0);
  if (atomic_load(&failures)) { printf("threads FAILED: %d failures\n", atomic_load(&failures)); return 1; }
  printf("threads ok\n");
  return 0;
}
