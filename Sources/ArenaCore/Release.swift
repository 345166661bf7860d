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

  /// Releases every free run of `h` that is dirty (purge) and every whole free granule that is
  /// still committed (decommit). `olderThan`: only runs freed before this time (ns); 0 = all.
  static func releaseFree(_ h: HeapPointer, olderThan: UInt = 0, decommit: Bool = true) -> Outcome {
    var outcome = Outcome()
    var r = h.pointee.firstReservation
    while let res = r {
      releaseFree(h, res, olderThan: olderThan, decommit: decommit, &outcome)
      r = res.pointee.next
    }
    return outcome
  }

  static func releaseFree(_ h: HeapPointer, _ r: ReservationPointer, olderThan: UInt, decommit: Bool,
                          _ outcome: inout Outcome) {
    // One run at a time: claim, release outside the lock, put back. Bounded work per claim.
    var state = FreeState.dirty
    while state <= FreeState.clean {
      var skipped = 0
      while true {
        arena_lock_acquire(&h.pointee.pageLock)
        guard let d = claimOne(r, state: state, olderThan: olderThan, decommit: decommit, skip: skipped) else {
          arena_lock_release(&h.pointee.pageLock)
          break
        }
        let start = r.pageIndex(d.pointee.start)
        let pages = Int(d.pointee.pageCount)
        let stamp = d.pointee.freeList
        arena_lock_release(&h.pointee.pageLock)

        // Granule-aligned interior: decommitted; the edges: purged (if dirty).
        let g = Layout.granulePages
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
            if low > start { _ = arena_sys_purge(UnsafeMutableRawPointer(bitPattern: r.address(ofPage: start)), (low &- start) &<< Layout.pageShift) }
            if start &+ pages > high { _ = arena_sys_purge(UnsafeMutableRawPointer(bitPattern: r.address(ofPage: high)), (start &+ pages &- high) &<< Layout.pageShift) }
          } else {
            _ = arena_sys_purge(UnsafeMutableRawPointer(bitPattern: r.address(ofPage: start)), pages &<< Layout.pageShift)
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

  /// Takes one free run of `state` worth releasing out of the bins (page lock held): dirty runs
  /// freed before `olderThan`, or clean runs that contain a whole granule (when decommitting).
  /// Clean runs without a whole granule are passed over (`skip` of them have been seen).
  static func claimOne(_ r: ReservationPointer, state: Int, olderThan: UInt, decommit: Bool, skip: Int) -> DescriptorPointer? {
    if state == FreeState.clean && !decommit { return nil }
    var seen = 0
    var bin = 0
    while true {
      bin = PageHeap.nextNonEmptyBin(r, state, from: bin)
      if bin < 0 { return nil }
      var d = PageHeap.binSlot(r, state, bin).pointee
      while let run = d {
        d = run.pointee.next
        if olderThan != 0 && run.pointee.freeList >= olderThan { continue }
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

  /// malloc_trim: flushes the calling thread's cache and releases all free memory now.
  static func trim(_ h: HeapPointer) -> Outcome {
    if let tc = ThreadCaches.current { ThreadCaches.flushAll(tc) }
    return releaseFree(h, olderThan: 0, decommit: true)
  }
}
