// Reservations: contiguous ranges of address space, reserved PROT_NONE (no commit charge in any
// overcommit mode) and committed a 2 MiB granule at a time as they are first needed.
//
// Layout of one reservation (1 GiB by default):
//
//   base: header region (256 KiB, committed at once)
//           +0      Reservation            this struct
//           +512    free-run bin masks     3 states x 2 words
//           +1024   free-run bin heads     3 states x binCount pointers
//           +4096   HeapHeader             only in a heap's first reservation
//           +5120   ClassCentral table     idem
//           +32768  transfer-cache slots   idem
//           +131072 huge-allocation table  idem (4,096 entries)
//         page map (4 bytes per data page, committed at once: 1 MiB per GiB)
//         run descriptors (48 bytes per data page, committed with the data they describe)
//   data: 2 MiB-aligned data region (pages; runs of pages)
//
// Page map entry of a data page: (first page of its run) << 8 | tag, where tag 0 = no run here (or
// an interior page of a large or free run), 1 = first or last page of a large or free run,
// c + 1 = any page of a small run of size class c. Only free runs below `frontier` exist; pages at
// and above it have never been used and have no descriptor memory yet.
//
// Invariants:
// - Descriptor memory for data pages [0, frontier) is committed.
// - A free run has one state (dirty, clean or decommitted): "dirty" is committed memory with old
//   contents, "clean" is committed and reads as zero (never touched, or purged), "decommitted" is
//   PROT_NONE and charges nothing. Runs merge with neighbours of the same state, and a freed
//   (dirty) run also absorbs clean neighbours (PageHeap.mergeable).
// - The VMA count of a reservation stays bounded: commits happen in whole granules at the frontier
//   (one growing read-write VMA), and only whole free granules (or pages next to a decommitted
//   neighbour, which moves a boundary) will ever be decommitted, so the
//   number of VMAs is at most 2 x (reservation / 2 MiB) + 6 in the worst case, and 6 in practice.
import CSystemShims

typealias DescriptorPointer = UnsafeMutablePointer<RunDescriptor>
typealias ReservationPointer = UnsafeMutablePointer<Reservation>

/// What a run of pages is used for.
enum RunKind {
  @inline(__always) static var unused: UInt8 { 0 }
  @inline(__always) static var free: UInt8 { 1 }
  @inline(__always) static var small: UInt8 { 2 }
  @inline(__always) static var large: UInt8 { 3 }
  /// A freed guarded page run kept, guard installed, for reuse by a hardened heap (Guards.swift).
  @inline(__always) static var cachedGuarded: UInt8 { 4 }
}

/// The state of a free run's memory, in the order allocation prefers it.
enum FreeState {
  @inline(__always) static var dirty: Int { 0 }
  @inline(__always) static var clean: Int { 1 }
  @inline(__always) static var decommitted: Int { 2 }
  @inline(__always) static var count: Int { 3 }
}

/// Descriptor of a run, stored at the index of the run's first page.
struct RunDescriptor {
  var pageCount: UInt32
  var kind: UInt8
  var state: UInt8          // free runs: FreeState; taken runs: the state they were taken from
  var sizeClass: UInt8      // small runs: the class; guarded page runs: Guards.guardedRunMark;
                            // clean free runs: PageHeap.unzeroedMark when not known to read as zero
  var inPartialList: UInt8  // small runs: 1 while on their class's partial list
  var next: DescriptorPointer?
  var prev: DescriptorPointer?
  var start: UInt           // address of the run's first byte
  var freeList: UInt        // small runs: first free block; free runs: when it was freed (ns)
  var liveCount: UInt32     // small runs: blocks handed out and not yet returned to the run
  var carvedCount: UInt32   // small runs: blocks ever carved from the run's fresh tail
}

/// Header of one reservation.
struct Reservation {
  var base: UInt
  var size: Int
  var dataStart: UInt
  var dataPages: Int
  var pageMap: UnsafeMutablePointer<UInt32>
  var descriptors: DescriptorPointer
  /// Pages [0, frontier) have been claimed at least once (their descriptors are committed).
  var frontier: Int
  /// Data pages currently committed (charged).
  var committedPages: Int
  /// Pages in free runs, per state.
  var freePages: (Int, Int, Int)
  var heap: UnsafeMutableRawPointer?
  var next: ReservationPointer?
  var metadataCommittedBytes: Int

  @inline(__always) static var headerBytes: Int { 262144 }
  @inline(__always) static var binCount: Int { 84 }

  /// Free-run bin of a run of `pages` pages: exact below 65 pages, one per power of two above.
  @inline(__always)
  static func bin(forPages pages: Int) -> Int {
    if pages <= 64 { return pages &- 1 }
    let log2 = (Int.bitWidth &- 1) &- pages.leadingZeroBitCount
    return 64 &+ (log2 &- 6)
  }
}

extension UnsafeMutablePointer where Pointee == Reservation {
  @inline(__always) var binMasks: UnsafeMutablePointer<UInt64> {
    UnsafeMutableRawPointer(self).advanced(by: 512).assumingMemoryBound(to: UInt64.self)
  }
  @inline(__always) var binHeads: UnsafeMutablePointer<DescriptorPointer?> {
    UnsafeMutableRawPointer(self).advanced(by: 1024).assumingMemoryBound(to: DescriptorPointer?.self)
  }
  @inline(__always) func descriptor(_ page: Int) -> DescriptorPointer { pointee.descriptors + page }
  @inline(__always) func pageIndex(_ address: UInt) -> Int { Int((address &- pointee.dataStart) &>> UInt(Layout.pageShift)) }
  @inline(__always) func address(ofPage page: Int) -> UInt { pointee.dataStart &+ UInt(page &<< Layout.pageShift) }
  @inline(__always) func contains(_ address: UInt) -> Bool {
    address &- pointee.dataStart < UInt(pointee.dataPages &<< Layout.pageShift)
  }

  /// Adds to the free-page count of a state.
  @inline(__always) func addFreePages(_ state: Int, _ delta: Int) {
    switch state {
    case FreeState.dirty: pointee.freePages.0 &+= delta
    case FreeState.clean: pointee.freePages.1 &+= delta
    default: pointee.freePages.2 &+= delta
    }
  }
}

/// Creating reservations and finding the one that holds an address.
enum Reservations {
  /// Reserves a new reservation of `size` bytes (falling back to smaller ones down to
  /// `minimumBytes` when the address space is limited, e.g. by RLIMIT_AS), commits its header and
  /// page map, and registers it. Returns nil with the errno on failure.
  static func create(size requested: Int, minimumBytes: Int, heap: UnsafeMutableRawPointer?) -> ReservationPointer? {
    var size = max(requested, Layout.minimumReservation)
    var base: UnsafeMutableRawPointer? = nil
    var error: Int32 = 0
    while true {
      error = arena_sys_reserve(size, &base)
      if error == 0 { break }
      let smaller = size / 2
      if smaller < max(Layout.minimumReservation, minimumBytes) { arena_set_errno(error); return nil }
      size = smaller
    }
    guard let start = base else { return nil }
    let b = UInt(bitPattern: start)
    let page = UInt(Layout.pageSize)
    // Data pages first estimate; then fit metadata + 2 MiB alignment inside the reservation.
    let perPage = Layout.pageSize &+ 4 &+ MemoryLayout<RunDescriptor>.stride
    var pages = (size &- Reservation.headerBytes &- (2 << 20)) / perPage
    let pageMapBytes = roundUp(UInt(pages &* 4), page)
    let descriptorBytes = roundUp(UInt(pages &* MemoryLayout<RunDescriptor>.stride), page)
    let pageMapStart = b &+ UInt(Reservation.headerBytes)
    let descriptorStart = pageMapStart &+ pageMapBytes
    let dataStart = roundUp(descriptorStart &+ descriptorBytes, UInt(Layout.granulePages &<< Layout.pageShift))
    let end = b &+ UInt(size)
    pages = min(pages, Int((end &- dataStart) / page))
    let headerCommit = UInt(Reservation.headerBytes) &+ pageMapBytes
    error = arena_sys_commit(start, Int(headerCommit))
    if error != 0 {
      _ = arena_sys_release(start, size)
      arena_set_errno(error)
      return nil
    }
    let r = start.assumingMemoryBound(to: Reservation.self)
    r.initialize(to: Reservation(
      base: b, size: size, dataStart: dataStart, dataPages: pages,
      pageMap: UnsafeMutablePointer(bitPattern: pageMapStart)!,
      descriptors: UnsafeMutablePointer(bitPattern: descriptorStart)!,
      frontier: 0, committedPages: 0, freePages: (0, 0, 0), heap: heap, next: nil,
      metadataCommittedBytes: Int(headerCommit)))
    register(r)
    return r
  }

  /// Adds a reservation to the process-wide registry (used to find the owner of a pointer).
  static func register(_ r: ReservationPointer) {
    let g = arena_globals_pointer()
    arena_lock_acquire(&g.pointee.registry_lock)
    let table = arena_reservation_table()
    let count = Int(g.pointee.reservation_count)
    var slot = 0
    while slot < count && table[slot].reservation != nil { slot &+= 1 }
    if slot < Int(ARENA_MAX_RESERVATIONS) {
      table[slot] = arena_reservation_entry_t(
        data_start: r.pointee.dataStart,
        data_end: r.pointee.dataStart &+ UInt(r.pointee.dataPages &<< Layout.pageShift),
        reservation: UnsafeMutableRawPointer(r))
      if slot == count { arena_atomic_store32(&g.pointee.reservation_count, UInt32(count &+ 1)) }
    }
    arena_lock_release(&g.pointee.registry_lock)
  }

  /// Removes a reservation from the registry and unmaps it (private arenas only).
  static func destroy(_ r: ReservationPointer) {
    let g = arena_globals_pointer()
    arena_lock_acquire(&g.pointee.registry_lock)
    let table = arena_reservation_table()
    var slot = 0
    let count = Int(g.pointee.reservation_count)
    while slot < count {
      if table[slot].reservation == UnsafeMutableRawPointer(r) {
        table[slot] = arena_reservation_entry_t(data_start: 0, data_end: 0, reservation: nil)
      }
      slot &+= 1
    }
    arena_lock_release(&g.pointee.registry_lock)
    _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: r.pointee.base), r.pointee.size)
  }

  /// The reservation whose data region contains `address`, if any.
  static func find(_ address: UInt) -> ReservationPointer? {
    let g = arena_globals_pointer()
    let count = Int(arena_atomic_load32(&g.pointee.reservation_count))
    let table = arena_reservation_table()
    var slot = 0
    while slot < count {
      let e = table[slot]
      if address &- e.data_start < e.data_end &- e.data_start {
        return e.reservation?.assumingMemoryBound(to: Reservation.self)
      }
      slot &+= 1
    }
    return nil
  }
}

@inline(__always) func roundUp(_ value: UInt, _ multiple: UInt) -> UInt {
  (value &+ multiple &- 1) & ~(multiple &- 1)
}
@inline(__always) func roundUp(_ value: Int, _ multiple: Int) -> Int {
  (value &+ multiple &- 1) & ~(multiple &- 1)
}
