// The page heap: runs of pages inside a heap's reservations. One lock (`HeapHeader.pageLock`)
// guards the free-run bins, the frontiers and the descriptors and page-map boundaries of free and
// large runs. It is never held across a system call: a range that needs committing is claimed
// under the lock (its page-map entries stay 0, so no neighbour can merge with it), committed with
// the lock released, and registered under the lock again.
//
// Allocation prefers dirty free runs (already resident: no page faults), then clean ones
// (committed, zero), then decommitted ones, and only then claims fresh granules at the frontier;
// a new reservation is made only when no reservation has room.
import CSystemShims

/// A run taken from the page heap.
struct TakenRun {
  var reservation: ReservationPointer
  var descriptor: DescriptorPointer
  /// The run's memory is known to read as zero (fresh or purged), so calloc need not clear it.
  var isZeroed: Bool
}

enum PageHeap {
  // MARK: Bins (page lock held)

  @inline(__always)
  static func binSlot(_ r: ReservationPointer, _ state: Int, _ bin: Int) -> UnsafeMutablePointer<DescriptorPointer?> {
    r.binHeads + (state &* Reservation.binCount &+ bin)
  }

  static func binInsert(_ r: ReservationPointer, _ d: DescriptorPointer) {
    let state = Int(d.pointee.state)
    let bin = Reservation.bin(forPages: Int(d.pointee.pageCount))
    let slot = binSlot(r, state, bin)
    d.pointee.prev = nil
    d.pointee.next = slot.pointee
    slot.pointee?.pointee.prev = d
    slot.pointee = d
    r.binMasks[state &* 2 &+ (bin &>> 6)] |= (1 as UInt64) &<< UInt64(bin & 63)
    r.addFreePages(state, Int(d.pointee.pageCount))
  }

  static func binRemove(_ r: ReservationPointer, _ d: DescriptorPointer) {
    let state = Int(d.pointee.state)
    let bin = Reservation.bin(forPages: Int(d.pointee.pageCount))
    if let prev = d.pointee.prev {
      prev.pointee.next = d.pointee.next
    } else {
      let slot = binSlot(r, state, bin)
      slot.pointee = d.pointee.next
      if d.pointee.next == nil {
        r.binMasks[state &* 2 &+ (bin &>> 6)] &= ~((1 as UInt64) &<< UInt64(bin & 63))
      }
    }
    d.pointee.next?.pointee.prev = d.pointee.prev
    d.pointee.next = nil
    d.pointee.prev = nil
    r.addFreePages(state, -Int(d.pointee.pageCount))
  }

  /// The first non-empty bin of `state` at or above `bin`, or -1.
  @inline(__always)
  static func nextNonEmptyBin(_ r: ReservationPointer, _ state: Int, from bin: Int) -> Int {
    var word = bin &>> 6
    guard word < 2 else { return -1 }
    var bits = r.binMasks[state &* 2 &+ word] & (~(0 as UInt64) &<< UInt64(bin & 63))
    while true {
      if bits != 0 { return (word &<< 6) &+ bits.trailingZeroBitCount }
      word &+= 1
      if word >= 2 { return -1 }
      bits = r.binMasks[state &* 2 &+ word]
    }
  }

  @inline(__always)
  static func markBoundary(_ r: ReservationPointer, _ start: Int, _ pages: Int) {
    let entry = UInt32(truncatingIfNeeded: start &<< 8) | 1
    r.pointee.pageMap[start] = entry
    r.pointee.pageMap[start &+ pages &- 1] = entry
  }

  // MARK: Free runs (page lock held)

  /// Whether a free neighbour in state `neighbour` may join a run being inserted as `state`: the
  /// same state, or a clean neighbour of a dirty run (the merged run is dirty: its clean pages are
  /// not resident, and purging them again costs little). Without that, the scavenger's purges
  /// would cut free space into dirty and clean pieces too small for large requests.
  @inline(__always)
  static func mergeable(_ neighbour: Int, into state: Int) -> Bool {
    neighbour == state || (state == FreeState.dirty && neighbour == FreeState.clean)
  }

  // MARK: Which free pages read as zero
  //
  // One rule: a page is known to read as zero only after MADV_DONTNEED, a fresh commit or a
  // decommit. Dirty runs never are; decommitted runs always are (committing them gives zero
  // pages); a clean run is unless it was purged with MADV_FREE (`purge:free`), whose pages keep
  // their old bytes until the kernel takes them. Such a clean run carries `unzeroedMark` in its
  // descriptor's `sizeClass` (unused by free runs), and so does any clean run it merges into.

  /// Marks a clean free run whose pages may still hold old bytes.
  @inline(__always) static var unzeroedMark: UInt8 { 1 }

  /// Whether the pages of free run `d` read as zero (page lock held).
  @inline(__always)
  static func readsAsZero(_ d: DescriptorPointer) -> Bool {
    switch Int(d.pointee.state) {
    case FreeState.dirty: return false
    case FreeState.clean: return d.pointee.sizeClass != unzeroedMark
    default: return true
    }
  }

  /// Makes pages [start, start+pages) a free run of `state`, merging with free neighbours that
  /// are `mergeable`. The pages' own page-map entries must be 0 except the first and last.
  /// `zeroed` says whether clean pages read as zero (see above); other states ignore it.
  static func insertFree(_ r: ReservationPointer, start: Int, pages: Int, state: Int, stamp: UInt, zeroed: Bool = true) {
    var first = start
    var count = pages
    var zero = zeroed
    let map = r.pointee.pageMap
    if start > 0 {
      let e = map[start &- 1]
      if e & 0xFF == 1 {
        let left = r.descriptor(Int(e &>> 8))
        if left.pointee.kind == RunKind.free && mergeable(Int(left.pointee.state), into: state) {
          zero = zero && readsAsZero(left)
          binRemove(r, left)
          map[start &- 1] = 0
          map[start] = 0
          left.pointee.kind = RunKind.unused
          first = Int(e &>> 8)
          count &+= Int(left.pointee.pageCount)
        }
      }
    }
    let end = start &+ pages
    if end < r.pointee.frontier {
      let e = map[end]
      if e & 0xFF == 1 && Int(e &>> 8) == end {
        let right = r.descriptor(end)
        if right.pointee.kind == RunKind.free && mergeable(Int(right.pointee.state), into: state) {
          zero = zero && readsAsZero(right)
          binRemove(r, right)
          map[end &- 1] = 0
          map[end] = 0
          right.pointee.kind = RunKind.unused
          count &+= Int(right.pointee.pageCount)
        }
      }
    }
    let d = r.descriptor(first)
    d.pointee.pageCount = UInt32(count)
    d.pointee.kind = RunKind.free
    d.pointee.state = UInt8(state)
    d.pointee.sizeClass = state == FreeState.clean && !zero ? unzeroedMark : 0
    d.pointee.start = r.address(ofPage: first)
    d.pointee.freeList = stamp
    markBoundary(r, first, count)
    binInsert(r, d)
  }

  /// Takes a free run of `state` with room for `pages` pages starting at a multiple of
  /// `alignment` bytes; the rest of it goes back to the bins. Returns the taken run's descriptor;
  /// `zeroed` says whether its pages read as zero.
  static func takeFree(_ r: ReservationPointer, pages: Int, alignment: Int, state: Int, zeroed: inout Bool) -> DescriptorPointer? {
    let extra = alignment > Layout.pageSize ? (alignment &>> Layout.pageShift) &- 1 : 0
    let need = pages &+ extra
    var bin = Reservation.bin(forPages: need)
    var found: DescriptorPointer? = nil
    while found == nil {
      bin = nextNonEmptyBin(r, state, from: bin)
      if bin < 0 { return nil }
      var d = binSlot(r, state, bin).pointee
      while let candidate = d {
        if Int(candidate.pointee.pageCount) >= need { found = candidate; break }
        d = candidate.pointee.next
      }
      bin &+= 1
    }
    guard let run = found else { return nil }
    zeroed = readsAsZero(run)
    binRemove(r, run)
    let start = r.pageIndex(run.pointee.start)
    let total = Int(run.pointee.pageCount)
    let stamp = run.pointee.freeList
    let map = r.pointee.pageMap
    map[start] = 0
    map[start &+ total &- 1] = 0
    run.pointee.kind = RunKind.unused
    var taken = start
    if alignment > Layout.pageSize {
      let aligned = roundUp(run.pointee.start, UInt(alignment))
      taken = r.pageIndex(aligned)
    }
    let lead = taken &- start
    let tail = total &- lead &- pages
    if lead > 0 { insertFree(r, start: start, pages: lead, state: state, stamp: stamp, zeroed: zeroed) }
    if tail > 0 { insertFree(r, start: taken &+ pages, pages: tail, state: state, stamp: stamp, zeroed: zeroed) }
    let d = r.descriptor(taken)
    d.pointee.pageCount = UInt32(pages)
    d.pointee.kind = RunKind.large
    d.pointee.state = UInt8(state)
    d.pointee.sizeClass = 0
    d.pointee.start = r.address(ofPage: taken)
    d.pointee.next = nil
    d.pointee.prev = nil
    markBoundary(r, taken, pages)
    return d
  }

  // MARK: Allocation

  /// Takes a run of `pages` pages aligned to `alignment` bytes from the heap, committing memory as
  /// needed and reserving a new reservation when none has room. The run comes back as a large run;
  /// small-run callers re-label it. Returns nil (errno ENOMEM) when memory cannot be had.
  static func allocate(_ h: HeapPointer, pages: Int, alignment: Int) -> TakenRun? {
    precondition(pages > 0, "a page run has at least one page")
    if let run = allocateOnce(h, pages: pages, alignment: alignment) { return run }
    // Out of commit (strict overcommit, RLIMIT_DATA): give back the charge of free memory that
    // is still committed, and try once more. Nothing already allocated is touched.
    guard Release.giveBackCharge(h) else { arena_set_errno(ENOMEM); return nil }
    return allocateOnce(h, pages: pages, alignment: alignment)
  }

  static func allocateOnce(_ h: HeapPointer, pages: Int, alignment: Int) -> TakenRun? {
    while true {
      arena_lock_acquire(&h.pointee.pageLock)
      // 1. Dirty, then clean free runs: no system call needed.
      var state = FreeState.dirty
      while state <= FreeState.clean {
        var r = h.pointee.firstReservation
        while let res = r {
          var zeroed = false
          if let d = takeFree(res, pages: pages, alignment: alignment, state: state, zeroed: &zeroed) {
            arena_lock_release(&h.pointee.pageLock)
            return TakenRun(reservation: res, descriptor: d, isZeroed: zeroed)
          }
          r = res.pointee.next
        }
        state &+= 1
      }
      // 2. Decommitted free runs: commit them outside the lock.
      var r = h.pointee.firstReservation
      while let res = r {
        var zeroed = true
        if let d = takeFree(res, pages: pages, alignment: alignment, state: FreeState.decommitted, zeroed: &zeroed) {
          arena_lock_release(&h.pointee.pageLock)
          let error = commitAndProbe(d.pointee.start, pages &<< Layout.pageShift)
          arena_lock_acquire(&h.pointee.pageLock)
          if error != 0 {
            let start = res.pageIndex(d.pointee.start)
            res.pointee.pageMap[start] = 0
            res.pointee.pageMap[start &+ pages &- 1] = 0
            insertFree(res, start: start, pages: pages, state: FreeState.decommitted, stamp: 0)
            arena_lock_release(&h.pointee.pageLock)
            arena_set_errno(ENOMEM)
            return nil
          }
          res.pointee.committedPages &+= pages
          d.pointee.state = UInt8(FreeState.clean)
          arena_lock_release(&h.pointee.pageLock)
          return TakenRun(reservation: res, descriptor: d, isZeroed: true)
        }
        r = res.pointee.next
      }
      // 3. Fresh granules at a frontier.
      r = h.pointee.firstReservation
      while let res = r {
        if let run = claimFrontier(h, res, pages: pages, alignment: alignment) { return run }
        if h.pointee.lastError != 0 {
          h.pointee.lastError = 0
          arena_lock_release(&h.pointee.pageLock)
          arena_set_errno(ENOMEM)
          return nil
        }
        r = res.pointee.next
      }
      arena_lock_release(&h.pointee.pageLock)
      // 4. A new reservation (reserved outside the lock).
      let needed = (pages &<< Layout.pageShift) &+ alignment &+ (8 << 20)
      guard let fresh = Reservations.create(size: max(h.pointee.reservationSize, needed), minimumBytes: needed,
                                            heap: UnsafeMutableRawPointer(h)) else {
        arena_set_errno(ENOMEM)
        return nil
      }
      arena_lock_acquire(&h.pointee.pageLock)
      h.pointee.lastReservation?.pointee.next = fresh
      h.pointee.lastReservation = fresh
      arena_lock_release(&h.pointee.pageLock)
    }
  }

  /// Claims granules at a reservation's frontier for a run and commits them. Called with the page
  /// lock held; returns with it released when it returns a run (or sets `lastError`, lock held).
  /// Returns nil with the lock still held when this reservation has no room.
  static func claimFrontier(_ h: HeapPointer, _ r: ReservationPointer, pages: Int, alignment: Int) -> TakenRun? {
    let frontier = r.pointee.frontier
    var start = frontier
    if alignment > Layout.pageSize {
      start = r.pageIndex(roundUp(r.address(ofPage: frontier), UInt(alignment)))
    }
    let end = start &+ pages
    guard end <= r.pointee.dataPages else { return nil }
    let claimEnd = min(roundUp(end, Layout.granulePages), r.pointee.dataPages)
    r.pointee.frontier = claimEnd
    arena_lock_release(&h.pointee.pageLock)

    // Outside the lock: descriptor memory, then data (one PROT_NONE VMA, so the mprotect is atomic).
    let stride = UInt(MemoryLayout<RunDescriptor>.stride)
    let pageSize = UInt(Layout.pageSize)
    let descriptorBase = UInt(bitPattern: r.pointee.descriptors)
    let descLow = (descriptorBase &+ UInt(frontier) &* stride) & ~(pageSize &- 1)
    let descHigh = roundUp(descriptorBase &+ UInt(claimEnd) &* stride, pageSize)
    let descriptorError = arena_sys_commit(UnsafeMutableRawPointer(bitPattern: descLow), Int(descHigh &- descLow))
    var error = descriptorError
    var committedEnd = claimEnd
    if error == 0 {
      error = commitAndProbe(r.address(ofPage: frontier), (claimEnd &- frontier) &<< Layout.pageShift)
      if error != 0 && claimEnd > end {
        // Fall back to the smallest commit that serves this request.
        committedEnd = min(roundUp(end, Layout.fallbackCommitPages), claimEnd)
        error = commitAndProbe(r.address(ofPage: frontier), (committedEnd &- frontier) &<< Layout.pageShift)
      }
    }

    arena_lock_acquire(&h.pointee.pageLock)
    if error != 0 {
      if descriptorError == 0 {
        // The data mprotect stayed inside one PROT_NONE VMA, so nothing of it was committed.
        insertFree(r, start: frontier, pages: claimEnd &- frontier, state: FreeState.decommitted, stamp: 0)
      } else if r.pointee.frontier == claimEnd {
        // Without descriptor memory the range cannot be a free run: give it back to the frontier.
        r.pointee.frontier = frontier
      }
      h.pointee.lastError = error
      return nil
    }
    r.pointee.committedPages &+= committedEnd &- frontier
    h.pointee.commitCalls &+= 1
    if start > frontier {
      insertFree(r, start: frontier, pages: start &- frontier, state: FreeState.clean, stamp: 0)
    }
    if committedEnd > end {
      insertFree(r, start: end, pages: committedEnd &- end, state: FreeState.clean, stamp: 0)
    }
    if claimEnd > committedEnd {
      insertFree(r, start: committedEnd, pages: claimEnd &- committedEnd, state: FreeState.decommitted, stamp: 0)
    }
    let d = r.descriptor(start)
    d.pointee.pageCount = UInt32(pages)
    d.pointee.kind = RunKind.large
    d.pointee.state = UInt8(FreeState.clean)
    d.pointee.sizeClass = 0
    d.pointee.start = r.address(ofPage: start)
    d.pointee.next = nil
    d.pointee.prev = nil
    markBoundary(r, start, pages)
    arena_lock_release(&h.pointee.pageLock)
    return TakenRun(reservation: r, descriptor: d, isZeroed: true)
  }

  /// Commits a range of one PROT_NONE VMA; with the commit probe on, also touches it under a
  /// fault guard and, if touching faults, decommits it again and reports ENOMEM.
  static func commitAndProbe(_ start: UInt, _ bytes: Int) -> Int32 {
    let address = UnsafeMutableRawPointer(bitPattern: start)
    let error = arena_sys_commit(address, bytes)
    guard error == 0, Scavenger.options.commit_probe != 0 else { return error }
    guard arena_probe_range(address!, bytes) == 0 else {
      _ = arena_sys_decommit(address, bytes)
      return ENOMEM
    }
    return 0
  }

  // MARK: Release

  /// Returns a run to the free bins as dirty, freed at `stamp`. Its page-map entries must already
  /// be 0 except the first and last (small runs clear theirs first).
  static func release(_ h: HeapPointer, _ r: ReservationPointer, _ d: DescriptorPointer, stamp: UInt) {
    arena_lock_acquire(&h.pointee.pageLock)
    releaseLocked(r, d, stamp: stamp)
    arena_lock_release(&h.pointee.pageLock)
    Scavenger.releaseInline(h)
  }

  static func releaseLocked(_ r: ReservationPointer, _ d: DescriptorPointer, stamp: UInt) {
    let start = r.pageIndex(d.pointee.start)
    let pages = Int(d.pointee.pageCount)
    r.pointee.pageMap[start] = 0
    r.pointee.pageMap[start &+ pages &- 1] = 0
    d.pointee.kind = RunKind.unused
    insertFree(r, start: start, pages: pages, state: FreeState.dirty, stamp: stamp)
  }

  /// Shrinks a large run in place to `pages` pages (page lock held).
  static func shrinkLocked(_ r: ReservationPointer, _ d: DescriptorPointer, to pages: Int) {
    let start = r.pageIndex(d.pointee.start)
    let old = Int(d.pointee.pageCount)
    guard pages < old else { return }
    r.pointee.pageMap[start &+ old &- 1] = 0
    d.pointee.pageCount = UInt32(pages)
    markBoundary(r, start, pages)
    insertFree(r, start: start &+ pages, pages: old &- pages, state: FreeState.dirty, stamp: UInt(arena_sys_now_ns()))
  }

  /// Grows a large run in place to `pages` pages when the run after it is a free committed run
  /// with room (page lock held). Returns whether it grew; the added pages are zero when
  /// `zeroed` says so.
  static func growLocked(_ r: ReservationPointer, _ d: DescriptorPointer, to pages: Int) -> Bool {
    let start = r.pageIndex(d.pointee.start)
    let old = Int(d.pointee.pageCount)
    let end = start &+ old
    guard end < r.pointee.frontier else { return false }
    let e = r.pointee.pageMap[end]
    guard e & 0xFF == 1 && Int(e &>> 8) == end else { return false }
    let next = r.descriptor(end)
    guard next.pointee.kind == RunKind.free, Int(next.pointee.state) != FreeState.decommitted,
          Int(next.pointee.pageCount) >= pages &- old else { return false }
    let state = Int(next.pointee.state)
    let nextPages = Int(next.pointee.pageCount)
    let stamp = next.pointee.freeList
    let zeroed = readsAsZero(next)
    binRemove(r, next)
    next.pointee.kind = RunKind.unused
    r.pointee.pageMap[end] = 0
    r.pointee.pageMap[end &+ nextPages &- 1] = 0
    r.pointee.pageMap[end &- 1] = 0
    let rest = nextPages &- (pages &- old)
    if rest > 0 { insertFree(r, start: start &+ pages, pages: rest, state: state, stamp: stamp, zeroed: zeroed) }
    d.pointee.pageCount = UInt32(pages)
    markBoundary(r, start, pages)
    return true
  }
}
