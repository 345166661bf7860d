// A heap: the owner of reservations, size-class centrals and (for the default heap) thread caches.
// The default heap serves malloc and `Arena.default`; private heaps serve `Arena(reserving:)`.
// A heap's header lives in the header region of its first reservation, so creating one allocates
// nothing but address space.
import CSystemShims

typealias HeapPointer = UnsafeMutablePointer<HeapHeader>

/// Per-heap state. Locks: `pageLock` (page heap), one lock per size class (in `ClassCentral`),
/// `cacheLock` (the list of thread caches), `hugeLock` (the huge-allocation table). Order when
/// several are taken: class, cache, page, huge, registry. No lock is held across a system call
/// that other threads wait on.
struct HeapHeader {
  var pageLock: arena_lock_t
  var cacheLock: arena_lock_t
  var hugeLock: arena_lock_t
  var isDefault: Bool
  /// Hardened (Hardening.swift): canaries, poison, checked links, guard pages. Fixed at creation.
  var hardened: Bool
  /// Freed guarded page runs kept for reuse (Guards.swift; page lock): how many, and their bytes.
  var cachedGuardedRuns: Int
  var cachedGuardedBytes: Int
  var reservationSize: Int
  var firstReservation: ReservationPointer?
  var lastReservation: ReservationPointer?
  var threadCaches: ThreadCachePointer?
  var lastError: Int32
  // Counters (page lock unless noted).
  var commitCalls: Int
  var largeLiveBytes: UInt64   // atomic
  var largeLiveCount: UInt64   // atomic
  var hugeLiveBytes: Int       // huge lock
  var hugeLiveCount: Int       // huge lock
  var hugeCapacity: Int
  var purgedBytesTotal: Int
  var decommittedBytesTotal: Int
  var offeredBytes: UInt64           // atomic: currently offered
  var reclaimedIntactBytes: UInt64   // atomic: total
  var discardedBytes: UInt64         // atomic: total
  var cacheReclaimedBytes: UInt64    // atomic: total taken back from idle thread caches

  @inline(__always) static var headerOffset: Int { 4096 }
  @inline(__always) static var centralsOffset: Int { 5120 }
  @inline(__always) static var transferTableOffset: Int { 32768 }
  /// Guards.cachedRunSlots entries of CachedGuardedRun, after the transfer slots (which end by 72 KiB).
  @inline(__always) static var guardedRunTableOffset: Int { 98304 }
  @inline(__always) static var hugeTableOffset: Int { 131072 }
  /// 4,096 entries of 32 B (128 KiB): up to 2,048 live huge blocks (half full at most, for probing).
  @inline(__always) static var hugeTableCapacity: Int { 4096 }
}

/// The shared state of one size class: runs with free blocks, and how many blocks are out.
struct ClassCentral {
  var lock: arena_lock_t
  var runCount: UInt32
  var partial: DescriptorPointer?
  /// Blocks handed out of runs (to users or to thread caches).
  var blocksOut: Int
  /// When blocks last came back to this class (ns): the scavenger leaves busy classes alone.
  var lastGive: UInt
  /// When the scavenger last looked at this class's partly used runs (ns); it looks again only
  /// after blocks have come back since.
  var lastScan: UInt
  /// Where the scavenger's sweep of the partial list resumes (validated before use), and the
  /// `lastGive` the sweep started with (UInt.max: a run was passed over; start again).
  var scanCursor: DescriptorPointer?
  var sweepGive: UInt
  /// Batches parked in the class's transfer cache (slots in use), and the blocks they hold.
  var transferBatches: Int
  var transferBlocks: Int
}

/// A batch of free blocks (tagged, linked through word 0, nil-terminated) parked whole in a
/// class's transfer cache: a thread cache's flush leaves it there and the next refill of any
/// thread takes it, each in O(1) under the class lock, so blocks that travel from the threads
/// that free them to the threads that allocate them (producers and consumers) never go back to
/// their runs one by one. Blocks in a batch are still counted in `blocksOut`.
struct TransferBatch {
  var head: UnsafeMutableRawPointer?
  var count: Int

  /// Slots per class (32 x 16 B x 73 classes: 37 KiB of the heap's header region); `maximumBytes`
  /// usually binds first.
  @inline(__always) static var slots: Int { 32 }
  /// Smaller batches go back to their runs at once (a single block has nobody to meet).
  @inline(__always) static var minimumBlocks: Int { 4 }
  /// Bytes of blocks a class parks at most: parked blocks keep their runs from emptying, so the
  /// cache is kept to a few batches (72 classes x 64 KiB = 4.5 MiB at worst).
  @inline(__always) static var maximumBytes: Int { 64 << 10 }
}

/// One mapping of a huge allocation.
struct HugeEntry {
  var address: UInt
  var size: UInt
  /// While the block is offered: its saved first words (Offer.swift); else 0.
  var offerWords: UInt
  var pad: UInt
}

extension UnsafeMutablePointer where Pointee == HeapHeader {
  @inline(__always) func central(_ c: Int) -> UnsafeMutablePointer<ClassCentral> {
    (UnsafeMutableRawPointer(self) + (HeapHeader.centralsOffset &- HeapHeader.headerOffset))
      .assumingMemoryBound(to: ClassCentral.self) + c
  }
  /// The transfer-cache slots of class `c` (class lock).
  @inline(__always) func transferSlots(_ c: Int) -> UnsafeMutablePointer<TransferBatch> {
    (UnsafeMutableRawPointer(self) + (HeapHeader.transferTableOffset &- HeapHeader.headerOffset))
      .assumingMemoryBound(to: TransferBatch.self) + c &* TransferBatch.slots
  }
  @inline(__always) var hugeTable: UnsafeMutablePointer<HugeEntry> {
    (UnsafeMutableRawPointer(self) + (HeapHeader.hugeTableOffset &- HeapHeader.headerOffset))
      .assumingMemoryBound(to: HugeEntry.self)
  }
  /// The reservation of this heap holding `address`, if any.
  @inline(__always) func reservation(containing address: UInt) -> ReservationPointer? {
    var r = pointee.firstReservation
    while let res = r {
      if res.contains(address) { return res }
      r = res.pointee.next
    }
    return nil
  }
}

enum Heaps {
  /// Creates a heap in a new reservation of `size` bytes (or a smaller one the system allows).
  static func create(reservationSize size: Int, isDefault: Bool, hardened: Bool) -> HeapPointer? {
    if arena_class_size_table()[1] == 0 { SizeClass.initializeTables() }
    if arena_globals_pointer().pointee.secret == 0 {
      arena_globals_pointer().pointee.secret = arena_sys_random64()
    }
    guard let r = Reservations.create(size: size, minimumBytes: Layout.minimumReservation, heap: nil) else { return nil }
    let h = (UnsafeMutableRawPointer(r) + HeapHeader.headerOffset).assumingMemoryBound(to: HeapHeader.self)
    h.initialize(to: HeapHeader(
      pageLock: arena_lock_t(), cacheLock: arena_lock_t(), hugeLock: arena_lock_t(),
      isDefault: isDefault, hardened: hardened, cachedGuardedRuns: 0, cachedGuardedBytes: 0, reservationSize: size, firstReservation: r, lastReservation: r,
      threadCaches: nil, lastError: 0, commitCalls: 0, largeLiveBytes: 0, largeLiveCount: 0,
      hugeLiveBytes: 0, hugeLiveCount: 0, hugeCapacity: HeapHeader.hugeTableCapacity,
      purgedBytesTotal: 0, decommittedBytesTotal: 0, offeredBytes: 0, reclaimedIntactBytes: 0, discardedBytes: 0,
      cacheReclaimedBytes: 0))
    r.pointee.heap = UnsafeMutableRawPointer(h)
    return h
  }

  /// The process-wide heap, created on first use from zero-filled static storage (malloc runs
  /// before any constructor). Returns nil only if not even a small reservation can be made.
  @inline(__always)
  static var defaultHeap: HeapPointer? {
    let g = arena_globals_pointer()
    if let h = g.pointee.default_heap, arena_atomic_load32(&g.pointee.default_heap_state) == 2 {
      return h.assumingMemoryBound(to: HeapHeader.self)
    }
    return initializeDefaultHeap()
  }

  static func initializeDefaultHeap() -> HeapPointer? {
    let g = arena_globals_pointer()
    while true {
      var expected: UInt32 = 0
      if arena_atomic_cas32(&g.pointee.default_heap_state, &expected, 1) != 0 {
        // Under RLIMIT_AS the reservation is address space the program may need for itself:
        // at most an eighth of the limit (further reservations are added as the heap grows).
        let limit = arena_sys_address_space_limit()
        let size = limit == UInt64.max ? Layout.defaultReservation
          : max(Layout.minimumReservation, min(Layout.defaultReservation, Int(limit / 8) & ~(Layout.minimumReservation &- 1)))
        let hardened = Scavenger.options.hardened != 0
        guard let h = create(reservationSize: size, isDefault: true, hardened: hardened),
              let r = h.pointee.firstReservation else {
          arena_atomic_store32(&g.pointee.default_heap_state, 0)
          return nil
        }
        g.pointee.primary_page_map = r.pointee.pageMap
        g.pointee.primary_data_start = r.pointee.dataStart
        // A hardened heap keeps both fast paths off: every call reaches the checked slow paths.
        let end = r.pointee.dataStart &+ UInt(r.pointee.dataPages &<< Layout.pageShift)
        g.pointee.primary_data_end = hardened ? r.pointee.dataStart : end
        g.pointee.hardened_data_end = hardened ? end : r.pointee.dataStart  // else an empty range
        g.pointee.fast_small_limit = hardened ? 0 : UInt64(Layout.smallLimit)
        g.pointee.default_heap = UnsafeMutableRawPointer(h)
        arena_atomic_store32(&g.pointee.default_heap_state, 2)
        return h
      }
      if expected == 2 { return g.pointee.default_heap?.assumingMemoryBound(to: HeapHeader.self) }
      // Another thread is reserving the default heap; it makes no allocator calls while doing so.
    }
  }

  /// Whether the default heap exists (without creating it).
  static var defaultHeapIfCreated: HeapPointer? {
    let g = arena_globals_pointer()
    guard arena_atomic_load32(&g.pointee.default_heap_state) == 2 else { return nil }
    return g.pointee.default_heap?.assumingMemoryBound(to: HeapHeader.self)
  }

  /// Frees everything in a private heap at once: every reservation but the first is unmapped and
  /// the first is decommitted and reinitialised. The heap stays usable.
  static func reset(_ h: HeapPointer) {
    guard let first = h.pointee.firstReservation else { return }
    Guards.releaseCached(h, before: UInt.max)  // their guards come off with them
    var r = first.pointee.next
    while let res = r {
      r = res.pointee.next
      Reservations.destroy(res)
    }
    let dataBytes = first.pointee.frontier &<< Layout.pageShift
    if dataBytes > 0 {
      _ = arena_sys_decommit(UnsafeMutableRawPointer(bitPattern: first.pointee.dataStart), dataBytes)
    }
    // Clear the page map (its memory stays committed) and every bin.
    let mapBytes = first.pointee.dataPages &* 4
    _ = arena_sys_purge(UnsafeMutableRawPointer(first.pointee.pageMap), Int(roundUp(UInt(mapBytes), UInt(Layout.pageSize))))
    UnsafeMutableRawPointer(first.binMasks).initializeMemory(as: UInt8.self, repeating: 0, count: 48)
    UnsafeMutableRawPointer(first.binHeads).initializeMemory(as: UInt8.self, repeating: 0,
                                                            count: FreeState.count &* Reservation.binCount &* 8)
    first.pointee.freePages = (0, 0, 0)
    first.pointee.next = nil
    first.pointee.committedPages = 0
    // Pages below the old frontier keep their (committed) descriptors; make them one
    // decommitted free run so they are reused before fresh granules.
    let oldFrontier = first.pointee.frontier
    if oldFrontier > 0 {
      PageHeap.insertFree(first, start: 0, pages: oldFrontier, state: FreeState.decommitted, stamp: 0)
    }
    h.pointee.lastReservation = first
    var c = 1
    while c <= SizeClass.count {
      let central = h.central(c)
      central.pointee.partial = nil
      central.pointee.blocksOut = 0
      central.pointee.runCount = 0
      central.pointee.transferBatches = 0
      central.pointee.transferBlocks = 0
      c &+= 1
    }
    h.pointee.largeLiveBytes = 0
    h.pointee.largeLiveCount = 0
    Huge.releaseAll(h)
  }

  /// Unmaps every reservation of a private heap (the heap header goes with the first).
  static func destroy(_ h: HeapPointer) {
    Huge.releaseAll(h)
    // The heap header lives in the first reservation: unmap it last.
    let first = h.pointee.firstReservation
    var r = first?.pointee.next
    while let res = r {
      r = res.pointee.next
      Reservations.destroy(res)
    }
    if let first { Reservations.destroy(first) }
  }
}
