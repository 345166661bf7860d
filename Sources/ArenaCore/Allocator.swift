// The operations of a heap: allocate, deallocate, reallocate, usable size, statistics. Every
// request is routed by size: small classes (thread cache, then class central), page runs (page
// heap), huge mappings. Every pointer handed back is validated before it is trusted; a pointer the
// heap did not hand out stops the process with a one-line diagnosis naming it.
import CSystemShims

enum Allocator {
  /// The small class serving `size` bytes at `alignment`, or 0 when a page run or mapping must.
  @inline(__always)
  static func smallClass(size: Int, alignment: Int) -> Int {
    if alignment <= Layout.minimumAlignment {
      return size <= Layout.smallLimit ? SizeClass.index(forSize: size) : 0
    }
    let wanted = max(size, alignment)
    guard alignment <= Layout.pageSize, wanted <= Layout.smallLimit else { return 0 }
    // Blocks of a class start at multiples of its size in page-aligned runs, so a class whose
    // size is a multiple of the alignment gives aligned blocks (powers of two always qualify).
    var c = SizeClass.index(forSize: wanted)
    while c <= SizeClass.count && SizeClass.size(ofClass: c) % alignment != 0 { c &+= 1 }
    return c <= SizeClass.count ? c : 0
  }

  /// Allocates `size` bytes aligned to `alignment` (a power of two, validated by the caller).
  static func allocate(_ h: HeapPointer, size: Int, alignment: Int, cache: ThreadCachePointer?,
                       zeroed: Bool) -> UnsafeMutableRawPointer? {
    let hardened = h.pointee.hardened
    // A hardened heap's small blocks end in a canary, after the free link and tag (Hardening.swift).
    let c = smallClass(size: hardened && size <= Int.max / 2 ? max(size &+ Hardening.canaryBytes, Hardening.smallestBlock) : size,
                       alignment: alignment)
    if c != 0 {
      var block: UnsafeMutableRawPointer? = nil
      var popped = false
      if let tc = cache {
        let bin = tc.bin(c)
        if let p = bin.pointee.head {
          if hardened { Hardening.checkOut(h, p, c) }
          bin.pointee.head = UnsafeMutableRawPointer(bitPattern: p.load(as: UInt.self))
          bin.pointee.count &-= 1
          block = p
          popped = true
        } else {
          block = ThreadCaches.refill(tc, c)
        }
      } else {
        block = SmallRuns.take(h, c, count: 1).head
      }
      guard let p = block else { arena_set_errno(ENOMEM); return nil }
      // A block popped from a cache was checked before its link was read; the first block of a
      // refill or a take is checked here (its address came from the heap's own lists).
      if hardened && !popped { Hardening.checkOut(h, p, c) }
      p.storeBytes(of: 0, toByteOffset: 8, as: UInt.self)
      if zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: max(size, 16)) }
      if hardened { Hardening.handOut(p, size: size, c) }
      return p
    }
    if size > Layout.hugeThreshold || alignment > Layout.largestRunAlignment {
      return Huge.allocate(h, size: size, alignment: alignment)
    }
    // At least one page: a 0-byte request with a large alignment still needs a unique block.
    let pages = max(1, (size &+ Layout.pageSize &- 1) &>> Layout.pageShift)
    let guarded = Guards.enabled(h)
    if guarded && alignment <= Layout.pageSize, let d = Guards.takeCached(h, pages: pages) {
      let bytes = (Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift
      countLargeLive(h, bytes: bytes, adding: true)
      let p = UnsafeMutableRawPointer(bitPattern: d.pointee.start)!
      if zeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: size) }
      Hardening.fillSlack(d, size: size, bytes: bytes)
      return p
    }
    guard let run = PageHeap.allocate(h, pages: pages &+ (guarded ? 1 : 0), alignment: max(alignment, Layout.pageSize)) else {
      // A reservation too small for this run (RLIMIT_AS fallback): a mapping of its own.
      if arena_get_errno() == ENOMEM, pages &<< Layout.pageShift >= h.pointee.reservationSize / 4 {
        return Huge.allocate(h, size: size, alignment: alignment)
      }
      arena_set_errno(ENOMEM)
      return nil
    }
    if guarded {
      run.descriptor.pointee.sizeClass = Guards.guardedRunMark
      Guards.install(run.descriptor)
    }
    countLargeLive(h, bytes: pages &<< Layout.pageShift, adding: true)
    let p = UnsafeMutableRawPointer(bitPattern: run.descriptor.pointee.start)!
    if zeroed && !run.isZeroed { p.initializeMemory(as: UInt8.self, repeating: 0, count: size) }
    if hardened { Hardening.fillSlack(run.descriptor, size: size, bytes: pages &<< Layout.pageShift) }
    return p
  }

  /// What a pointer handed to deallocate, reallocate or usableSize is.
  struct Block {
    var reservation: ReservationPointer?
    var sizeClass: Int        // small: 1...count; large and huge: 0
    var usableSize: Int
    var index: UInt = 0       // small: the block's index in its run
  }

  /// Finds and validates the block at `p`; stops the process with a diagnosis if `p` is not the
  /// start of a live block of heap `h`. `operation` names the caller in the diagnosis.
  static func block(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ operation: StaticString) -> Block {
    let a = UInt(bitPattern: p)
    guard let r = h.reservation(containing: a) else {
      let huge = Huge.size(h, a)
      if huge > 0 { return Block(reservation: nil, sizeClass: 0, usableSize: huge) }
      if Reservations.find(a) != nil { fatal(operation, "pointer belongs to another arena:", p) }
      fatal(operation, "pointer was not allocated by this allocator:", p)
    }
    let page = r.pageIndex(a)
    let entry = r.pointee.pageMap[page]
    let tag = SmallRuns.tag(ofEntry: entry)
    if tag >= 2 {
      let c = tag &- 1
      let size = UInt(SizeClass.size(ofClass: c))
      let offset = a &- r.address(ofPage: Int(entry &>> 8))
      let index = ClassTable.blockIndex(offset: offset, c)
      if index &* size != offset { fatalSmall(operation, "pointer is inside a block, not at its start:", p, c) }
      if p.load(fromByteOffset: 8, as: UInt.self) == SmallRuns.tag(p) {
        fatalSmall(operation, "double free (block is already free):", p, c)
      }
      let d = r.descriptor(Int(entry &>> 8))
      if index >= UInt(d.pointee.carvedCount) { fatalSmall(operation, "pointer is not an allocated block (never handed out):", p, c) }
      if entry & SmallRuns.slowPathFlag != 0 && SmallRuns.isReleased(d, page: page &- Int(entry &>> 8)) {
        fatalSmall(operation, "double free (block is already free):", p, c)
      }
      if h.pointee.hardened { return Block(reservation: r, sizeClass: c, usableSize: Hardening.requestSize(p, c, operation), index: index) }
      return Block(reservation: r, sizeClass: c, usableSize: Int(size), index: index)
    }
    // A large run: its first page-map entry names itself and its descriptor says large.
    arena_lock_acquire(&h.pointee.pageLock)
    let d = r.descriptor(page)
    let isRunStart = tag == 1 && Int(entry &>> 8) == page && d.pointee.start == a
    let kind = d.pointee.kind
    let pages = Int(d.pointee.pageCount) &- Guards.pages(ofLargeRun: d)
    arena_lock_release(&h.pointee.pageLock)
    if isRunStart && kind == RunKind.large {
      let bytes = pages &<< Layout.pageShift
      if h.pointee.hardened { return Block(reservation: r, sizeClass: 0, usableSize: Hardening.checkSlack(d, bytes: bytes, operation)) }
      return Block(reservation: r, sizeClass: 0, usableSize: bytes)
    }
    if isRunStart && (kind == RunKind.free || kind == RunKind.cachedGuarded) { fatal(operation, "double free (page run is already free):", p) }
    fatal(operation, "pointer is not an allocated block:", p)
  }

  /// Frees the block at `p` (any size) back to heap `h`, through `cache` when given.
  static func deallocate(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, cache: ThreadCachePointer?) {
    let b = block(h, p, "free():")
    if b.sizeClass != 0 {
      if h.pointee.hardened { Hardening.checkIn(h, p, b.sizeClass, index: b.index) }
      freeSmall(h, p, b.sizeClass, cache: cache)
    } else if let r = b.reservation {
      freeLarge(h, r, p)
    } else if !Huge.free(h, UInt(bitPattern: p)) {
      fatal("free():", "double free (huge block is already free):", p)
    }
  }

  @inline(__always)
  static func freeSmall(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ c: Int, cache: ThreadCachePointer?) {
    let stamp = SmallRuns.tag(p)
    if let tc = cache {
      let bin = tc.bin(c)
      p.storeBytes(of: UInt(bitPattern: bin.pointee.head), as: UInt.self)
      p.storeBytes(of: stamp, toByteOffset: 8, as: UInt.self)
      bin.pointee.head = p
      bin.pointee.count &+= 1
      if bin.pointee.count > UInt32(bin.pointee.limit) { ThreadCaches.overflow(tc, c) }
    } else {
      p.storeBytes(of: 0, as: UInt.self)
      p.storeBytes(of: stamp, toByteOffset: 8, as: UInt.self)
      SmallRuns.give(h, c, p, count: 1)
    }
  }

  static func freeLarge(_ h: HeapPointer, _ r: ReservationPointer, _ p: UnsafeMutableRawPointer) {
    let now = UInt(arena_sys_now_ns())
    let page = r.pageIndex(UInt(bitPattern: p))
    let d = r.descriptor(page)
    // The block was validated and is ours: a hardened heap may keep it, guard and all, for reuse;
    // otherwise its guard goes before the page lock is taken.
    let guardPages = Guards.pages(ofLargeRun: d)
    if guardPages != 0 && Guards.cacheFreed(h, d, p, now: now) {
      countLargeLive(h, bytes: (Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift, adding: false)
      return
    }
    if guardPages != 0 { Guards.remove(d) }
    arena_lock_acquire(&h.pointee.pageLock)
    guard d.pointee.kind == RunKind.large, d.pointee.start == UInt(bitPattern: p) else {
      arena_lock_release(&h.pointee.pageLock)
      fatal("free():", "double free (page run is already free):", p)
    }
    d.pointee.sizeClass = 0
    let bytes = (Int(d.pointee.pageCount) &- guardPages) &<< Layout.pageShift
    if Offer.isOffered(d) {
      d.pointee.inPartialList = 0
      _ = arena_atomic_sub64(&h.pointee.offeredBytes, UInt64(bytes))
    }
    PageHeap.releaseLocked(r, d, stamp: now)
    arena_lock_release(&h.pointee.pageLock)
    countLargeLive(h, bytes: bytes, adding: false)
    Scavenger.releaseInline(h)
  }

  /// Counts a page run of `bytes` usable bytes into (or out of) the heap's live page runs.
  @inline(__always)
  static func countLargeLive(_ h: HeapPointer, bytes: Int, adding: Bool) {
    if adding {
      _ = arena_atomic_add64(&h.pointee.largeLiveBytes, UInt64(bytes))
      _ = arena_atomic_add64(&h.pointee.largeLiveCount, 1)
    } else {
      _ = arena_atomic_sub64(&h.pointee.largeLiveBytes, UInt64(bytes))
      _ = arena_atomic_sub64(&h.pointee.largeLiveCount, 1)
    }
  }

  /// Resizes the block at `p` to `size` bytes: in place when its class still fits or its page run
  /// can shrink or grow into a free neighbour, by mremap for huge blocks, else by moving. On
  /// failure returns nil with ENOMEM and leaves the block untouched.
  static func reallocate(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, size: Int,
                         cache: ThreadCachePointer?) -> UnsafeMutableRawPointer? {
    let b = block(h, p, "realloc():")
    let old = b.usableSize
    if b.sizeClass != 0 {
      if size <= old && (old <= 64 || size > old / 2) { return p }
    } else if let r = b.reservation {
      let guarded = Guards.pages(ofLargeRun: r.descriptor(r.pageIndex(UInt(bitPattern: p)))) != 0
      if size > Layout.smallLimit && size <= Layout.hugeThreshold && !guarded {
        let pages = (size &+ Layout.pageSize &- 1) &>> Layout.pageShift
        let oldPages = old &>> Layout.pageShift
        let d = r.descriptor(r.pageIndex(UInt(bitPattern: p)))
        if Offer.isOffered(d) { fatal("realloc():", "block is offered; reclaim it first:", p) }
        arena_lock_acquire(&h.pointee.pageLock)
        var done = false
        if pages < oldPages {
          PageHeap.shrinkLocked(r, d, to: pages)
          done = true
        } else if pages == oldPages {
          done = true
        } else if PageHeap.growLocked(r, d, to: pages) {
          done = true
        }
        arena_lock_release(&h.pointee.pageLock)
        if done {
          let delta = (pages &- oldPages) &<< Layout.pageShift
          if delta >= 0 { _ = arena_atomic_add64(&h.pointee.largeLiveBytes, UInt64(delta)) }
          else { _ = arena_atomic_sub64(&h.pointee.largeLiveBytes, UInt64(-delta)) }
          return p
        }
      }
    } else if size > Layout.hugeThreshold {
      if let moved = Huge.resize(h, UInt(bitPattern: p), to: size) { return moved }
      arena_set_errno(ENOMEM)
      return nil
    }
    guard let q = allocate(h, size: size, alignment: Layout.minimumAlignment, cache: cache, zeroed: false) else {
      arena_set_errno(ENOMEM)
      return nil
    }
    q.copyMemory(from: p, byteCount: min(old, size))
    deallocate(h, p, cache: cache)
    return q
  }

  /// Exact usable size of the block at `p` (validated).
  static func usableSize(_ h: HeapPointer, _ p: UnsafeMutableRawPointer) -> Int {
    block(h, p, "malloc_usable_size():").usableSize
  }

  // MARK: Diagnosis

  static func fatal(_ operation: StaticString, _ what: StaticString, _ p: UnsafeMutableRawPointer) -> Never {
    fatal(operation, what, p, sizeClass: 0)
  }

  static func fatalSmall(_ operation: StaticString, _ what: StaticString, _ p: UnsafeMutableRawPointer, _ c: Int) -> Never {
    fatal(operation, what, p, sizeClass: c)
  }

  /// Writes one line naming the operation, the problem and the pointer (and the size class when
  /// there is one) to stderr and aborts.
  static func fatal(_ operation: StaticString, _ what: StaticString, _ p: UnsafeMutableRawPointer, sizeClass c: Int) -> Never {
    var line = (0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64,
                0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64, 0 as UInt64)
    withUnsafeMutableBytes(of: &line) { buffer in
      _ = join(buffer, operation, what)
      let text = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
      if c == 0 { arena_fatal_pointer(text, p) }
      arena_fatal_pointer_detail(text, p, "size class", UInt64(SizeClass.size(ofClass: c)))
    }
    while true {}  // not reached: both writers abort
  }

  /// Writes "operation what" NUL-terminated into `buffer` (no String: it would allocate).
  static func join(_ buffer: UnsafeMutableRawBufferPointer, _ a: StaticString, _ b: StaticString) -> Int {
    var at = 0
    let limit = buffer.count &- 1
    var i = 0
    while i < a.utf8CodeUnitCount && at < limit { buffer[at] = a.utf8Start[i]; at &+= 1; i &+= 1 }
    if at < limit { buffer[at] = 0x20; at &+= 1 }
    i = 0
    while i < b.utf8CodeUnitCount && at < limit { buffer[at] = b.utf8Start[i]; at &+= 1; i &+= 1 }
    buffer[at] = 0
    return at
  }
}

// MARK: - Statistics

/// A snapshot of a heap's counters, gathered without allocating.
package struct HeapCounters {
  package var reservedBytes = 0
  package var reservationCount = 0
  package var committedBytes = 0
  package var metadataBytes = 0
  package var freeDirtyBytes = 0
  package var freeCleanBytes = 0
  package var freeDecommittedBytes = 0
  package var largeLiveBytes = 0
  package var largeLiveCount = 0
  package var hugeLiveBytes = 0
  package var hugeLiveCount = 0
  package var smallRunCount = 0
  package var commitCalls = 0
  package var smallLiveBytes = 0
  package var cachedBytes = 0
  package var transferCachedBytes = 0
  package var purgedBytesTotal = 0
  package var decommittedBytesTotal = 0
  package var scavengerCPUNanoseconds = 0
  package var scavengerPasses = 0
  package var offeredBytes = 0
  package var reclaimedIntactBytes = 0
  package var discardedBytes = 0
  package var cacheReclaimedBytes = 0
}

extension Allocator {
  /// Fills `counters` and, per size class c in 1...SizeClass.count, `liveBlocks[c]` (blocks in
  /// use) and `cachedBlocks[c]` (blocks parked in thread caches; transfer caches are counted in
  /// `transferCachedBytes`).
  package static func counters(_ h: HeapPointer, liveBlocks: UnsafeMutablePointer<Int>?,
                               cachedBlocks: UnsafeMutablePointer<Int>?) -> HeapCounters {
    var s = HeapCounters()
    arena_lock_acquire(&h.pointee.pageLock)
    var r = h.pointee.firstReservation
    while let res = r {
      s.reservationCount &+= 1
      s.reservedBytes &+= res.pointee.size
      s.committedBytes &+= res.pointee.committedPages &<< Layout.pageShift
      s.metadataBytes &+= res.pointee.metadataCommittedBytes
        &+ res.pointee.frontier &* MemoryLayout<RunDescriptor>.stride
      s.freeDirtyBytes &+= res.pointee.freePages.0 &<< Layout.pageShift
      s.freeCleanBytes &+= res.pointee.freePages.1 &<< Layout.pageShift
      s.freeDecommittedBytes &+= res.pointee.freePages.2 &<< Layout.pageShift
      r = res.pointee.next
    }
    s.commitCalls = h.pointee.commitCalls
    s.purgedBytesTotal = h.pointee.purgedBytesTotal
    s.decommittedBytesTotal = h.pointee.decommittedBytesTotal
    s.offeredBytes = Int(arena_atomic_load64(&h.pointee.offeredBytes))
    s.reclaimedIntactBytes = Int(arena_atomic_load64(&h.pointee.reclaimedIntactBytes))
    s.discardedBytes = Int(arena_atomic_load64(&h.pointee.discardedBytes))
    s.cacheReclaimedBytes = Int(arena_atomic_load64(&h.pointee.cacheReclaimedBytes))
    if h.pointee.isDefault {
      let g = arena_globals_pointer()
      s.scavengerCPUNanoseconds = Int(arena_atomic_load64(&g.pointee.scavenger_cpu_ns))
      s.scavengerPasses = Int(arena_atomic_load64(&g.pointee.scavenger_passes))
    }
    arena_lock_release(&h.pointee.pageLock)
    s.largeLiveBytes = Int(arena_atomic_load64(&h.pointee.largeLiveBytes))
    s.largeLiveCount = Int(arena_atomic_load64(&h.pointee.largeLiveCount))
    arena_lock_acquire(&h.pointee.hugeLock)
    s.hugeLiveBytes = h.pointee.hugeLiveBytes
    s.hugeLiveCount = h.pointee.hugeLiveCount
    arena_lock_release(&h.pointee.hugeLock)
    var c = 1
    while c <= SizeClass.count {
      let central = h.central(c)
      arena_lock_acquire(&central.pointee.lock)
      let out = central.pointee.blocksOut
      let parked = central.pointee.transferBlocks
      s.smallRunCount &+= Int(central.pointee.runCount)
      arena_lock_release(&central.pointee.lock)
      let cached = ThreadCaches.cachedBlocks(h, c)
      let live = max(0, out &- cached &- parked)
      liveBlocks?[c] = live
      cachedBlocks?[c] = cached
      s.smallLiveBytes &+= live &* SizeClass.size(ofClass: c)
      s.cachedBytes &+= cached &* SizeClass.size(ofClass: c)
      s.transferCachedBytes &+= parked &* SizeClass.size(ofClass: c)
      c &+= 1
    }
    return s
  }
}

// MARK: - Entry points for the Swift API (package-internal)

/// Handles to heaps for the `ArenaAllocator` module; never used by malloc.
package enum HeapHandle {
  /// The default heap, for `Arena.default`. The Swift API is called by the program, never by libc:
  /// a safe point (SafePoint.swift), where the scavenger may start.
  package static var defaultHeap: UnsafeMutableRawPointer? {
    SafePoint.atThreadCreation()
    return Heaps.defaultHeap.map { UnsafeMutableRawPointer($0) }
  }
  package static func create(reservationSize: Int, hardened: Bool = false) -> UnsafeMutableRawPointer? {
    Faults.installIfAsked(mainThread: false)
    let hardened = hardened || Scavenger.options.hardened != 0
    return Heaps.create(reservationSize: reservationSize, isDefault: false, hardened: hardened).map { UnsafeMutableRawPointer($0) }
  }
  package static func isHardened(_ raw: UnsafeMutableRawPointer) -> Bool { heap(raw).pointee.hardened }
  /// Installs the fault handler now if ARENA_OPTIONS asks for it (tests that set the options
  /// after start-up; the library does this at load).
  package static func installFaultHandlerIfAsked() { Faults.installIfAsked(mainThread: true) }
  @inline(__always) static func heap(_ raw: UnsafeMutableRawPointer) -> HeapPointer { raw.assumingMemoryBound(to: HeapHeader.self) }
  package static func isDefault(_ raw: UnsafeMutableRawPointer) -> Bool { heap(raw).pointee.isDefault }
  package static var smallClassCount: Int { SizeClass.count }
  package static func classSize(_ c: Int) -> Int { SizeClass.size(ofClass: c) }
  package static func classIndex(forSize size: Int) -> Int { size <= Layout.smallLimit ? SizeClass.index(forSize: size) : 0 }
  package static var smallLimit: Int { Layout.smallLimit }
  package static func runPages(ofClass c: Int) -> Int { SizeClass.runPages(ofClass: c) }
  package static var hugeThreshold: Int { Layout.hugeThreshold }
  package static var pageSize: Int { Layout.pageSize }
  package static var granuleBytes: Int { Layout.granulePages &<< Layout.pageShift }

  /// The thread cache to use for heap `h` on this thread (default heap only), entered: pair with
  /// `leave(h)`.
  @inline(__always) static func cache(_ h: HeapPointer) -> ThreadCachePointer? {
    h.pointee.isDefault ? ThreadCaches.enterOrCreate(h) : nil
  }
  @inline(__always) static func leave(_ h: HeapPointer) {
    if h.pointee.isDefault { ThreadCaches.leave() }
  }

  package static func allocate(_ raw: UnsafeMutableRawPointer, size: Int, alignment: Int, zeroed: Bool) -> UnsafeMutableRawPointer? {
    guard size >= 0, size <= Int.max / 4 else { arena_set_errno(ENOMEM); return nil }
    guard alignment > 0, alignment & (alignment &- 1) == 0, alignment <= 1 << 40 else { arena_set_errno(EINVAL); return nil }
    let h = heap(raw)
    let p = Allocator.allocate(h, size: size, alignment: max(alignment, Layout.minimumAlignment), cache: cache(h), zeroed: zeroed)
    leave(h)
    return p
  }
  package static func deallocate(_ raw: UnsafeMutableRawPointer, _ p: UnsafeMutableRawPointer) {
    let h = heap(raw)
    Allocator.deallocate(h, p, cache: cache(h))
    leave(h)
  }
  package static func reallocate(_ raw: UnsafeMutableRawPointer, _ p: UnsafeMutableRawPointer, size: Int) -> UnsafeMutableRawPointer? {
    guard size >= 0, size <= Int.max / 4 else { arena_set_errno(ENOMEM); return nil }
    let h = heap(raw)
    let q = Allocator.reallocate(h, p, size: max(size, 1), cache: cache(h))
    leave(h)
    return q
  }
  package static func usableSize(_ raw: UnsafeMutableRawPointer, _ p: UnsafeMutableRawPointer) -> Int {
    Allocator.usableSize(heap(raw), p)
  }
  package static func counters(_ raw: UnsafeMutableRawPointer, liveBlocks: UnsafeMutablePointer<Int>,
                               cachedBlocks: UnsafeMutablePointer<Int>) -> HeapCounters {
    Allocator.counters(heap(raw), liveBlocks: liveBlocks, cachedBlocks: cachedBlocks)
  }
  package static func reset(_ raw: UnsafeMutableRawPointer) { Heaps.reset(heap(raw)) }
  package static func destroy(_ raw: UnsafeMutableRawPointer) { Heaps.destroy(heap(raw)) }
  /// Offers the whole pages of a page-run or huge block (0, or -1 with errno).
  package static func offer(_ raw: UnsafeMutableRawPointer, _ p: UnsafeMutableRawPointer) -> Int32 { Offer.offer(heap(raw), p) }
  /// Reclaims an offered block: 1 intact, 0 discarded, -1 not offered.
  package static func reclaim(_ raw: UnsafeMutableRawPointer, _ p: UnsafeMutableRawPointer) -> Int32 { Offer.reclaim(heap(raw), p) }
  /// Whether Offer's hard-coded descriptor offsets match the compiler's layout (tests).
  #if !hasFeature(Embedded)
  package static var offerSlotsMatchLayout: Bool {
    MemoryLayout<RunDescriptor>.offset(of: \.freeList) == Offer.freeListOffset
      && MemoryLayout<RunDescriptor>.offset(of: \.start) == Offer.startOffset
      && MemoryLayout<RunDescriptor>.offset(of: \.liveCount) == Offer.countersOffset
      && MemoryLayout<RunDescriptor>.offset(of: \.carvedCount) == Offer.countersOffset + 4
  }
  #endif
  /// Parses ARENA_OPTIONS again (tests; options are otherwise read once).
  package static func reloadOptions() { arena_options_reload() }
  /// Whether `pointer` lies in any arena's reservation (e.g. to tell whether malloc is ours).
  package static func isArenaMemory(_ pointer: UnsafeRawPointer) -> Bool {
    Reservations.find(UInt(bitPattern: pointer)) != nil
  }
  /// The scavenger's options as parsed from ARENA_OPTIONS.
  package static var scavengerOptions: (decayNanoseconds: UInt64, decommitNanoseconds: UInt64, enabled: Bool) {
    let o = Scavenger.options
    return (o.decay_ns, o.decommit_ns, o.scavenger_enabled != 0)
  }
  /// Releases all free memory of heap `raw` now (purge, and decommit of whole free granules).
  package static func trim(_ raw: UnsafeMutableRawPointer) -> (purged: Int, decommitted: Int) {
    let h = heap(raw)
    let outcome = Release.trim(h)
    return (outcome.purgedBytes, outcome.decommittedBytes)
  }
  /// Flushes the calling thread's cache back to the centrals (tests and trim).
  package static func flushCurrentThreadCache() {
    if let tc = ThreadCaches.enter() { ThreadCaches.flushAll(tc) }
    ThreadCaches.leave()
  }
}
