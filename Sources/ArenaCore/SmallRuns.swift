// Small runs: page runs carved into blocks of one size class, shared by all threads through the
// class's `ClassCentral` (one lock per class). Thread caches take and give blocks in batches, so
// the lock is taken once per batch, not per block.
//
// A free block (in a run's free list or in a thread cache) holds the address of the next free
// block in word 0 and the tag `secret ^ address` in word 1; a block handed to a user has word 1
// cleared. Freeing a block whose word 1 already holds its tag is a double free. Blocks are carved
// lazily from a run's untouched tail, so a new run costs no page faults until it is used.
//
// The slow-path flag. A page-map entry with `slowPathFlag` sends every free of a pointer in that
// page to the slow path, which validates it against the run's descriptor. It marks two kinds of
// page: released pages (below), and pages that hold the start of a block not carved yet. A block
// never carved was never handed out, but it carries no tag, so the fast path alone would take it
// into a cache and hand it out twice. Carving clears the flag of each page once every block
// starting there is carved, so only the page where carving stopped keeps it.
//
// Released pages. The scavenger gives back the pages of a partly used run that only free blocks
// touch (Release.purgeFreeBlocks). The free blocks touching such a page leave the free list, whose
// links would otherwise pin it. A run's released pages are a bit mask (runs have 4 to 64 pages)
// kept in the descriptor of the run's second page, which small runs do not otherwise use, and
// their page-map entries carry `slowPathFlag`: a free of a pointer in a released page leaves the
// fast path and is diagnosed as the double free it must be. A released block whose first page is
// not released keeps its tag there, so the fast path catches its double free as usual. When a run
// has no free list left, taking from it unreleases its lowest released page: the blocks that no
// other released page holds go back on the list.
//
// Counting: a run's `liveCount` is its carved blocks that are out (in use, in a thread cache or
// in the transfer cache). With no released page, all the others are on its free list, so the
// whole list can be taken in one step without walking it.
//
// A run whose blocks have all come back is returned to the page heap (dirty), unless it is the
// only run on its class's partial list: that one is kept so that a class which allocates and
// frees one block at a time does not create and destroy a run each time.
import CSystemShims

/// A batch of free blocks linked through word 0.
struct BlockList {
  var head: UnsafeMutableRawPointer?
  var tail: UnsafeMutableRawPointer?
  var count: Int
}

enum SmallRuns {
  @inline(__always) static func tag(_ block: UnsafeMutableRawPointer) -> UInt {
    UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret) ^ UInt(bitPattern: block)
  }

  /// Takes up to `count` blocks of class `c` (at least one unless memory is exhausted). A request
  /// for more than one block may instead get a whole batch from the transfer cache, or a run's whole
  /// free list of at most `most` blocks (then `tail` is nil): both are one step under the lock,
  /// where taking blocks one by one reads each block's link, a cache miss when another thread
  /// freed it.
  static func take(_ h: HeapPointer, _ c: Int, count: Int, most: Int = 0) -> BlockList {
    let central = h.central(c)
    let size = UInt(SizeClass.size(ofClass: c))
    let capacity = UInt32((ClassTable.runPages(c) &<< Layout.pageShift) / Int(size))
    let secret = UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret)
    var list = BlockList(head: nil, tail: nil, count: 0)
    arena_lock_acquire(&central.pointee.lock)
    if count > 1 && central.pointee.transferBatches > 0 {
      central.pointee.transferBatches &-= 1
      let batch = h.transferSlots(c)[central.pointee.transferBatches]
      central.pointee.transferBlocks &-= batch.count
      arena_lock_release(&central.pointee.lock)
      return BlockList(head: batch.head, tail: nil, count: batch.count)
    }
    while list.count < count {
      guard let d = central.pointee.partial else {
        arena_lock_release(&central.pointee.lock)
        let fresh = newRun(h, c)
        arena_lock_acquire(&central.pointee.lock)
        guard let run = fresh else { break }
        push(central, run)
        central.pointee.runCount &+= 1
        continue
      }
      // A run's whole free list in one step. With no released pages, every carved block that is
      // not out is on the list.
      let listed = Int(d.pointee.carvedCount &- d.pointee.liveCount)
      if list.count == 0 && d.pointee.freeList != 0 && listed <= max(count, most) && releasedPages(d).pointee == 0 {
        list.head = UnsafeMutableRawPointer(bitPattern: d.pointee.freeList)
        list.count = listed
        d.pointee.freeList = 0
        d.pointee.liveCount = d.pointee.carvedCount
        if d.pointee.carvedCount == capacity { remove(central, d) }
        break
      }
      while list.count < count && d.pointee.freeList != 0 {
        let block = UnsafeMutableRawPointer(bitPattern: d.pointee.freeList)!
        if h.pointee.hardened { Hardening.checkLink(h, block, c) }
        d.pointee.freeList = block.load(as: UInt.self)
        append(&list, block)
        d.pointee.liveCount &+= 1
      }
      if list.count < count && d.pointee.freeList == 0 && releasedPages(d).pointee != 0 {
        unreleaseLowest(h, d, size: size, secret: secret)
        continue
      }
      let carvedBefore = d.pointee.carvedCount
      while list.count < count && d.pointee.carvedCount < capacity {
        let address = d.pointee.start &+ UInt(d.pointee.carvedCount) &* size
        let block = UnsafeMutableRawPointer(bitPattern: address)!
        block.storeBytes(of: secret ^ address, toByteOffset: 8, as: UInt.self)
        if h.pointee.hardened { Hardening.prepareFree(block, size: Int(size)) }
        append(&list, block)
        d.pointee.carvedCount &+= 1
        d.pointee.liveCount &+= 1
      }
      if d.pointee.carvedCount != carvedBefore {
        // Carving stops at a page boundary: the rest of the blocks starting in the last page go on
        // the run's free list, so no page both holds a block handed out and keeps the slow-path
        // flag (its frees would all take the slow path).
        let shift = UInt(Layout.pageShift)
        let lastPage = (UInt(d.pointee.carvedCount &- 1) &* size) &>> shift
        while d.pointee.carvedCount < capacity && (UInt(d.pointee.carvedCount) &* size) &>> shift == lastPage {
          let address = d.pointee.start &+ UInt(d.pointee.carvedCount) &* size
          let block = UnsafeMutableRawPointer(bitPattern: address)!
          block.storeBytes(of: d.pointee.freeList, as: UInt.self)
          block.storeBytes(of: secret ^ address, toByteOffset: 8, as: UInt.self)
          if h.pointee.hardened { Hardening.prepareFree(block, size: Int(size)) }
          d.pointee.freeList = address
          d.pointee.carvedCount &+= 1
        }
        markCarved(h, d, from: carvedBefore, size: size, capacity: capacity)
      }
      if d.pointee.freeList == 0 && d.pointee.carvedCount == capacity && releasedPages(d).pointee == 0 { remove(central, d) }
    }
    central.pointee.blocksOut &+= list.count
    arena_lock_release(&central.pointee.lock)
    list.tail?.storeBytes(of: 0, as: UInt.self)
    return list
  }

  /// Empties class `c`'s transfer cache into the runs, as freed at the class's last free (the
  /// scavenger, trim and out-of-memory paths, before they look for empty runs). Returns whether
  /// there was anything.
  @discardableResult
  static func drainTransfer(_ h: HeapPointer, _ c: Int) -> Bool {
    let central = h.central(c)
    // One list of all the batches (linked tail to head), given back in one call.
    arena_lock_acquire(&central.pointee.lock)
    let n = central.pointee.transferBatches
    let lastGive = central.pointee.lastGive
    var head: UnsafeMutableRawPointer? = nil
    var count = 0
    var i = 0
    while i < n {
      let batch = h.transferSlots(c)[i]
      var tail = batch.head!
      if h.pointee.hardened { Hardening.checkLink(h, tail, c) }
      while let next = UnsafeMutableRawPointer(bitPattern: tail.load(as: UInt.self)) {
        if h.pointee.hardened { Hardening.checkLink(h, next, c) }
        tail = next
      }
      tail.storeBytes(of: UInt(bitPattern: head), as: UInt.self)
      head = batch.head
      count &+= batch.count
      i &+= 1
    }
    central.pointee.transferBatches = 0
    central.pointee.transferBlocks = 0
    arena_lock_release(&central.pointee.lock)
    guard n > 0 else { return false }
    give(h, c, head, count: count, idleSince: max(1, lastGive))
    return true
  }

  /// Clears the slow-path flag of the pages of run `d` whose blocks all became carved since
  /// `before` blocks were (class lock held): those before the page where the next uncarved block
  /// starts, or all of them once the run is carved whole.
  static func markCarved(_ h: HeapPointer, _ d: DescriptorPointer, from before: UInt32, size: UInt, capacity: UInt32) {
    let shift = UInt(Layout.pageShift)
    let carved = d.pointee.carvedCount
    let first = Int((UInt(before) &* size) &>> shift)
    let end = carved == capacity ? ClassTable.runPages(Int(d.pointee.sizeClass)) : Int((UInt(carved) &* size) &>> shift)
    guard end > first, let r = h.reservation(containing: d.pointee.start) else { return }
    let base = r.pageIndex(d.pointee.start)
    let released = releasedPages(d).pointee
    var page = first
    while page < end {
      if released & (1 &<< UInt(page)) == 0 { r.pointee.pageMap[base &+ page] &= ~slowPathFlag }
      page &+= 1
    }
  }

  /// Whether page `page` of run `d` is released (not merely holding an uncarved block's start).
  @inline(__always)
  static func isReleased(_ d: DescriptorPointer, page: Int) -> Bool {
    releasedPages(d).pointee & (1 &<< UInt(page)) != 0
  }

  // MARK: Released pages

  /// Marks the page-map entry of a released page or of a page holding the start of an uncarved
  /// block (above every class tag, so not a small-class tag): frees there take the slow path.
  @inline(__always) static var slowPathFlag: UInt32 { 0x80 }

  /// The tag byte of page-map entry `e` without `slowPathFlag` (0 none, 1 boundary, c+1 small).
  @inline(__always) static func tag(ofEntry e: UInt32) -> Int { Int(e & 0xFF & ~slowPathFlag) }

  /// The released-page mask of a small run (bit i: page i of the run).
  @inline(__always)
  static func releasedPages(_ d: DescriptorPointer) -> UnsafeMutablePointer<UInt> {
    (UnsafeMutableRawPointer(d + 1) + Offer.freeListOffset).assumingMemoryBound(to: UInt.self)
  }

  /// The free-list head a small run had when the scavenger last looked at it (Release.swift).
  @inline(__always)
  static func scannedHead(_ d: DescriptorPointer) -> UnsafeMutablePointer<UInt> {
    (UnsafeMutableRawPointer(d + 1) + Offer.startOffset).assumingMemoryBound(to: UInt.self)
  }

  /// The mask of pages [first, end) of a run.
  @inline(__always) static func pageBits(_ first: UInt, _ end: UInt) -> UInt { lowBits(end) & ~lowBits(first) }
  @inline(__always) static func lowBits(_ n: UInt) -> UInt { n >= UInt(UInt.bitWidth) ? UInt.max : (1 &<< n) &- 1 }

  /// The pages block `index` of `size` bytes touches, as a mask.
  @inline(__always)
  static func pagesOf(block index: UInt, size: UInt) -> UInt {
    let shift = UInt(Layout.pageShift)
    return pageBits((index &* size) &>> shift, (((index &+ 1) &* size &- 1) &>> shift) &+ 1)
  }

  /// Unreleases the lowest released page of run `d` (class lock held): the blocks it held that
  /// touch no other released page go back on the run's free list, tagged as free blocks.
  static func unreleaseLowest(_ h: HeapPointer, _ d: DescriptorPointer, size: UInt, secret: UInt) {
    let mask = releasedPages(d)
    let page = UInt(mask.pointee.trailingZeroBitCount)
    mask.pointee &= mask.pointee &- 1
    if let r = h.reservation(containing: d.pointee.start) {
      r.pointee.pageMap[r.pageIndex(d.pointee.start) &+ Int(page)] &= ~slowPathFlag
    }
    let low = page &<< UInt(Layout.pageShift)
    let high = low &+ UInt(Layout.pageSize)
    let carved = UInt(d.pointee.carvedCount)
    var index = low / size
    while index < carved && index &* size < high {
      if pagesOf(block: index, size: size) & mask.pointee == 0 {
        let address = d.pointee.start &+ index &* size
        let block = UnsafeMutableRawPointer(bitPattern: address)!
        block.storeBytes(of: d.pointee.freeList, as: UInt.self)
        block.storeBytes(of: secret ^ address, toByteOffset: 8, as: UInt.self)
        if h.pointee.hardened { Hardening.prepareFree(block, size: Int(size)) }
        d.pointee.freeList = address
      }
      index &+= 1
    }
  }

  @inline(__always)
  static func append(_ list: inout BlockList, _ block: UnsafeMutableRawPointer) {
    if let tail = list.tail { tail.storeBytes(of: UInt(bitPattern: block), as: UInt.self) } else { list.head = block }
    list.tail = block
    list.count &+= 1
  }

  /// Returns `count` tagged blocks of class `c`, linked through word 0, to their runs. The class
  /// counts as busy from now on (the scavenger leaves it alone for the decay time), unless
  /// `idleSince` says when the blocks were last used (an idle thread's cache taken back): then
  /// the class stays as quiet as it was, and its runs are looked at again.
  static func give(_ h: HeapPointer, _ c: Int, _ first: UnsafeMutableRawPointer?, count: Int, idleSince: UInt = 0) {
    let central = h.central(c)
    var emptied: DescriptorPointer? = nil
    let now = idleSince != 0 ? idleSince : UInt(arena_sys_now_ns())
    arena_lock_acquire(&central.pointee.lock)
    if idleSince != 0 {
      central.pointee.lastGive = max(central.pointee.lastGive, idleSince)
      central.pointee.lastScan = min(central.pointee.lastScan, central.pointee.lastGive)
      central.pointee.sweepGive = UInt.max  // a sweep under way must not count these as seen
    } else {
      central.pointee.lastGive = now
      // A batch from a busy thread: park it whole for the next refill (blocks taken back from
      // idle caches go to their runs, so they can be released).
      if count >= TransferBatch.minimumBlocks && central.pointee.transferBatches < TransferBatch.slots
        && (central.pointee.transferBlocks &+ count) &* SizeClass.size(ofClass: c) <= TransferBatch.maximumBytes {
        h.transferSlots(c)[central.pointee.transferBatches] = TransferBatch(head: first, count: count)
        central.pointee.transferBatches &+= 1
        central.pointee.transferBlocks &+= count
        arena_lock_release(&central.pointee.lock)
        return
      }
    }
    var next = first
    // Blocks freed together mostly share a run: the page-map lookup is made once per run met.
    var d = DescriptorPointer(bitPattern: 1)!
    var runStart: UInt = 0
    var runBytes: UInt = 0
    let hardened = h.pointee.hardened
    while let block = next {
      if hardened { Hardening.checkLink(h, block, c) }
      next = UnsafeMutableRawPointer(bitPattern: block.load(as: UInt.self))
      let address = UInt(bitPattern: block)
      if address &- runStart >= runBytes {
        guard let r = h.reservation(containing: address) else {
          arena_lock_release(&central.pointee.lock)
          arena_fatal_pointer("free(): block of a thread cache is outside the heap", block)
        }
        d = r.descriptor(Int(r.pointee.pageMap[r.pageIndex(address)] &>> 8))
        runStart = d.pointee.start
        runBytes = UInt(d.pointee.pageCount) &<< UInt(Layout.pageShift)
      }
      block.storeBytes(of: d.pointee.freeList, as: UInt.self)
      d.pointee.freeList = address
      d.pointee.liveCount &-= 1
      if d.pointee.inPartialList == 2 { continue }  // the scavenger has it; it puts it back
      if d.pointee.inPartialList == 0 { pushDroppingSpare(central, d, &emptied) }
      if isSpareEmpty(central, d) { detachEmpty(central, d, &emptied) }
    }
    central.pointee.blocksOut &-= count
    arena_lock_release(&central.pointee.lock)
    releaseDetached(h, emptied, stamp: now)
  }

  /// Allocates a new run for class `c` from the page heap and labels its pages.
  static func newRun(_ h: HeapPointer, _ c: Int) -> DescriptorPointer? {
    let guarded = Guards.enabled(h)
    let pages = ClassTable.runPages(c) &+ (guarded ? 1 : 0)
    guard let run = PageHeap.allocate(h, pages: pages, alignment: Layout.pageSize) else { return nil }
    if guarded { Guards.install(run.descriptor) }
    let r = run.reservation
    let d = run.descriptor
    d.pointee.kind = RunKind.small
    d.pointee.sizeClass = UInt8(c)
    d.pointee.freeList = 0
    d.pointee.liveCount = 0
    d.pointee.carvedCount = 0
    d.pointee.inPartialList = 0
    releasedPages(d).pointee = 0
    scannedHead(d).pointee = 0
    let start = r.pageIndex(d.pointee.start)
    let entry = UInt32(truncatingIfNeeded: start &<< 8) | UInt32(c &+ 1) | slowPathFlag  // nothing carved yet
    var page = 0
    while page < pages {
      r.pointee.pageMap[start &+ page] = entry
      page &+= 1
    }
    return d
  }

  /// Gives an empty small run back to the page heap, as freed at `stamp` (its last block's return).
  static func releaseRun(_ h: HeapPointer, _ r: ReservationPointer, _ d: DescriptorPointer, stamp: UInt) {
    if Guards.smallRunIsGuarded(d, Int(d.pointee.sizeClass)) { Guards.remove(d) }
    let start = r.pageIndex(d.pointee.start)
    let pages = Int(d.pointee.pageCount)
    var page = 1
    while page < pages &- 1 {
      r.pointee.pageMap[start &+ page] = 0
      page &+= 1
    }
    d.pointee.kind = RunKind.large
    PageHeap.release(h, r, d, stamp: stamp)
  }

  // MARK: Empty runs

  /// Whether an empty run can go back to the page heap: it is not the class's only partial run
  /// (that one is kept, so a class that allocates and frees one block at a time does not create
  /// and destroy a run each time). Class lock held.
  @inline(__always)
  static func isSpareEmpty(_ central: UnsafeMutablePointer<ClassCentral>, _ d: DescriptorPointer) -> Bool {
    d.pointee.liveCount == 0 && (central.pointee.partial != d || d.pointee.next != nil)
  }

  /// Takes an empty run off its class onto `emptied`, to be released once the lock is dropped.
  @inline(__always)
  static func detachEmpty(_ central: UnsafeMutablePointer<ClassCentral>, _ d: DescriptorPointer,
                          _ emptied: inout DescriptorPointer?) {
    remove(central, d)
    central.pointee.runCount &-= 1
    d.pointee.next = emptied
    emptied = d
  }

  /// Pushes `d` on its class's partial list. A kept empty run (the list's only run) is no longer
  /// needed once another run has free blocks: it goes onto `emptied`. So a class keeps at most one
  /// empty run, and only as its only partial run. Class lock held.
  @inline(__always)
  static func pushDroppingSpare(_ central: UnsafeMutablePointer<ClassCentral>, _ d: DescriptorPointer,
                                _ emptied: inout DescriptorPointer?) {
    if let spare = central.pointee.partial, spare.pointee.next == nil, spare.pointee.liveCount == 0 {
      detachEmpty(central, spare, &emptied)
    }
    push(central, d)
  }

  /// Gives runs detached with `detachEmpty` back to the page heap as freed at `stamp` (no class
  /// lock held).
  static func releaseDetached(_ h: HeapPointer, _ emptied: DescriptorPointer?, stamp: UInt) {
    var next = emptied
    while let d = next {
      next = d.pointee.next
      if let r = h.reservation(containing: d.pointee.start) { releaseRun(h, r, d, stamp: stamp) }
    }
  }

  // MARK: Partial list (class lock held)

  @inline(__always)
  static func push(_ central: UnsafeMutablePointer<ClassCentral>, _ d: DescriptorPointer) {
    d.pointee.prev = nil
    d.pointee.next = central.pointee.partial
    central.pointee.partial?.pointee.prev = d
    central.pointee.partial = d
    d.pointee.inPartialList = 1
  }

  @inline(__always)
  static func remove(_ central: UnsafeMutablePointer<ClassCentral>, _ d: DescriptorPointer) {
    if let prev = d.pointee.prev { prev.pointee.next = d.pointee.next } else { central.pointee.partial = d.pointee.next }
    d.pointee.next?.pointee.prev = d.pointee.prev
    d.pointee.next = nil
    d.pointee.prev = nil
    d.pointee.inPartialList = 0
  }
}
