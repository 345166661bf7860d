// Where memory goes back to the kernel.
//
// Two release levels, both through CSystemShims:
// - purge (MADV_DONTNEED): RSS drops at once, the commit charge stays, the pages read as zero.
//   The run becomes "clean".
// - decommit (mmap MAP_FIXED PROT_NONE): the contents and the commit charge are given back, and
//   the PROT_NONE range merges with neighbouring PROT_NONE VMAs. Only whole 2 MiB granules are
//   decommitted, or pages that extend a PROT_NONE neighbour (which moves a VMA boundary instead of
//   adding one), so the VMA count of a reservation stays bounded (at most two boundaries per
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
    /// Purge dirty runs freed at or before this time (ns since boot); UInt.max: all.
    var purgeBefore: UInt = UInt.max
    /// Decommit whole granules of runs freed at or before this time; UInt.max: all, 0: none.
    var decommitBefore: UInt = UInt.max
    /// Dirty free bytes per reservation left alone (the hot reserve)...
    var keepDirtyBytes: Int = 0
    /// ...unless freed before this time (ns since boot): a reserve nobody reuses is not hot.
    var reserveExpiresBefore: UInt = 0
    /// Stop once the calling thread has used this much CPU (ns, thread clock); 0: no limit.
    var cpuDeadline: UInt64 = 0
    /// Purge with MADV_FREE instead of MADV_DONTNEED.
    var lazy: Bool = false
    /// Decommit every free run whole, not only its granules (out of memory: the charge of the
    /// holes between live runs goes back too, at the cost of a few more VMAs).
    var wholeRuns: Bool = false

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
        // Within the hot reserve, only runs older than its expiry are purged.
        var claim = policy
        if state == FreeState.dirty && (r.pointee.freePages.0 &<< Layout.pageShift) <= policy.keepDirtyBytes {
          claim.purgeBefore = min(policy.purgeBefore, policy.reserveExpiresBefore)
        }
        guard let d = claimOne(r, state: state, policy: claim, skip: skipped) else {
          arena_lock_release(&h.pointee.pageLock)
          break
        }
        let start = r.pageIndex(d.pointee.start)
        let pages = Int(d.pointee.pageCount)
        let stamp = d.pointee.freeList
        let wasZeroed = PageHeap.readsAsZero(d)
        let decommit = stamp <= policy.decommitBefore
        let range = !decommit ? (low: 0, high: 0)
          : policy.wholeRuns ? (low: start, high: start &+ pages) : decommittableRange(r, start: start, pages: pages)
        arena_lock_release(&h.pointee.pageLock)

        // [low, high): decommitted (when old enough, see decommittableRange); the rest: purged
        // (if dirty). An empty range leaves low == high == the run's end.
        let (low, high) = range.high > range.low ? range : (start &+ pages, start &+ pages)
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
        if dirty || decommitted > 0 { purgeMetadata(r, start, pages) }

        // Purged with MADV_FREE, pages keep their old bytes until the kernel takes them: clean
        // (not resident, not purged again) but not known to read as zero.
        let cleanZeroed = dirty ? !policy.lazy : wasZeroed
        arena_lock_acquire(&h.pointee.pageLock)
        let map = r.pointee.pageMap
        map[start] = 0
        map[start &+ pages &- 1] = 0
        d.pointee.kind = RunKind.unused
        if decommitted > 0 {
          if low > start {
            PageHeap.insertFree(r, start: start, pages: low &- start, state: FreeState.clean, stamp: stamp, zeroed: cleanZeroed)
          }
          PageHeap.insertFree(r, start: low, pages: decommitted, state: FreeState.decommitted, stamp: stamp)
          if start &+ pages > high {
            PageHeap.insertFree(r, start: high, pages: start &+ pages &- high, state: FreeState.clean, stamp: stamp, zeroed: cleanZeroed)
          }
          r.pointee.committedPages &-= decommitted
          h.pointee.decommittedBytesTotal &+= decommitted &<< Layout.pageShift
          outcome.decommittedBytes &+= decommitted &<< Layout.pageShift
        } else {
          PageHeap.insertFree(r, start: start, pages: pages, state: FreeState.clean, stamp: stamp, zeroed: cleanZeroed)
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

  /// Purges the metadata that only the interior pages of a claimed free run use: their page-map
  /// entries are zero and their run descriptors unused until the pages are handed out again, when
  /// they are written (and fault in as zero pages). A 1 GiB heap has 12 MiB of descriptors; after a
  /// spike they would otherwise stay resident for good.
  static func purgeMetadata(_ r: ReservationPointer, _ start: Int, _ pages: Int) {
    guard pages > 2 else { return }
    let first = start &+ 1
    let end = start &+ pages &- 1
    purgeWholePages(UInt(bitPattern: r.descriptor(first)), UInt(bitPattern: r.descriptor(end)))
    purgeWholePages(UInt(bitPattern: r.pointee.pageMap + first), UInt(bitPattern: r.pointee.pageMap + end))
  }

  @inline(__always)
  static func purgeWholePages(_ low: UInt, _ high: UInt) {
    let page = UInt(Layout.pageSize)
    let a = roundUp(low, page)
    let b = high & ~(page &- 1)
    if b > a { _ = arena_sys_purge(UnsafeMutableRawPointer(bitPattern: a), Int(b &- a)) }
  }

  /// Purges a committed range: MADV_DONTNEED, or MADV_FREE when the `purge:free` option asks.
  @inline(__always)
  static func purge(address: UInt, bytes: Int, lazy: Bool) {
    let p = UnsafeMutableRawPointer(bitPattern: address)
    if lazy { _ = arena_sys_purge_lazy(p, bytes) } else { _ = arena_sys_purge(p, bytes) }
  }

  /// The pages of free run [start, start+pages) to decommit (page lock held): its whole granules,
  /// and on each side whose neighbour is already PROT_NONE (a decommitted free run, or the never
  /// committed space past the frontier) everything up to the run's edge. Extending a PROT_NONE
  /// range moves a VMA boundary instead of adding one, so the count stays bounded; without it the
  /// part of a granule that was free later than the rest would stay charged for good. Empty when
  /// `low >= high`.
  static func decommittableRange(_ r: ReservationPointer, start: Int, pages: Int) -> (low: Int, high: Int) {
    let g = Layout.granulePages
    let end = start &+ pages
    let map = r.pointee.pageMap
    var leftNone = false, rightNone = end >= r.pointee.frontier
    if start > 0 {
      let e = map[start &- 1]
      if e & 0xFF == 1 {
        let left = r.descriptor(Int(e &>> 8))
        leftNone = left.pointee.kind == RunKind.free && Int(left.pointee.state) == FreeState.decommitted
      }
    }
    if !rightNone {
      let e = map[end]
      if e & 0xFF == 1 && Int(e &>> 8) == end {
        let right = r.descriptor(end)
        rightNone = right.pointee.kind == RunKind.free && Int(right.pointee.state) == FreeState.decommitted
      }
    }
    let low = leftNone ? start : roundUp(start, g)
    let high = rightNone ? end : (end / g) &* g
    if high > low { return (low, high) }
    // Inside one granule: the whole run, if one side is PROT_NONE already.
    return leftNone || rightNone ? (start, end) : (0, 0)
  }

  /// Takes one free run of `state` worth releasing out of the bins (page lock held): dirty runs
  /// freed by `purgeBefore`, or clean runs freed by `decommitBefore` with pages to decommit (see
  /// `decommittableRange`). Clean runs passed over earlier are skipped (`skip` of them have been seen).
  static func claimOne(_ r: ReservationPointer, state: Int, policy: Policy, skip: Int) -> DescriptorPointer? {
    let before = state == FreeState.dirty ? policy.purgeBefore : policy.decommitBefore
    if before == 0 { return nil }
    var seen = 0
    // Clean runs smaller than a granule qualify too, next to a decommitted neighbour.
    var bin = 0
    while true {
      bin = PageHeap.nextNonEmptyBin(r, state, from: bin)
      if bin < 0 { return nil }
      var d = PageHeap.binSlot(r, state, bin).pointee
      while let run = d {
        d = run.pointee.next
        if run.pointee.freeList > before { continue }
        if state == FreeState.clean && !policy.wholeRuns {
          let range = decommittableRange(r, start: r.pageIndex(run.pointee.start), pages: Int(run.pointee.pageCount))
          if range.high <= range.low { continue }
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
  /// one block at a time keeps one) if the class has seen no free after `quietBefore`. Each such
  /// run would otherwise pin its granule's commit charge. The run reaches the page heap stamped
  /// with the class's last free, so a pass with the same horizon purges it too. Returns how many
  /// runs went back.
  @discardableResult
  static func releaseEmptyRuns(_ h: HeapPointer, quietBefore: UInt) -> Int {
    var released = Guards.releaseCached(h, before: quietBefore)
    var c = 1
    while c <= SizeClass.count {
      let central = h.central(c)
      var emptied: DescriptorPointer? = nil
      // A quiet class's parked batches go back to their runs first: they may empty some.
      if central.pointee.lastGive <= quietBefore && central.pointee.transferBatches > 0 { SmallRuns.drainTransfer(h, c) }
      arena_lock_acquire(&central.pointee.lock)
      let lastGive = central.pointee.lastGive
      // A class keeps at most one empty run, as its only partial run (SmallRuns.pushDroppingSpare).
      if lastGive <= quietBefore, let run = central.pointee.partial, run.pointee.liveCount == 0 {
        SmallRuns.detachEmpty(central, run, &emptied)
        released &+= 1
      }
      arena_lock_release(&central.pointee.lock)
      SmallRuns.releaseDetached(h, emptied, stamp: lastGive)
      c &+= 1
    }
    return released
  }

  /// Out of memory: gives back the commit charge of free memory that is still charged, so that
  /// the failed request can be tried once more. Other threads' caches not in use, each class's
  /// kept empty run and every free page run go back (whole free granules are decommitted);
  /// nothing allocated is touched. Called by every path that takes memory from the kernel (page
  /// runs and their metadata, reservations, huge mappings), with no lock held. From then on the
  /// charge counts as scarce (Scavenger.chargeIsScarce). Returns whether anything was given back.
  static func giveBackCharge(_ h: HeapPointer) -> Bool {
    arena_atomic_store32(&arena_globals_pointer().pointee.commit_scarce, 1)
    var released = 0
    if h.pointee.isDefault {
      let now = UInt(arena_sys_now_ns())
      released &+= ThreadCaches.reclaimIdle(h, quietBefore: UInt.max, idleBefore: now, now: now)
    }
    released &+= releaseEmptyRuns(h, quietBefore: UInt.max)
    var policy = Policy.everything
    policy.wholeRuns = true
    released &+= releaseFree(h, policy).decommittedBytes
    return released > 0
  }

  /// Whether free memory of `h` holds commit charge that the inline release would give back:
  /// dirty free pages beyond `keep` bytes in a reservation, or a granule's worth more clean free
  /// pages than the last inline release left (`cleanFloor`: what fragmentation keeps). A racy
  /// read without the lock (a hint).
  static func holdsChargeBeyondReserve(_ h: HeapPointer, keep: Int, cleanFloor: Int) -> Bool {
    var r = h.pointee.firstReservation
    while let res = r {
      if res.pointee.freePages.0 &<< Layout.pageShift > keep { return true }
      r = res.pointee.next
    }
    return cleanFreePages(h) >= cleanFloor &+ Layout.granulePages
  }

  /// Clean free pages of `h` (racy read, a hint).
  static func cleanFreePages(_ h: HeapPointer) -> Int {
    var clean = 0
    var r = h.pointee.firstReservation
    while let res = r {
      clean &+= res.pointee.freePages.1
      r = res.pointee.next
    }
    return clean
  }

  /// malloc_trim and Arena.scavenge(): empties the calling thread's cache and every other thread's
  /// cache not in use at this moment (default heap), and releases all free memory now, including the free blocks of partly used runs.
  static func trim(_ h: HeapPointer) -> Outcome {
    if h.pointee.isDefault {
      if let tc = ThreadCaches.enter() { ThreadCaches.flushAll(tc) }
      ThreadCaches.leave()
      let now = UInt(arena_sys_now_ns())
      _ = ThreadCaches.reclaimIdle(h, quietBefore: UInt.max, idleBefore: now, now: now)
    }
    releaseEmptyRuns(h, quietBefore: UInt.max)
    var outcome = releaseFree(h, .everything)
    var c = 1
    while c <= SizeClass.count {
      outcome.purgedBytes &+= purgeFreeBlocks(h, c, quietBefore: UInt.max, policy: .everything)
      c &+= 1
    }
    return outcome
  }

  // MARK: Free pages inside partly used runs
  //
  // A run whose blocks are partly in use can still give back the pages that only free blocks
  // touch. The scavenger takes the run off its class's partial list (flagged 2, so no thread takes
  // its blocks and no free releases the run under it), finds the pages all of whose blocks are
  // free (on the detached free list or already released), purges them, marks them released
  // (SmallRuns: released pages) and keeps on the free list only the blocks that touch no released
  // page. The run goes back on its list with the blocks freed meanwhile. A class is looked at again
  // only once blocks have come back to it since the last look.

  /// Purges the free pages of class `c`'s partly used runs if the class has seen no free after
  /// `quietBefore`. Returns the bytes purged.
  static func purgeFreeBlocks(_ h: HeapPointer, _ c: Int, quietBefore: UInt, policy: Policy) -> Int {
    let central = h.central(c)
    var purged = 0
    while !overBudget(policy) {
      // Detach a batch of runs with news on their free list, resuming the sweep where it stopped.
      var detached: DescriptorPointer? = nil
      arena_lock_acquire(&central.pointee.lock)
      let lastGive = central.pointee.lastGive
      if lastGive > quietBefore || lastGive < central.pointee.lastScan {
        arena_lock_release(&central.pointee.lock)
        return purged
      }
      var d = central.pointee.partial
      if let cursor = central.pointee.scanCursor, cursor.pointee.kind == RunKind.small,
         Int(cursor.pointee.sizeClass) == c, cursor.pointee.inPartialList == 1 {
        d = cursor
      } else {
        central.pointee.sweepGive = lastGive
      }
      var taken = 0
      var steps = 0
      while let run = d, taken < 32, steps < 512 {
        d = run.pointee.next
        steps &+= 1
        // Runs whose free list has not changed since their last look have nothing new to give.
        guard run.pointee.freeList != 0 && run.pointee.freeList != SmallRuns.scannedHead(run).pointee else { continue }
        SmallRuns.remove(central, run)
        run.pointee.inPartialList = 2
        run.pointee.prev = UnsafeMutablePointer(bitPattern: run.pointee.freeList)
        run.pointee.freeList = 0
        run.pointee.next = detached
        detached = run
        taken &+= 1
      }
      central.pointee.scanCursor = d
      arena_lock_release(&central.pointee.lock)

      var complete = true
      var batch = 0
      var run = detached
      while let r = run {
        if overBudget(policy) { complete = false; break }
        batch &+= releaseFreePages(h, r, c, lazy: policy.lazy)
        SmallRuns.scannedHead(r).pointee = 1  // looked at: set to the list head once it is back
        run = r.pointee.next
      }

      var emptied: DescriptorPointer? = nil
      arena_lock_acquire(&central.pointee.lock)
      run = detached
      while let r = run {
        run = r.pointee.next
        if r.pointee.prev != nil {
          // The blocks still on the detached list go back in front of any freed meanwhile.
          var tail = UInt(bitPattern: r.pointee.prev)
          while true {
            let next = UnsafeMutableRawPointer(bitPattern: tail)!.load(as: UInt.self)
            if next == 0 { break }
            tail = next
          }
          UnsafeMutableRawPointer(bitPattern: tail)!.storeBytes(of: r.pointee.freeList, as: UInt.self)
          r.pointee.freeList = UInt(bitPattern: r.pointee.prev)
          r.pointee.prev = nil
        }
        r.pointee.inPartialList = 0
        if SmallRuns.scannedHead(r).pointee == 1 { SmallRuns.scannedHead(r).pointee = r.pointee.freeList }
        SmallRuns.pushDroppingSpare(central, r, &emptied)
        if SmallRuns.isSpareEmpty(central, r) { SmallRuns.detachEmpty(central, r, &emptied) }
      }
      h.pointee.purgedBytesTotal &+= batch
      purged &+= batch
      var swept = false
      if !complete {
        central.pointee.scanCursor = nil  // runs passed over are back at the head: sweep again
        central.pointee.sweepGive = UInt.max
      } else if d == nil {
        // The sweep reached the end: unless blocks came back meanwhile, nothing is left to look at.
        if central.pointee.lastGive == central.pointee.sweepGive { central.pointee.lastScan = central.pointee.lastGive &+ 1 }
        swept = true
      }
      arena_lock_release(&central.pointee.lock)
      SmallRuns.releaseDetached(h, emptied, stamp: lastGive)
      if swept || !complete { return purged }
    }
    return purged
  }

  /// Releases the free pages of detached run `r` of class `c`, whose detached free list is in
  /// `r.prev`; leaves there the blocks that touch no released page. Returns the bytes purged.
  static func releaseFreePages(_ h: HeapPointer, _ r: DescriptorPointer, _ c: Int, lazy: Bool) -> Int {
    let size = UInt(SizeClass.size(ofClass: c))
    let pages = UInt(ClassTable.runPages(c))
    let carved = UInt(r.pointee.carvedCount)
    let start = r.pointee.start
    let released = SmallRuns.releasedPages(r)
    guard let res = h.reservation(containing: start), carved <= 1024, pages <= UInt(UInt.bitWidth) else { return 0 }
    // Free blocks: the detached list, and every carved block touching a released page.
    var bits: (UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt, UInt) =
      (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return withUnsafeMutableBytes(of: &bits) { raw -> Int in
      let free = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
      let w = UInt(UInt.bitWidth)
      var block = UInt(bitPattern: r.pointee.prev)
      while block != 0 {
        let index = ClassTable.blockIndex(offset: block &- start, c)
        free[Int(index / w)] |= 1 &<< (index % w)
        block = UnsafeMutableRawPointer(bitPattern: block)!.load(as: UInt.self)
      }
      var index: UInt = 0
      while index < carved && released.pointee != 0 {
        if SmallRuns.pagesOf(block: index, size: size) & released.pointee != 0 { free[Int(index / w)] |= 1 &<< (index % w) }
        index &+= 1
      }
      // A page is free when it is not released yet, touches at least one carved block, and every
      // block it touches is carved and free.
      var fresh: UInt = 0
      var page: UInt = 0
      let shift = UInt(Layout.pageShift)
      while page < pages {
        let low = page &<< shift
        let first = low / size
        let last = (low &+ UInt(Layout.pageSize) &- 1) / size  // may be past the run's blocks
        if released.pointee & (1 &<< page) == 0 && first < carved && last < carved {
          var all = true
          var i = first
          while i <= last && all { all = free[Int(i / w)] & (1 &<< (i % w)) != 0; i &+= 1 }
          if all { fresh |= 1 &<< page }
        }
        page &+= 1
      }
      guard fresh != 0 else { return 0 }
      // Mark; keep on the list only the blocks that touch no released page (before the purge: the
      // links of blocks on purged pages read as zero after it); then purge.
      released.pointee |= fresh
      var kept: UInt = 0
      block = UInt(bitPattern: r.pointee.prev)
      while block != 0 {
        let next = UnsafeMutableRawPointer(bitPattern: block)!.load(as: UInt.self)
        let i = ClassTable.blockIndex(offset: block &- start, c)
        if SmallRuns.pagesOf(block: i, size: size) & released.pointee == 0 {
          UnsafeMutableRawPointer(bitPattern: block)!.storeBytes(of: kept, as: UInt.self)
          kept = block
        }
        block = next
      }
      r.pointee.prev = UnsafeMutablePointer(bitPattern: kept)
      let base = res.pageIndex(start)
      var purged = 0
      page = 0
      while page < pages {
        if fresh & (1 &<< page) != 0 {
          var end = page
          while end < pages && fresh & (1 &<< end) != 0 {
            res.pointee.pageMap[base &+ Int(end)] |= SmallRuns.slowPathFlag
            end &+= 1
          }
          purge(address: start &+ (page &<< shift), bytes: Int((end &- page) &<< shift), lazy: lazy)
          purged &+= Int((end &- page) &<< shift)
          page = end
        } else {
          page &+= 1
        }
      }
      return purged
    }
  }
}
