// Thread caches: per-thread free lists, one per size class, on the common path of malloc and free.
// A thread allocates from and frees into its own lists with plain loads and stores: no lock, no
// atomic read-modify-write, no system call. A list that runs dry is refilled from the class
// central with half its limit in one locked step; a list over its limit gives half back the same
// way. A block freed by another thread simply joins the freeing thread's cache (a remote free costs
// the same as a local one); the batch flush returns it to its run.
//
// The initial-exec thread-local `arena_tls_thread_cache` holds 0 (no cache yet), 1 (the thread is
// exiting: use the centrals directly) or the cache's address. The cache itself is a block of the
// default heap, so any number of threads costs no static storage; thread exit gives it back.
import CSystemShims

typealias ThreadCachePointer = UnsafeMutablePointer<ThreadCache>

/// One size class's free list in a thread cache.
struct CacheBin {
  var head: UnsafeMutableRawPointer?
  var count: UInt32
  var limit: UInt32
}

/// A thread's cache header; `SizeClass.count + 1` bins follow it in memory.
struct ThreadCache {
  var heap: HeapPointer
  var next: ThreadCachePointer?
  var prev: ThreadCachePointer?
  var pad: Int

  @inline(__always) static var binsOffset: Int { 32 }
  @inline(__always) static var byteCount: Int { binsOffset &+ (SizeClass.count &+ 1) &* MemoryLayout<CacheBin>.stride }
}

extension UnsafeMutablePointer where Pointee == ThreadCache {
  @inline(__always) func bin(_ c: Int) -> UnsafeMutablePointer<CacheBin> {
    (UnsafeMutableRawPointer(self) + ThreadCache.binsOffset).assumingMemoryBound(to: CacheBin.self) + c
  }
}

enum ThreadCaches {
  /// The calling thread's cache, or nil when it has none and cannot have one (exiting thread).
  @inline(__always)
  static var current: ThreadCachePointer? {
    let raw = arena_tls_get()
    if UInt(bitPattern: raw) > 1 { return raw?.assumingMemoryBound(to: ThreadCache.self) }
    return nil
  }

  /// Creates the calling thread's cache (first allocator call of a thread), or nil if the thread is
  /// exiting or memory is exhausted.
  static func createCurrent(_ h: HeapPointer) -> ThreadCachePointer? {
    guard arena_tls_get() == nil else { return current }
    let c = SizeClass.index(forSize: ThreadCache.byteCount)
    let list = SmallRuns.take(h, c, count: 1)
    guard let block = list.head else { return nil }
    block.initializeMemory(as: UInt8.self, repeating: 0, count: ThreadCache.byteCount)
    let tc = block.assumingMemoryBound(to: ThreadCache.self)
    tc.pointee.heap = h
    var k = 1
    while k <= SizeClass.count {
      tc.bin(k).pointee.limit = ClassTable.cacheLimit(k)
      k &+= 1
    }
    arena_lock_acquire(&h.pointee.cacheLock)
    tc.pointee.next = h.pointee.threadCaches
    h.pointee.threadCaches?.pointee.prev = tc
    h.pointee.threadCaches = tc
    arena_lock_release(&h.pointee.cacheLock)
    // Set the slot first: pthread_setspecific may call calloc, which must find this cache.
    arena_tls_set(block)
    _ = arena_thread_exit_register(threadExit, block)
    arena_atfork_install(forkPrepare, forkParent, forkChild)
    _ = arena_thread_alt_stack()  // so a fault on this thread's stack can still be diagnosed
    return tc
  }

  /// Refills an empty bin with half its limit and pops one block (nil: out of memory).
  static func refill(_ tc: ThreadCachePointer, _ c: Int) -> UnsafeMutableRawPointer? {
    let bin = tc.bin(c)
    let want = max(1, Int(bin.pointee.limit) / 2)
    let list = SmallRuns.take(tc.pointee.heap, c, count: want)
    guard let block = list.head else { return nil }
    bin.pointee.head = UnsafeMutableRawPointer(bitPattern: block.load(as: UInt.self))
    bin.pointee.count = UInt32(list.count &- 1)
    return block
  }

  /// Gives the older half of an overfull bin back to the central.
  @inline(never)
  static func flush(_ tc: ThreadCachePointer, _ c: Int, keep: Int) {
    let bin = tc.bin(c)
    var count = Int(bin.pointee.count)
    guard count > keep else { return }
    // Keep the first `keep` blocks (most recently freed: hot in cache), return the rest.
    var cut = bin.pointee.head
    var kept = 1
    while kept < keep, let b = cut {
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
    SmallRuns.give(tc.pointee.heap, c, first, count: count)
  }

  /// Empties every bin of a cache into the centrals.
  static func flushAll(_ tc: ThreadCachePointer) {
    var c = 1
    while c <= SizeClass.count {
      flush(tc, c, keep: 0)
      c &+= 1
    }
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
}

/// Thread exit: hand every cached block back, then the cache itself.
func threadExit(_ raw: UnsafeMutableRawPointer?) {
  guard let raw else { return }
  let tc = raw.assumingMemoryBound(to: ThreadCache.self)
  let h = tc.pointee.heap
  arena_tls_set(UnsafeMutableRawPointer(bitPattern: 1))
  ThreadCaches.flushAll(tc)
  arena_lock_acquire(&h.pointee.cacheLock)
  if let prev = tc.pointee.prev { prev.pointee.next = tc.pointee.next } else { h.pointee.threadCaches = tc.pointee.next }
  tc.pointee.next?.pointee.prev = tc.pointee.prev
  arena_lock_release(&h.pointee.cacheLock)
  let c = SizeClass.index(forSize: ThreadCache.byteCount)
  raw.storeBytes(of: 0, as: UInt.self)
  raw.storeBytes(of: SmallRuns.tag(raw), toByteOffset: 8, as: UInt.self)
  SmallRuns.give(h, c, raw, count: 1)
}

/// fork(): every lock of the default heap is taken before the fork and released (or reset, in the
/// child, where the threads that held them no longer exist) after it, so a child of a
/// multi-threaded parent finds the heap consistent.
func forkPrepare() { Fork.forEachLock(acquire: true) }
func forkParent() { Fork.forEachLock(acquire: false) }
func forkChild() { Fork.forEachLock(acquire: false, reset: true) }

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
    // The child has no scavenger thread: let it start again on first need.
    if reset { arena_atomic_store32(&g.pointee.scavenger_state, 0) }
  }
}
