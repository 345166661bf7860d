// Hardened heaps (Hardening.swift): a guard page after every page run and every small
// run, so an overrun past the end of a run faults (and the fault handler names the guard page)
// instead of corrupting the next run. Guards use MADV_GUARD_INSTALL where the kernel has it, so
// they add no VMAs; the run's descriptor counts the guard page, its usable size does not. Guards
// are installed and removed outside every lock.
import CSystemShims

enum Guards {
  /// Marks a page run that carries a guard page (in `RunDescriptor.sizeClass`, unused by page runs).
  @inline(__always) static var guardedRunMark: UInt8 { 0xFF }

  @inline(__always) static func enabled(_ h: HeapPointer) -> Bool { h.pointee.hardened }

  /// Guard pages a page run of this descriptor carries (0 or 1).
  @inline(__always)
  static func pages(ofLargeRun d: DescriptorPointer) -> Int { d.pointee.sizeClass == guardedRunMark ? 1 : 0 }

  /// Whether a small run of class `c` with this descriptor carries a guard page.
  @inline(__always)
  static func smallRunIsGuarded(_ d: DescriptorPointer, _ c: Int) -> Bool {
    Int(d.pointee.pageCount) > ClassTable.runPages(c)
  }

  /// Installs the guard on the last page of a run.
  static func install(_ d: DescriptorPointer) {
    let last = d.pointee.start &+ UInt((Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift)
    _ = arena_sys_guard_install(UnsafeMutableRawPointer(bitPattern: last), Layout.pageSize)
  }

  /// Removes the guard on the last page of a run before the run goes back to the page heap.
  static func remove(_ d: DescriptorPointer) {
    let last = d.pointee.start &+ UInt((Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift)
    _ = arena_sys_guard_remove(UnsafeMutableRawPointer(bitPattern: last), Layout.pageSize)
  }

  // MARK: Cached guarded runs
  //
  // Installing and removing a guard are two system calls per page-run allocation. A hardened heap
  // keeps up to `cachedRunSlots` freed guarded runs of up to 1 MiB (16 MiB in all), guard still
  // installed, and hands one out again to a request that fits it with at most an eighth to spare
  // (the spare bytes are the run's slack, checked like any other). A cached run is marked
  // `RunKind.cachedGuarded`, so freeing it again is a double free and no neighbour merges with it.
  // Runs cached before `before` go back to the page heap with each release pass
  // (Release.releaseEmptyRuns: the scavenger, trim, and out-of-memory).

  @inline(__always) static var cachedRunSlots: Int { 32 }
  @inline(__always) static var cachedRunMaxPages: Int { 256 }
  @inline(__always) static var cachedRunMaxBytes: Int { 16 << 20 }

  /// Caches freed guarded run `d` at `p` (validated by Allocator.block) if there is room; stops
  /// the process if it is no longer a live run (a double free). Takes the page lock.
  static func cacheFreed(_ h: HeapPointer, _ d: DescriptorPointer, _ p: UnsafeMutableRawPointer, now: UInt) -> Bool {
    let data = Int(d.pointee.pageCount) &- 1
    let bytes = data &<< Layout.pageShift
    arena_lock_acquire(&h.pointee.pageLock)
    guard d.pointee.kind == RunKind.large, d.pointee.start == UInt(bitPattern: p) else {
      arena_lock_release(&h.pointee.pageLock)
      Allocator.fatal("free():", "double free (page run is already free):", p)
    }
    guard !Offer.isOffered(d), data <= cachedRunMaxPages, h.pointee.cachedGuardedRuns < cachedRunSlots,
          h.pointee.cachedGuardedBytes &+ bytes <= cachedRunMaxBytes else {
      arena_lock_release(&h.pointee.pageLock)
      return false
    }
    d.pointee.kind = RunKind.cachedGuarded
    h.cachedGuardedRunSlots[h.pointee.cachedGuardedRuns] = CachedGuardedRun(run: d, freedAt: now)
    h.pointee.cachedGuardedRuns &+= 1
    h.pointee.cachedGuardedBytes &+= bytes
    arena_lock_release(&h.pointee.pageLock)
    return true
  }

  /// A cached guarded run for a request of `pages` pages: the smallest with `pages` to
  /// `pages + pages / 8` data pages, marked live; nil if none.
  static func takeCached(_ h: HeapPointer, pages: Int) -> DescriptorPointer? {
    guard pages <= cachedRunMaxPages, h.pointee.cachedGuardedRuns > 0 else { return nil }
    arena_lock_acquire(&h.pointee.pageLock)
    let slots = h.cachedGuardedRunSlots
    let most = pages &+ (pages &>> 3)
    var best = -1
    var bestPages = Int.max
    var i = 0
    while i < h.pointee.cachedGuardedRuns {
      let data = Int(slots[i].run.pointee.pageCount) &- 1
      if data >= pages && data <= most && data < bestPages { best = i; bestPages = data }
      i &+= 1
    }
    guard best >= 0 else { arena_lock_release(&h.pointee.pageLock); return nil }
    let d = takeSlot(h, best).run
    d.pointee.kind = RunKind.large
    arena_lock_release(&h.pointee.pageLock)
    return d
  }

  /// Takes entry `i` out of the cache (page lock held): the last entry moves into its place.
  static func takeSlot(_ h: HeapPointer, _ i: Int) -> CachedGuardedRun {
    let slots = h.cachedGuardedRunSlots
    let entry = slots[i]
    h.pointee.cachedGuardedRuns &-= 1
    slots[i] = slots[h.pointee.cachedGuardedRuns]
    h.pointee.cachedGuardedBytes &-= (Int(entry.run.pointee.pageCount) &- 1) &<< Layout.pageShift
    return entry
  }

  /// Gives the cached runs freed no later than `before` back to the page heap (guards removed);
  /// returns how many.
  @discardableResult
  static func releaseCached(_ h: HeapPointer, before: UInt) -> Int {
    var released = 0
    while h.pointee.cachedGuardedRuns > 0 {
      // One at a time: the guard is removed outside the page lock.
      arena_lock_acquire(&h.pointee.pageLock)
      let slots = h.cachedGuardedRunSlots
      var i = 0
      while i < h.pointee.cachedGuardedRuns && slots[i].freedAt > before { i &+= 1 }
      guard i < h.pointee.cachedGuardedRuns else { arena_lock_release(&h.pointee.pageLock); break }
      let entry = takeSlot(h, i)
      entry.run.pointee.kind = RunKind.unused  // neither live nor free while its guard comes off
      arena_lock_release(&h.pointee.pageLock)
      remove(entry.run)
      guard let r = h.reservation(containing: entry.run.pointee.start) else { continue }
      arena_lock_acquire(&h.pointee.pageLock)
      entry.run.pointee.kind = RunKind.large
      entry.run.pointee.sizeClass = 0
      PageHeap.releaseLocked(r, entry.run, stamp: entry.freedAt)
      arena_lock_release(&h.pointee.pageLock)
      released &+= 1
    }
    return released
  }
}

/// A freed guarded page run kept for reuse, and when it was freed.
struct CachedGuardedRun {
  var run: DescriptorPointer
  var freedAt: UInt
}

extension UnsafeMutablePointer where Pointee == HeapHeader {
  @inline(__always) var cachedGuardedRunSlots: UnsafeMutablePointer<CachedGuardedRun> {
    (UnsafeMutableRawPointer(self) + (HeapHeader.guardedRunTableOffset &- HeapHeader.headerOffset))
      .assumingMemoryBound(to: CachedGuardedRun.self)
  }
}
