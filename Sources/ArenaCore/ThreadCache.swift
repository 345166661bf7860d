// Thread caches: per-thread free lists, one per size class, on the common path of malloc and free.
// A thread allocates from and frees into its own lists with plain loads and stores: no lock, no
// atomic read-modify-write, no system call. A list that runs dry is refilled from the class
// central with half its limit in one locked step; a list over its limit gives half back the same
// way. Limits adapt per bin between a quarter of the class's limit and all of it (16 KiB of blocks
// up to 1 KiB, 32 KiB above): a bin that runs dry doubles its limit, a bin that overflows twice
// without a refill halves it. A block freed by another thread simply
// joins the freeing thread's cache (a remote free costs the same as a local one); the batch flush
// returns it to its run, and a thread that only frees small blocks (a consumer) keeps at most
// 4 KiB per class.
//
// The initial-exec thread-local `arena_tls` (CSystemShims.h) holds the cache's address (or 0 before
// the first call, 1 while the thread exits, 2 while the cache is lent) and a busy count that the
// owner raises around every use of its cache. The cache itself is a block of the default heap, so
// any number of threads costs no static storage; thread exit gives it back.
//
// Idle caches. A thread that stops calling the allocator would keep its cached blocks (up to
// 16-32 KiB per class) forever. The scavenger (and malloc_trim) takes them back: a cache whose owner
// has not refilled or flushed for the decay time is lent to the scavenger (its slot is set to 2,
// a process-wide membarrier separates that store from the owner's next read, and the owner's busy
// count shows whether it was in the middle of a call), emptied into the centrals and handed back.
// While lent, the owner allocates from the centrals directly; it never waits for the scavenger.
import CSystemShims

typealias ThreadCachePointer = UnsafeMutablePointer<ThreadCache>

/// One size class's free list in a thread cache.
struct CacheBin {
  var head: UnsafeMutableRawPointer?
  var count: UInt32
  /// The count above which free() gives half back; adapts between `ThreadCaches.minimumLimit`
  /// and the class's `ClassTable.cacheLimit` (see `refill` and `overflow`).
  var limit: UInt16
  /// 1 once the bin was refilled since its last overflow.
  var refilled: UInt16
}

/// A thread's cache header; `SizeClass.count + 1` bins follow it in memory.
struct ThreadCache {
  var heap: HeapPointer
  var next: ThreadCachePointer?
  var prev: ThreadCachePointer?
  /// The owner's thread-local slot (stealers and the fork child reach it through this).
  var slot: UnsafeMutablePointer<arena_tls_t>
  /// Refills and flushes so far (owner only): unchanged for the decay time means idle.
  var events: UInt32
  /// Scavenger's bookkeeping (cache lock): `events` at its last look, and when that changed.
  var seenEvents: UInt32
  var quietSince: UInt
  /// Set while the scavenger empties the cache (cache lock); the next lent cache of its batch.
  var lent: UInt32
  var pad: UInt32
  var nextLent: ThreadCachePointer?

  @inline(__always) static var binsOffset: Int { 64 }
  @inline(__always) static var byteCount: Int { binsOffset &+ (SizeClass.count &+ 1) &* MemoryLayout<CacheBin>.stride }
  /// The slot value of a lent cache.
  @inline(__always) static var lentMark: UInt { 2 }
}

extension UnsafeMutablePointer where Pointee == ThreadCache {
  @inline(__always) func bin(_ c: Int) -> UnsafeMutablePointer<CacheBin> {
    (UnsafeMutableRawPointer(self) + ThreadCache.binsOffset).assumingMemoryBound(to: CacheBin.self) + c
  }
}

enum ThreadCaches {
  /// Marks the calling thread busy and returns its cache, or nil when it has none or its cache is
  /// lent. Every `enter` is matched by a `leave` once the cache is no longer used.
  @inline(__always)
  static func enter() -> ThreadCachePointer? {
    let raw = arena_tls_enter()
    if UInt(bitPattern: raw) > ThreadCache.lentMark { return raw?.assumingMemoryBound(to: ThreadCache.self) }
    return nil
  }

  @inline(__always) static func leave() { arena_tls_leave() }

  /// The calling thread's cache (entering it), created on the thread's first allocation; nil
  /// while the thread exits, while the cache is lent, or when memory is exhausted.
  @inline(__always)
  static func enterOrCreate(_ h: HeapPointer) -> ThreadCachePointer? {
    if let tc = enter() { return tc }
    return arena_tls_get() == nil ? createCurrent(h) : nil
  }

  /// Frees a thread makes before it has a cache: `enterOrCreateForFree` creates one only after
  /// this many.
  @inline(__always) static var uncachedFreeLimit: UInt { 32 }

  /// The calling thread's cache for a free (entering it). A thread that has not allocated gets a
  /// cache only on its 32nd free: a detached thread's exit path frees memory (glibc frees the DTVs
  /// of cached stacks) after its thread-exit hooks have run, and a cache created then would never
  /// be handed back. Threads created through the pthread_create wrapper take their cache when they
  /// start (`arena_thread_started`), so this only guards threads created some other way. A thread
  /// that only frees (a queue's consumer) gets its cache soon enough.
  @inline(__always)
  static func enterOrCreateForFree(_ h: HeapPointer) -> ThreadCachePointer? {
    if let tc = enter() { return tc }
    guard arena_tls_get() == nil, arena_tls_count_uncached_free() >= uncachedFreeLimit else { return nil }
    return createCurrent(h)
  }

  /// Creates the calling thread's cache (first allocator call of a thread), or nil if the thread is
  /// exiting or memory is exhausted. The caller has entered (busy), so no stealer takes the new
  /// cache while it is handed back.
  @inline(never)
  static func createCurrent(_ h: HeapPointer) -> ThreadCachePointer? {
    guard arena_tls_get() == nil else { return nil }
    let c = SizeClass.index(forSize: ThreadCache.byteCount)
    let list = SmallRuns.take(h, c, count: 1)
    guard let block = list.head else { return nil }
    block.initializeMemory(as: UInt8.self, repeating: 0, count: ThreadCache.byteCount)
    let tc = block.assumingMemoryBound(to: ThreadCache.self)
    tc.pointee.heap = h
    tc.pointee.slot = arena_tls_address()
    var k = 1
    while k <= SizeClass.count {
      tc.bin(k).pointee.limit = UInt16(minimumLimit(k))
      k &+= 1
    }
    arena_lock_acquire(&h.pointee.cacheLock)
    tc.pointee.next = h.pointee.threadCaches
    h.pointee.threadCaches?.pointee.prev = tc
    h.pointee.threadCaches = tc
    arena_lock_release(&h.pointee.cacheLock)
    // Set the slot first: pthread_setspecific may call calloc, which must find this cache.
    arena_tls_set(block)
    guard arena_thread_exit_register(threadExit, block) == 0 else {
      // No thread-exit hook (the program used up its pthread keys): a cache could never be handed
      // back, so this thread works without one.
      threadExit(block)
      return nil
    }
    return tc
  }

  /// The smallest limit of a class's bins: a quarter of its largest (4 KiB of blocks up to 1 KiB),
  /// at least 2.
  @inline(__always) static func minimumLimit(_ c: Int) -> UInt32 { max(2, ClassTable.cacheLimit(c) &>> 2) }

  /// Refills an empty bin with half its limit and pops one block (nil: out of memory). A bin that
  /// runs dry doubles its limit first (up to the class's limit): a thread that allocates from a
  /// class fetches more per lock the more it allocates.
  static func refill(_ tc: ThreadCachePointer, _ c: Int) -> UnsafeMutableRawPointer? {
    let bin = tc.bin(c)
    let limit = min(ClassTable.cacheLimit(c), UInt32(bin.pointee.limit) &* 2)
    bin.pointee.limit = UInt16(limit)
    bin.pointee.refilled = 1
    let want = max(1, Int(limit) / 2)
    tc.pointee.events &+= 1
    let h = tc.pointee.heap
    let list = SmallRuns.take(h, c, count: want, most: Int(limit))
    guard var block = list.head else { return nil }
    if h.pointee.hardened && list.count > 1 { block = Hardening.shuffle(h, block, count: list.count, c) }
    bin.pointee.head = UnsafeMutableRawPointer(bitPattern: block.load(as: UInt.self))
    bin.pointee.count = UInt32(list.count &- 1)
    return block
  }

  /// Gives all but the `keep` most recently freed blocks of a bin back to the central; returns how
  /// many it gave.
  @inline(never) @discardableResult
  static func flush(_ tc: ThreadCachePointer, _ c: Int, keep: Int, idleSince: UInt = 0) -> Int {
    let bin = tc.bin(c)
    var count = Int(bin.pointee.count)
    guard count > keep else { return 0 }
    tc.pointee.events &+= 1
    // Keep the first `keep` blocks (most recently freed: hot in cache), return the rest.
    var cut = bin.pointee.head
    var kept = 1
    let hardened = tc.pointee.heap.pointee.hardened
    while kept < keep, let b = cut {
      if hardened { Hardening.checkLink(tc.pointee.heap, b, c) }
      cut = UnsafeMutableRawPointer(bitPattern: b.load(as: UInt.self))
      kept &+= 1
    }
    let first: UnsafeMutableRawPointer?
    if keep == 0 {
      first = bin.pointee.head
      bin.pointee.head = nil
    } else {
      first = UnsafeMutableRawPointer(bitPattern: cut!.load(as: UInt.self))
      cut!.storeBytes(of: 0, as: UInt.self)
    }
    count &-= keep
    bin.pointee.count = UInt32(keep)
    SmallRuns.give(tc.pointee.heap, c, first, count: count, idleSince: idleSince)
    return count
  }

  /// A bin over its limit (free): gives back all but half the limit. A bin that overflows twice
  /// without being refilled in between belongs to a thread that frees more of this class than it
  /// allocates (a consumer of blocks made elsewhere): its limit halves, down to the minimum, so it
  /// does not hold the class's whole limit in blocks it will never reuse, and it gives back the
  /// whole bin, which needs no walk to find where the kept blocks end.
  static func overflow(_ tc: ThreadCachePointer, _ c: Int) {
    let bin = tc.bin(c)
    let consumer = bin.pointee.refilled == 0
    if consumer {
      bin.pointee.limit = UInt16(max(minimumLimit(c), UInt32(bin.pointee.limit) &>> 1))
    }
    bin.pointee.refilled = 0
    flush(tc, c, keep: consumer ? 0 : Int(bin.pointee.limit / 2))
  }

  /// free()'s overflow path, then leaves the cache (a separate function, so the fast path needs
  /// no stack frame).
  @inline(never)
  static func flushOverfullAndLeave(_ tc: ThreadCachePointer, _ c: Int) {
    overflow(tc, c)
    leave()
  }

  /// Empties every bin of a cache into the centrals (`idleSince`: see `SmallRuns.give`); returns
  /// the bytes it gave.
  @discardableResult
  static func flushAll(_ tc: ThreadCachePointer, idleSince: UInt = 0) -> Int {
    var bytes = 0
    var c = 1
    while c <= SizeClass.count {
      bytes &+= flush(tc, c, keep: 0, idleSince: idleSince) &* SizeClass.size(ofClass: c)
      c &+= 1
    }
    return bytes
  }

  /// Cached blocks per class summed over all threads (racy snapshot, for statistics).
  static func cachedBlocks(_ h: HeapPointer, _ c: Int) -> Int {
    var total = 0
    arena_lock_acquire(&h.pointee.cacheLock)
    var t = h.pointee.threadCaches
    while let tc = t {
      total &+= Int(tc.bin(c).pointee.count)
      t = tc.pointee.next
    }
    arena_lock_release(&h.pointee.cacheLock)
    return total
  }

  /// Bytes held by a cache (racy when another thread owns it: a heuristic).
  static func cachedBytes(_ tc: ThreadCachePointer) -> Int {
    var bytes = 0
    var c = 1
    while c <= SizeClass.count {
      bytes &+= Int(tc.bin(c).pointee.count) &* SizeClass.size(ofClass: c)
      c &+= 1
    }
    return bytes
  }

  /// Takes back the blocks of other threads' caches whose owners have not refilled or flushed
  /// since `quietBefore` (everything not in use, with `UInt.max`). The blocks go back to their
  /// classes as freed no later than `idleBefore` (see `SmallRuns.give`), so a class that is quiet
  /// stays quiet. Returns the bytes returned to the centrals. Called by the scavenger and by
  /// malloc_trim, never with a lock held.
  static func reclaimIdle(_ h: HeapPointer, quietBefore: UInt, idleBefore: UInt, now: UInt) -> Int {
    let own = arena_tls_address()
    var batch: ThreadCachePointer? = nil
    arena_lock_acquire(&h.pointee.cacheLock)
    var t = h.pointee.threadCaches
    while let tc = t {
      t = tc.pointee.next
      let events = tc.pointee.events
      if events != tc.pointee.seenEvents {
        tc.pointee.seenEvents = events
        tc.pointee.quietSince = now
      }
      let quiet = quietBefore == UInt.max || tc.pointee.quietSince <= quietBefore
      // A cache already lent belongs to another stealer (malloc_trim racing the scavenger).
      if quiet && tc.pointee.lent == 0 && tc.pointee.slot != own && cachedBytes(tc) > 0 {
        arena_tls_remote_set(tc.pointee.slot, UnsafeMutableRawPointer(bitPattern: ThreadCache.lentMark))
        tc.pointee.lent = 1
        tc.pointee.nextLent = batch
        batch = tc
      }
    }
    arena_lock_release(&h.pointee.cacheLock)
    guard batch != nil else { return 0 }
    // After the barrier every owner either shows busy (it read its cache before the mark: give the
    // cache back untouched) or reads the mark on its next call. Marked caches cannot leave the
    // list meanwhile: thread exit waits while `lent` is set.
    let fenced = arena_sys_membarrier() == 0
    arena_lock_acquire(&h.pointee.cacheLock)
    var kept: ThreadCachePointer? = nil
    while let tc = batch {
      batch = tc.pointee.nextLent
      if fenced && arena_tls_remote_busy(tc.pointee.slot) == 0 {
        tc.pointee.nextLent = kept
        kept = tc
      } else {
        tc.pointee.lent = 0
        arena_tls_remote_set(tc.pointee.slot, UnsafeMutableRawPointer(tc))
      }
    }
    arena_lock_release(&h.pointee.cacheLock)
    // The lent caches are the scavenger's alone: their owners use the centrals and their thread
    // exit waits for `lent` to clear. Empty them without the cache lock (class locks come first).
    var bytes = 0
    var l = kept
    while let tc = l {
      bytes &+= flushAll(tc, idleSince: max(1, min(tc.pointee.quietSince, idleBefore)))
      l = tc.pointee.nextLent
    }
    _ = arena_atomic_add64(&h.pointee.cacheReclaimedBytes, UInt64(bytes))
    arena_lock_acquire(&h.pointee.cacheLock)
    while let tc = kept {
      kept = tc.pointee.nextLent
      tc.pointee.nextLent = nil
      tc.pointee.lent = 0
      tc.pointee.quietSince = now
      arena_tls_remote_set(tc.pointee.slot, UnsafeMutableRawPointer(tc))
    }
    arena_lock_release(&h.pointee.cacheLock)
    return bytes
  }

  /// Unlinks a cache from its heap's list, waiting while the scavenger has it lent.
  static func unlink(_ tc: ThreadCachePointer, settingSlot value: UInt) {
    let h = tc.pointee.heap
    arena_lock_acquire(&h.pointee.cacheLock)
    while tc.pointee.lent != 0 {
      arena_lock_release(&h.pointee.cacheLock)
      arena_sys_sleep_ns(50_000)
      arena_lock_acquire(&h.pointee.cacheLock)
    }
    if let prev = tc.pointee.prev { prev.pointee.next = tc.pointee.next } else { h.pointee.threadCaches = tc.pointee.next }
    tc.pointee.next?.pointee.prev = tc.pointee.prev
    arena_tls_set(UnsafeMutableRawPointer(bitPattern: value))
    arena_lock_release(&h.pointee.cacheLock)
  }

  /// Gives a cache's own block back (after it was emptied and unlinked).
  static func free(_ tc: ThreadCachePointer) {
    let raw = UnsafeMutableRawPointer(tc)
    let h = tc.pointee.heap
    let c = SizeClass.index(forSize: ThreadCache.byteCount)
    // The cache used the whole block: a hardened heap's poison and canary are written afresh.
    if h.pointee.hardened { Hardening.prepareFree(raw, size: SizeClass.size(ofClass: c)) }
    raw.storeBytes(of: 0, as: UInt.self)
    raw.storeBytes(of: SmallRuns.tag(raw), toByteOffset: 8, as: UInt.self)
    SmallRuns.give(h, c, raw, count: 1)
  }
}

/// Thread exit: hand every cached block back, then the cache itself.
func threadExit(_ raw: UnsafeMutableRawPointer?) {
  guard let raw else { return }
  let tc = raw.assumingMemoryBound(to: ThreadCache.self)
  ThreadCaches.unlink(tc, settingSlot: 1)
  ThreadCaches.flushAll(tc)
  ThreadCaches.free(tc)
}

/// fork(): every lock of the default heap is taken before the fork and released (or reset, in the
/// child, where the threads that held them no longer exist) after it, so a child of a
/// multi-threaded parent finds the heap consistent.
func forkPrepare() { Fork.forEachLock(acquire: true) }
func forkParent() { Fork.forEachLock(acquire: false) }
func forkChild() {
  Fork.forEachLock(acquire: false, reset: true)
  Fork.adoptCaches()
}

enum Fork {
  static func forEachLock(acquire: Bool, reset: Bool = false) {
    guard let h = Heaps.defaultHeapIfCreated else { return }
    let g = arena_globals_pointer()
    @inline(__always) func visit(_ lock: UnsafeMutablePointer<arena_lock_t>) {
      if acquire { arena_lock_acquire(lock) } else if reset { arena_lock_reset(lock) } else { arena_lock_release(lock) }
    }
    var c = 1
    while c <= SizeClass.count {
      visit(&h.central(c).pointee.lock)
      c &+= 1
    }
    visit(&h.pointee.cacheLock)
    visit(&h.pointee.pageLock)
    visit(&h.pointee.hugeLock)
    visit(&g.pointee.registry_lock)
    // The child has no scavenger thread: it starts again when the child creates a thread. Until
    // then the child releases inline, but not at once: most children exec right away.
    if reset {
      arena_atomic_store32(&g.pointee.scavenger_state, 0)
      arena_atomic_store32(&g.pointee.inline_release_busy, 0)
      arena_atomic_store64(&g.pointee.inline_release_next_ns, arena_sys_now_ns() &+ UInt64(Scavenger.tickNs(Scavenger.options)))
    }
  }

  /// In the child: only the forking thread exists. The caches of the other threads go back to the
  /// centrals (or, if their owner was inside an allocator call at the fork, are abandoned: they may
  /// be inconsistent), so no stealer ever reaches a dead thread's slot. If the scavenger had the
  /// forking thread's own cache lent, what it still held is abandoned and the cache returns empty.
  static func adoptCaches() {
    guard let h = Heaps.defaultHeapIfCreated else { return }
    let own = arena_tls_address()
    var t = h.pointee.threadCaches
    h.pointee.threadCaches = nil
    var mine: ThreadCachePointer? = nil
    while let tc = t {
      t = tc.pointee.next
      if tc.pointee.slot == own {
        if tc.pointee.lent != 0 {
          var c = 1
          while c <= SizeClass.count {
            tc.bin(c).pointee.head = nil
            tc.bin(c).pointee.count = 0
            c &+= 1
          }
          tc.pointee.lent = 0
          arena_tls_set(UnsafeMutableRawPointer(tc))
        }
        mine = tc
      } else if tc.pointee.lent == 0 && arena_tls_remote_busy(tc.pointee.slot) == 0 {
        ThreadCaches.flushAll(tc)
        ThreadCaches.free(tc)
      }
    }
    if let tc = mine {
      tc.pointee.next = nil
      tc.pointee.prev = nil
      tc.pointee.nextLent = nil
      h.pointee.threadCaches = tc
    }
  }
}
