// The C entry points of the default heap. The libc names (malloc, free, ...) are defined in C
// (CArenaMalloc) and forward here; Swift never defines them. `arena_malloc` and `arena_free` hold
// the fast paths: a thread-cache pop or push, with no lock, no atomic read-modify-write, no system
// call and no Swift runtime call. Everything else is a named slow path.
import CSystemShims

// Two compilations export these: the Embedded one (libArenaMalloc.so: fully specialized at every
// optimization level) and the regular one (the ArenaMallocLinked product). At -Onone the regular
// compilation calls the runtime for generic metadata, which would re-enter malloc, so the linked
// product only defines the libc names in optimized builds (see malloc.c).

/// malloc: `size` bytes, 16-byte aligned; NULL with ENOMEM when memory cannot be had.
@c(arena_malloc)
public func arenaMalloc(_ size: UInt) -> UnsafeMutableRawPointer? {
  // The small limit, or 0 before the default heap exists or when it is hardened.
  if size <= UInt(arena_globals_pointer().pointee.fast_small_limit) {
    if let tc = ThreadCaches.enter() {
      let bin = tc.bin(SizeClass.fastIndex(forSize: Int(truncatingIfNeeded: size)))
      if let p = bin.pointee.head {
        bin.pointee.head = UnsafeMutableRawPointer(bitPattern: p.load(as: UInt.self))
        bin.pointee.count &-= 1
        ThreadCaches.leave()
        p.storeBytes(of: 0, toByteOffset: 8, as: UInt.self)
        return p
      }
    }
    ThreadCaches.leave()
  }
  return defaultAllocateSlow(size: size, alignment: UInt(Layout.minimumAlignment), zeroed: false)
}

/// A small block of the primary reservation that is not marked free: its class and the stamp
/// free() writes into it; nil for anything else (other reservations, page runs, huge blocks,
/// released pages, free blocks, interior pointers), which the slow paths validate and diagnose.
@inline(__always)
func primarySmallBlock(_ p: UnsafeMutableRawPointer) -> (sizeClass: Int, stamp: UInt)? {
  let g = arena_globals_pointer()
  guard let b = primaryBlock(p, dataEnd: g.pointee.primary_data_end) else { return nil }
  return (b.sizeClass, b.stamp)
}

/// The lookup behind `primarySmallBlock` and `Hardening.primaryLive`: a small block at `p` in the
/// primary reservation's [start, `dataEnd`), on a page without the slow-path flag, at a block's
/// start, not marked free; its class, index in its run and free stamp.
@inline(__always)
func primaryBlock(_ p: UnsafeMutableRawPointer, dataEnd: UInt) -> (sizeClass: Int, index: UInt, stamp: UInt)? {
  let g = arena_globals_pointer()
  let a = UInt(bitPattern: p)
  let offset = a &- g.pointee.primary_data_start
  guard offset < dataEnd &- g.pointee.primary_data_start else { return nil }
  let entry = g.pointee.primary_page_map.unsafelyUnwrapped[Int(offset &>> UInt(Layout.pageShift))]
  let tag = Int(entry & 0xFF)
  // A small class's tag (2...count+1); pages with SmallRuns.slowPathFlag (released, or where carving
  // stopped) take the slow path.
  guard UInt(bitPattern: tag &- 2) < UInt(SizeClass.count) else { return nil }
  let c = tag &- 1
  let inRun = offset &- (UInt(entry &>> 8) &<< UInt(Layout.pageShift))
  let index = ClassTable.blockIndex(offset: inRun, c)
  let stamp = UInt(truncatingIfNeeded: g.pointee.secret) ^ a
  guard index &* UInt(arena_class_size_table()[c]) == inRun && p.load(fromByteOffset: 8, as: UInt.self) != stamp else { return nil }
  return (c, index, stamp)
}

/// free: returns a block to the calling thread's cache; errno is preserved.
@c(arena_free)
public func arenaFree(_ p: UnsafeMutableRawPointer?) {
  guard let p else { return }
  if let (c, stamp) = primarySmallBlock(p) {
    if let tc = ThreadCaches.enter() {
      let bin = tc.bin(c)
      p.storeBytes(of: UInt(bitPattern: bin.pointee.head), as: UInt.self)
      p.storeBytes(of: stamp, toByteOffset: 8, as: UInt.self)
      bin.pointee.head = p
      bin.pointee.count &+= 1
      if bin.pointee.count > UInt32(bin.pointee.limit) { return ThreadCaches.flushOverfullAndLeave(tc, c) }
      ThreadCaches.leave()
      return
    }
    ThreadCaches.leave()
  }
  defaultFreeSlow(p)
}

/// calloc: `count * size` zeroed bytes; NULL with ENOMEM on overflow.
@c(arena_calloc)
public func arenaCalloc(_ count: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
  let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
  if overflow { arena_set_errno(ENOMEM); return nil }
  return defaultAllocateSlow(size: bytes, alignment: UInt(Layout.minimumAlignment), zeroed: true)
}

/// realloc with glibc's contract: NULL -> malloc, size 0 -> free and NULL, failure -> NULL with
/// ENOMEM and the old block intact.
@c(arena_realloc)
public func arenaRealloc(_ p: UnsafeMutableRawPointer?, _ size: UInt) -> UnsafeMutableRawPointer? {
  guard let p else { return arenaMalloc(size) }
  if size == 0 { arenaFree(p); return nil }
  guard size <= UInt(Int.max / 2), let h = Heaps.defaultHeap else { arena_set_errno(ENOMEM); return nil }
  let q = Allocator.reallocate(h, p, size: Int(size), cache: ThreadCaches.enterOrCreate(h))
  ThreadCaches.leave()
  return q
}

/// An aligned allocation: `alignment` must be a power of two (EINVAL otherwise).
@c(arena_aligned_alloc)
public func arenaAlignedAlloc(_ alignment: UInt, _ size: UInt) -> UnsafeMutableRawPointer? {
  guard alignment != 0, alignment & (alignment &- 1) == 0 else { arena_set_errno(EINVAL); return nil }
  return defaultAllocateSlow(size: size, alignment: max(alignment, UInt(Layout.minimumAlignment)), zeroed: false)
}

/// malloc_usable_size: the exact usable size of a block (0 for NULL). Small blocks are answered
/// from the page map, as free() finds them; everything else is validated by the slow path.
@c(arena_usable_size)
public func arenaUsableSize(_ p: UnsafeMutableRawPointer?) -> UInt {
  guard let p else { return 0 }
  if let (c, _) = primarySmallBlock(p) { return UInt(arena_class_size_table()[c]) }
  return usableSizeSlow(p)
}

@inline(never)
func usableSizeSlow(_ p: UnsafeMutableRawPointer) -> UInt {
  guard let h = Heaps.defaultHeapIfCreated else {
    Allocator.fatal("malloc_usable_size():", "pointer was not allocated by this allocator:", p)
  }
  if let (c, _) = Hardening.primaryLive(p) { return UInt(Hardening.requestSize(p, c, "malloc_usable_size():")) }
  return UInt(Allocator.usableSize(h, p))
}

@inline(never)
func defaultAllocateSlow(size: UInt, alignment: UInt, zeroed: Bool) -> UnsafeMutableRawPointer? {
  guard size <= UInt(Int.max / 4), alignment <= UInt(1 << 40), let h = Heaps.defaultHeap else {
    arena_set_errno(ENOMEM)
    return nil
  }
  let p = Allocator.allocate(h, size: Int(size), alignment: Int(alignment), cache: ThreadCaches.enterOrCreate(h), zeroed: zeroed)
  ThreadCaches.leave()
  return p
}

@inline(never)
func defaultFreeSlow(_ p: UnsafeMutableRawPointer) {
  guard let h = Heaps.defaultHeapIfCreated else {
    Allocator.fatal("free():", "pointer was not allocated by this allocator:", p)
  }
  let saved = arena_get_errno()
  if let (c, index) = Hardening.primaryLive(p) {
    // A hardened heap's small block, found as the fast path finds one: its checks, then the cache.
    _ = Hardening.requestSize(p, c, "free():")
    Hardening.checkIn(h, p, c, index: index)
    Allocator.freeSmall(h, p, c, cache: ThreadCaches.enterOrCreateForFree(h))
  } else {
    Allocator.deallocate(h, p, cache: ThreadCaches.enterOrCreateForFree(h))
  }
  ThreadCaches.leave()
  arena_set_errno(saved)
}

/// malloc_trim: flushes the calling thread's cache and releases all free memory of the default
/// heap now. Returns 1 if memory was released, else 0.
@c(arena_trim)
public func arenaTrim() -> Int32 {
  guard let h = Heaps.defaultHeapIfCreated else { return 0 }
  let saved = arena_get_errno()
  let outcome = Release.trim(h)
  arena_set_errno(saved)
  return outcome.purgedBytes &+ outcome.decommittedBytes > 0 ? 1 : 0
}

/// Fills `out[0..<count]` with the default heap's counters, in this order: reserved, committed,
/// metadata, live, small live, large live, large count, huge live, huge count, cached (thread and
/// transfer caches), free dirty,
/// free clean, free decommitted, purged total, decommitted total, reservations, commit calls,
/// scavenger CPU ns, scavenger passes, offered, reclaimed intact, discarded, taken back from idle
/// thread caches.
/// Returns how many were written.
@c(arena_statistics)
public func arenaStatistics(_ out: UnsafeMutablePointer<UInt64>?, _ count: Int) -> Int {
  guard let out, count > 0 else { return 0 }
  guard let h = Heaps.defaultHeapIfCreated else {
    out.initialize(repeating: 0, count: count)
    return 0
  }
  let s = Allocator.counters(h, liveBlocks: nil, cachedBlocks: nil)
  let values = (s.reservedBytes, s.committedBytes, s.metadataBytes,
                s.smallLiveBytes &+ s.largeLiveBytes &+ s.hugeLiveBytes, s.smallLiveBytes,
                s.largeLiveBytes, s.largeLiveCount, s.hugeLiveBytes, s.hugeLiveCount, s.cachedBytes &+ s.transferCachedBytes,
                s.freeDirtyBytes, s.freeCleanBytes, s.freeDecommittedBytes, s.purgedBytesTotal,
                s.decommittedBytesTotal, s.reservationCount, s.commitCalls,
                s.scavengerCPUNanoseconds, s.scavengerPasses, s.offeredBytes, s.reclaimedIntactBytes,
                s.discardedBytes, s.cacheReclaimedBytes)
  return withUnsafeBytes(of: values) { raw in
    let n = min(count, raw.count / 8)
    var i = 0
    while i < n { out[i] = UInt64(bitPattern: Int64(raw.load(fromByteOffset: i &* 8, as: Int.self))); i &+= 1 }
    return n
  }
}

/// arena_offer: offers the whole pages of a block of the malloc family (page runs and huge
/// blocks). 0, or -1 with errno (EINVAL: a small block or already offered).
@c(arena_offer_block)
public func arenaOfferBlock(_ p: UnsafeMutableRawPointer?) -> Int32 {
  guard let p, let h = Heaps.defaultHeapIfCreated else { arena_set_errno(EINVAL); return -1 }
  return Offer.offer(h, p)
}

/// arena_reclaim: 1 if every byte survived, 0 if any page was discarded, -1 (EINVAL) if the block
/// is not offered.
@c(arena_reclaim_block)
public func arenaReclaimBlock(_ p: UnsafeMutableRawPointer?) -> Int32 {
  guard let p, let h = Heaps.defaultHeapIfCreated else { arena_set_errno(EINVAL); return -1 }
  return Offer.reclaim(h, p)
}
