// Discardable memory: the Linux counterpart of Windows' OfferVirtualMemory/ReclaimVirtualMemory.
//
// Offering a block hands its whole pages to the kernel with MADV_FREE: under memory pressure the
// kernel may discard them (they then read as zero); otherwise they keep their contents and cost
// nothing to take back. Detection never lies (the scheme KERNEL-FACTS records): for each page, the
// page's first word is kept aside in the allocator's metadata and replaced by a non-zero cookie
// before MADV_FREE. Reclaiming atomically exchanges the saved word back in: if the cookie comes
// back, the page was never discarded (and the write pins it again); if zero comes back, the page
// was discarded, and its first word is cleared again so that the whole page reads as zero. A plain
// read would not be a claim: the kernel could discard the page right after it.
//
// Offerable blocks: page runs (above 32 KiB) and huge blocks. Their saved words live in the run
// descriptors of the run's interior pages (unused while the run is allocated; the first page's
// word in the run descriptor's small-run counters) or, for huge blocks, in an array allocated from
// the same heap. An offered block is never handed out again (it is allocated) and never purged by
// the scavenger (which only touches free memory). It may be freed; it must be reclaimed before it
// is read, written or reallocated.
import CSystemShims

enum Offer {
  /// The state flag of an offered page run (in `RunDescriptor.inPartialList`).
  @inline(__always) static var offeredFlag: UInt8 { 3 }

  @inline(__always) static func cookie(_ page: UInt) -> UInt {
    (UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret) ^ page) | 1
  }

  /// Byte offsets in RunDescriptor of `freeList` and of the (liveCount, carvedCount) pair
  /// (key paths are not available in Embedded Swift; a test checks these against the layout).
  @inline(__always) static var startOffset: Int { 24 }
  @inline(__always) static var freeListOffset: Int { 32 }
  @inline(__always) static var countersOffset: Int { 40 }

  /// Where the saved first word of page `i` of a page run lives.
  @inline(__always)
  static func slot(_ d: DescriptorPointer, _ i: Int) -> UnsafeMutablePointer<UInt> {
    if i == 0 { return (UnsafeMutableRawPointer(d) + countersOffset).assumingMemoryBound(to: UInt.self) }
    return (UnsafeMutableRawPointer(d + i) + freeListOffset).assumingMemoryBound(to: UInt.self)
  }

  /// The whole pages of an offerable block and where their saved words go.
  struct Target {
    var base: UInt
    var pages: Int
    var run: DescriptorPointer?           // page runs
    var hugeSlot: Int                     // huge blocks: index in the huge table, else -1
  }

  /// Finds the block at `p`; nil (errno EINVAL) for a live block that cannot be offered.
  static func target(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ operation: StaticString) -> Target? {
    let b = Allocator.block(h, p, operation)
    if b.sizeClass != 0 { arena_set_errno(EINVAL); return nil }
    let a = UInt(bitPattern: p)
    if let r = b.reservation {
      let d = r.descriptor(r.pageIndex(a))
      return Target(base: a, pages: b.usableSize &>> Layout.pageShift, run: d, hugeSlot: -1)
    }
    arena_lock_acquire(&h.pointee.hugeLock)
    let i = Huge.find(h, a)
    arena_lock_release(&h.pointee.hugeLock)
    return Target(base: a, pages: b.usableSize &>> Layout.pageShift, run: nil, hugeSlot: i)
  }

  /// Offers the whole pages of the block at `p`. Returns 0, or -1 with errno EINVAL (a small
  /// block, or already offered) or ENOMEM (no room for a huge block's saved words).
  static func offer(_ h: HeapPointer, _ p: UnsafeMutableRawPointer) -> Int32 {
    guard let t = target(h, p, "arena_offer():") else { return -1 }
    let saved: UnsafeMutablePointer<UInt>?
    if let d = t.run {
      if d.pointee.inPartialList == offeredFlag { arena_set_errno(EINVAL); return -1 }
      d.pointee.inPartialList = offeredFlag
      saved = nil
    } else {
      if h.hugeTable[t.hugeSlot].offerWords != 0 { arena_set_errno(EINVAL); return -1 }
      guard let words = Allocator.allocate(h, size: t.pages &* 8, alignment: 16, cache: nil, zeroed: false) else { return -1 }
      h.hugeTable[t.hugeSlot].offerWords = UInt(bitPattern: words)
      saved = words.assumingMemoryBound(to: UInt.self)
    }
    var i = 0
    while i < t.pages {
      let page = t.base &+ UInt(i &<< Layout.pageShift)
      let word = UnsafeMutablePointer<UInt>(bitPattern: page)!
      (saved.map { $0 + i } ?? slot(t.run!, i)).pointee = word.pointee
      word.pointee = cookie(page)
      i &+= 1
    }
    let bytes = t.pages &<< Layout.pageShift
    _ = arena_sys_purge_lazy(p, bytes)
    _ = arena_atomic_add64(&h.pointee.offeredBytes, UInt64(bytes))
    return 0
  }

  /// Reclaims an offered block: 1 if every page survived, 0 if any was discarded (those read as
  /// zero, the others keep their data), -1 with errno EINVAL if the block is not offered.
  static func reclaim(_ h: HeapPointer, _ p: UnsafeMutableRawPointer) -> Int32 {
    guard let t = target(h, p, "arena_reclaim():") else { return -1 }
    var saved: UnsafeMutablePointer<UInt>? = nil
    if let d = t.run {
      if d.pointee.inPartialList != offeredFlag { arena_set_errno(EINVAL); return -1 }
    } else {
      let words = h.hugeTable[t.hugeSlot].offerWords
      if words == 0 { arena_set_errno(EINVAL); return -1 }
      saved = UnsafeMutablePointer(bitPattern: words)
    }
    var discardedPages = 0
    var i = 0
    while i < t.pages {
      let page = t.base &+ UInt(i &<< Layout.pageShift)
      let word = UnsafeMutablePointer<UInt64>(bitPattern: page)!
      let keep = (saved.map { $0 + i } ?? slot(t.run!, i)).pointee
      let previous = arena_atomic_exchange64(word, UInt64(keep))
      if UInt(previous) != cookie(page) {
        arena_atomic_store64(word, 0)  // discarded: the whole page reads as zero
        discardedPages &+= 1
      }
      i &+= 1
    }
    if let d = t.run { d.pointee.inPartialList = 0 } else {
      h.hugeTable[t.hugeSlot].offerWords = 0
      Allocator.deallocate(h, UnsafeMutableRawPointer(saved!), cache: nil)
    }
    let bytes = t.pages &<< Layout.pageShift
    let lost = discardedPages &<< Layout.pageShift
    _ = arena_atomic_sub64(&h.pointee.offeredBytes, UInt64(bytes))
    _ = arena_atomic_add64(&h.pointee.reclaimedIntactBytes, UInt64(bytes &- lost))
    _ = arena_atomic_add64(&h.pointee.discardedBytes, UInt64(lost))
    return discardedPages == 0 ? 1 : 0
  }

  /// A block being freed or resized: forget its offer (free) or refuse (realloc).
  @inline(__always)
  static func isOffered(_ d: DescriptorPointer) -> Bool { d.pointee.inPartialList == offeredFlag }
}
