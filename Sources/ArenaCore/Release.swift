// Where memory goes back to the kernel.
//
// Two release levels, both through CSystemShims:
// - purge (MADV_DONTNEED): RSS drops at once, the commit charge stays, the pages read as zero.
//   The run becomes "clean".
// - decommit (mmap MAP_FIXED PROT_NONE): the contents and the commit charge are given back, and
//   the PROT_NONE range merges with neighbouring PROT_NONE VMAs. Only whole 2 MiB granules are
//   decommitted, so the VMA count of a reservation stays bounded (at most two boundaries per
//   granule) and a partly released huge page is never re-inflated by khugepaged.
//
// A free run is claimed under the page lock (relabelled as taken, so no neighbour merges with it
// and no allocation takes it), released with the lock dropped, and inserted back in its new state
// under the lock. Allocating threads never wait on these system calls.
import CSystemShims

enum Release {
  /// What one release pass gave back.
  struct Outcome {
    var purgedBytes: Int = 0
    var decommittedBytes: Int = 0
  }

  /// Which free memory one pass releases.
  struct Policy {
    /// Purge dirty runs freed before this time (ns since boot); UInt.max: all.
    var purgeBefore: UInt = UInt.max
    /// Decommit whole granules of runs freed before this time; UInt.max: all, 0: none.
    var decommitBefore: UInt = UInt.max
    /// Dirty free bytes per reservation left alone (the hot reserve).
    var keepDirtyBytes: Int = 0
    /// Stop once the calling thread has used this much CPU (ns, thread clock); 0: no limit.
    var cpuDeadline: UInt64 = 0
    /// Purge with MADV_FREE instead of MADV_DONTNEED.
    var lazy: Bool = false

    /// Everything, now (malloc_trim, Arena.scavenge()).
    static var everything: Policy { Policy() }
  }

  /// Releases free memory of `h` as `policy` says: purges dirty runs, decommits whole granules.
  static func releaseFree(_ h: HeapPointer, _ policy: Policy = .everything) -> Outcome {
    var outcome = Outcome()
    var r = h.pointee.firstReservation
    while let res = r {
      releaseFree(h, res, policy, &outcome)
      r = res.pointee.next
    }
    return outcome
  }

  @inline(__always) static func overBudget(_ policy: Policy) -> Bool {
    policy.cpuDeadline != 0 && arena_sys_thread_cpu_ns() > policy.cpuDeadline
  }

  static func releaseFree(_ h: HeapPointer, _ r: ReservationPointer, _ policy: Policy, _ outcome: inout Outcome) {
    // One run at a time: claim, release outside the lock, put back. Bounded work per claim.
    var state = FreeState.dirty
    while state <= FreeState.clean {
      var skipped = 0
      while !overBudget(policy) {
        arena_lock_acquire(&h.pointee.pageLock)
        let keep = state == FreeState.dirty && (r.pointee.freePages.0 &<< Layout.pageShift) <= policy.keepDirtyBytes
        guard !keep, let d = claimOne(r, state: state, policy: policy, skip: skipped) else {
          arena_lock_release(&h.pointee.pageLock)
          break
        }
        let start = r.pageIndex(d.pointee.start)
        let pages = Int(d.pointee.pageCount)
        let stamp = d.pointee.freeList
        arena_lock_release(&h.pointee.pageLock)

        // Granule-aligned interior: decommitted (when old enough); the edges: purged (if dirty).
        let g = Layout.granulePages
        let decommit = stamp < policy.decommitBefore
        let low = decommit ? roundUp(start, g) : start &+ pages
        let high = decommit ? ((start &+ pages) / g) &* g : start &+ pages
        var decommitted = 0
        if high > low {
          let error = arena_sys_decommit(UnsafeMutableRawPointer(bitPattern: r.address(ofPage: low)),
                                         (high &- low) &<< Layout.pageShift)
          if error == 0 { decommitted = high &- low }
        }
        let dirty = state == FreeState.dirty
        if dirty {
          if decommitted > 0 {
            if low > start { purge(r, start, low &- start, lazy: policy.lazy) }
            if start &+ pages > high { purge(r, high, start &+ pages &- high, lazy: policy.lazy) }
          } else {
            purge(r, start, pages, lazy: policy.lazy)
          }
        }

        arena_lock_acquire(&h.pointee.pageLock)
        let map = r.pointee.pageMap
        map[start] = 0
        map[start &+ pages &- 1] = 0
        d.pointee.kind = RunKind.unused
        if decommitted > 0 {
          if low > start { PageHeap.insertFree(r, start: start, pages: low &- start, state: FreeState.clean, stamp: stamp) }
          PageHeap.insertFree(r, start: low, pages: decommitted, state: FreeState.decommitted, stamp: stamp)
          if start &+ pages > high { PageHeap.insertFree(r, start: high, pages: start &+ pages &- high, state: FreeState.clean, stamp: stamp) }
          r.pointee.committedPages &-= decommitted
          h.pointee.decommittedBytesTotal &+= decommitted &<< Layout.pageShift
          outcome.decommittedBytes &+= decommitted &<< Layout.pageShift
        } else {
          PageHeap.insertFree(r, start: start, pages: pages, state: FreeState.clean, stamp: stamp)
          if !dirty { skipped &+= 1 }  // a clean run with no whole granule: leave it, look further
        }
        if dirty {
          let purged = (pages &- decommitted) &<< Layout.pageShift
          h.pointee.purgedBytesTotal &+= purged
          outcome.purgedBytes &+= purged
        }
        arena_lock_release(&h.pointee.pageLock)
      }
      state &+= 1
    }
  }

  @inline(__always)
  static func purge(_ r: ReservationPointer, _ start: Int, _ pages: Int, lazy: Bool) {
    purge(address: r.address(ofPage: start), bytes: pages &<< Layout.pageShift, lazy: lazy)
  }

  /// Purges a committed range: MADV_DONTNEED, or MADV_FREE when the `purge:free` option asks.
  @inline(__always)
  static func purge(address: UInt, bytes: Int, lazy: Bool) {
    let p = UnsafeMutableRawPointer(bitPattern: address)
    if lazy { _ = arena_sys_purge_lazy(p, bytes) } else { _ = arena_sys_purge(p, bytes) }
  }

  /// Takes one free run of `state` worth releasing out of the bins (page lock held): dirty runs
  /// freed before `purgeBefore`, or clean runs freed before `decommitBefore` that contain a whole
  /// granule. Clean runs passed over earlier are skipped (`skip` of them have been seen).
  static func claimOne(_ r: ReservationPointer, state: Int, policy: Policy, skip: Int) -> DescriptorPointer? {
    let before = state == FreeState.dirty ? policy.purgeBefore : policy.decommitBefore
    if before == 0 { return nil }
    var seen = 0
    var bin = 0
    while true {
      bin = PageHeap.nextNonEmptyBin(r, state, from: bin)
      if bin < 0 { return nil }
      var d = PageHeap.binSlot(r, state, bin).pointee
      while let run = d {
        d = run.pointee.next
        if run.pointee.freeList >= before { continue }
        if state == FreeState.clean {
          let start = r.pageIndex(run.pointee.start)
          let end = start &+ Int(run.pointee.pageCount)
          if roundUp(start, Layout.granulePages) &+ Layout.granulePages > end { continue }
          if seen < skip { seen &+= 1; continue }
        }
        PageHeap.binRemove(r, run)
        run.pointee.kind = RunKind.large  // taken: neighbours will not merge with it
        return run
      }
      bin &+= 1
    }
  }

  /// Gives back the empty runs each size class keeps for reuse (a class that allocates and frees
  /// one block at a time keeps one) if the class has seen no free since `quietBefore`. Each such
  /// run would otherwise pin its granule's commit charge. Returns how many runs went back.
  @discardableResult
  static func releaseEmptyRuns(_ h: HeapPointer, quietBefore: UInt) -> Int {
    var released = 0
    var c = 1
    while c <= SizeClass.count {
      let central = h.central(c)
      var emptied: DescriptorPointer? = nil
      arena_lock_acquire(&central.pointee.lock)
      if central.pointee.lastGive < quietBefore {
        var d = central.pointee.partial
        while let run = d {
          d = run.pointee.next
          if run.pointee.liveCount == 0 {
            SmallRuns.detachEmpty(central, run, &emptied)
            released &+= 1
          }
        }
      }
      arena_lock_release(&central.pointee.lock)
      SmallRuns.releaseDetached(h, emptied)
      c &+= 1
    }
    return released
  }

  /// malloc_trim and Arena.scavenge(): flushes the calling thread's cache (default heap) and
  /// releases all free memory now, including the free blocks of partly used runs.
  static func trim(_ h: HeapPointer) -> Outcome {
    if h.pointee.isDefault, let tc = ThreadCaches.current { ThreadCaches.flushAll(tc) }
    releaseEmptyRuns(h, quietBefore: UInt.max)
    var outcome = releaseFree(h, .everything)
    var c = firstBlockPurgeClass
    while c <= SizeClass.count {
      outcome.purgedBytes &+= purgeFreeBlocks(h, c, quietBefore: UInt.max, policy: .everything)
      c &+= 1
    }
    return outcome
  }

  // MARK: Free blocks inside partly used runs
  //
  // A run of a large size class (blocks of two pages or more) whose blocks are partly in use can
  // still give back the pages of its free blocks: every page of a free block but the first (which
  // holds the free-list link and tag) is purged, and word 2 of the block records it (`secret ^
  // address ^ 5`) so it is not purged twice. A block leaving the run clears the mark. While the
  // scavenger works on a run, the run is off its class's partial list and flagged (2), so no
  // thread takes its blocks and no free releases the run under it.

  @inline(__always) static var firstBlockPurgeClass: Int { SizeClass.index(forSize: 2 &* Layout.pageSize) }
  @inline(__always) static func purgedMark(_ block: UInt) -> UInt {
    UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret) ^ block ^ 5
  }

  /// Purges the free blocks of class `c`'s partly used runs if the class has seen no free since
  /// `quietBefore`. Returns the bytes purged.
  static func purgeFreeBlocks(_ h: HeapPointer, _ c: Int, quietBefore: UInt, policy: Policy) -> Int {
    let size = UInt(SizeClass.size(ofClass: c))
    let central = h.central(c)
    var detached: DescriptorPointer? = nil
    arena_lock_acquire(&central.pointee.lock)
    if central.pointee.lastGive >= quietBefore { arena_lock_release(&central.pointee.lock); return 0 }
    var d = central.pointee.partial
    while let run = d {
      d = run.pointee.next
      guard run.pointee.freeList != 0 else { continue }
      SmallRuns.remove(central, run)
      run.pointee.inPartialList = 2
      run.pointee.prev = UnsafeMutablePointer(bitPattern: run.pointee.freeList)
      run.pointee.freeList = 0
      run.pointee.next = detached
      detached = run
    }
    arena_lock_release(&central.pointee.lock)
    guard detached != nil else { return 0 }

    var purged = 0
    let page = UInt(Layout.pageSize)
    var run = detached
    while let r = run, !overBudget(policy) {
      var block = UInt(bitPattern: r.pointee.prev)
      while block != 0 {
        let b = UnsafeMutableRawPointer(bitPattern: block)!
        let mark = purgedMark(block)
        if b.load(fromByteOffset: 16, as: UInt.self) != mark {
          let low = roundUp(block &+ 24, page)
          let high = (block &+ size) & ~(page &- 1)
          if high > low {
            purge(address: low, bytes: Int(high &- low), lazy: policy.lazy)
            purged &+= Int(high &- low)
          }
          b.storeBytes(of: mark, toByteOffset: 16, as: UInt.self)
        }
        block = b.load(as: UInt.self)
      }
      run = r.pointee.next
    }

    var emptied: DescriptorPointer? = nil
    arena_lock_acquire(&central.pointee.lock)
    run = detached
    while let r = run {
      run = r.pointee.next
      // Put the detached blocks back in front of any freed meanwhile.
      var tail = UInt(bitPattern: r.pointee.prev)
      while true {
        let next = UnsafeMutableRawPointer(bitPattern: tail)!.load(as: UInt.self)
        if next == 0 { break }
        tail = next
      }
      UnsafeMutableRawPointer(bitPattern: tail)!.storeBytes(of: r.pointee.freeList, as: UInt.self)
      r.pointee.freeList = UInt(bitPattern: r.pointee.prev)
      r.pointee.prev = nil
      r.pointee.inPartialList = 0
      SmallRuns.push(central, r)
      if SmallRuns.isSpareEmpty(central, r) { SmallRuns.detachEmpty(central, r, &emptied) }
    }
    h.pointee.purgedBytesTotal &+= purged
    arena_lock_release(&central.pointee.lock)
    SmallRuns.releaseDetached(h, emptied)
    return purged
  }
}
