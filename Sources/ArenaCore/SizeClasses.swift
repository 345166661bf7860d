// Size classes: the one table that decides how much memory a request really gets.
//
// Classes 1...8 are the exact multiples of 16 up to 128 B (malloc must return 16-byte aligned
// blocks, so nothing finer is possible there). Above 128 B there are 8 classes per doubling
// (step = 1/8 of the lower power of two), so a request never gets more than 12.5% extra:
// the worst case is a request one byte above a class boundary, e.g. 129 B -> 144 B (+11.6%).
// The largest small class is 32 KiB (class 72); larger requests are page runs (see PageHeap).
//
// Both directions are arithmetic (a leading-zero count and a few shifts), so `usableSize` is exact
// and O(1): Swift's Array sizes its capacity with malloc_usable_size, which makes this table
// Swift's growth policy too. The per-class run geometry and thread-cache limits are computed once
// into C static storage (`arena_globals`), never into a lazily initialised Swift global.
import CSystemShims

/// Fixed sizes that shape every layer.
enum Layout {
  /// log2 of the allocator page (the unit of runs and of the page map).
  @inline(__always) static var pageShift: Int { 12 }
  @inline(__always) static var pageSize: Int { 1 << pageShift }
  /// The commit granule: memory is committed (and, later, decommitted) in whole aligned 2 MiB units,
  /// so the VMA count of a reservation is bounded by (reservation / granule) + a few, whatever the
  /// allocation pattern. A commit that fails falls back to `fallbackCommitPages`.
  @inline(__always) static var granulePages: Int { 512 }
  @inline(__always) static var fallbackCommitPages: Int { 16 }
  /// The largest small size class. Larger requests are served as page runs.
  @inline(__always) static var smallLimit: Int { 32768 }
  /// Requests above this get their own mapping (huge allocations).
  @inline(__always) static var hugeThreshold: Int { 32 << 20 }
  /// Alignments above this get their own mapping too: inside a reservation a run aligned to more
  /// than a granule could cost up to its alignment in lead pages, or a reservation of its own.
  @inline(__always) static var largestRunAlignment: Int { granulePages &<< pageShift }
  /// The default reservation of an arena, and the smallest one tried when that fails (RLIMIT_AS).
  @inline(__always) static var defaultReservation: Int { 1 << 30 }
  @inline(__always) static var minimumReservation: Int { 16 << 20 }
  /// Alignment every block has.
  @inline(__always) static var minimumAlignment: Int { 16 }
}

/// The size-class table, computed arithmetically.
enum SizeClass {
  /// Number of small classes (indices 1...count; 0 means "not a small class").
  @inline(__always) static var count: Int { 72 }

  /// The class of a request of `size` bytes, for 0...Layout.smallLimit.
  @inline(__always)
  static func index(forSize size: Int) -> Int {
    if size <= 128 { return size == 0 ? 1 : (size &+ 15) &>> 4 }
    let s = size &- 1
    let log2 = (Int.bitWidth &- 1) &- s.leadingZeroBitCount
    return 9 &+ ((log2 &- 7) &<< 3) &+ ((s &>> (log2 &- 3)) & 7)
  }

  /// `index(forSize:)` for malloc's fast path: 0 for a 0-byte request, whose thread-cache bin is
  /// never filled, so it takes the slow path (one test and branch fewer for every other size).
  @inline(__always)
  static func fastIndex(forSize size: Int) -> Int {
    if size <= 128 { return (size &+ 15) &>> 4 }
    let s = size &- 1
    let log2 = (Int.bitWidth &- 1) &- s.leadingZeroBitCount
    return 9 &+ ((log2 &- 7) &<< 3) &+ ((s &>> (log2 &- 3)) & 7)
  }

  /// The block size of class `index` (1...count).
  @inline(__always)
  static func size(ofClass index: Int) -> Int {
    if index <= 8 { return index &<< 4 }
    let j = index &- 9
    return (9 &+ (j & 7)) &<< (4 &+ (j &>> 3))
  }

  /// Pages of one run of class `index`: at least 16 KiB and 8 blocks, grown a page at a time until
  /// the unusable tail is at most 1/32 of the run.
  static func runPages(ofClass index: Int) -> Int {
    let block = size(ofClass: index)
    var pages = max(4, (block &* 8 &+ Layout.pageSize &- 1) &>> Layout.pageShift)
    while ((pages &<< Layout.pageShift) % block) &* 32 > (pages &<< Layout.pageShift) { pages &+= 1 }
    return pages
  }

  /// How many free blocks of a class one thread may keep before handing half back: 16 KiB worth
  /// up to 1 KiB blocks (at least 16 blocks per refill), 32 KiB worth above (so 4-32 KiB blocks
  /// still move in batches), between 2 and 256 blocks: a thread parks little memory (and
  /// thousands of threads little).
  static func cacheLimit(ofClass index: Int) -> Int {
    let size = size(ofClass: index)
    return max(2, min(256, (size <= 1024 ? 16 << 10 : 32 << 10) / size))
  }

  /// Fills the class tables in `arena_globals`; idempotent, called before the first heap exists.
  static func initializeTables() {
    var c = 1
    while c <= count {
      let s = size(ofClass: c)
      arena_class_size_table()[c] = UInt32(s)
      arena_class_magic_table()[c] = ((1 as UInt64) << 40 &+ UInt64(s) &- 1) / UInt64(s)
      arena_class_run_pages_table()[c] = UInt32(runPages(ofClass: c))
      arena_class_cache_limit_table()[c] = UInt32(cacheLimit(ofClass: c))
      c &+= 1
    }
    arena_globals_pointer().pointee.class_count = UInt32(count)
  }
}

/// Read access to the per-class tables in C static storage.
enum ClassTable {
  @inline(__always) static func magic(_ c: Int) -> UInt64 { arena_class_magic_table()[c] }
  /// The index of the class-`c` block that holds byte `offset` of its run (a multiply, no divide).
  @inline(__always) static func blockIndex(offset: UInt, _ c: Int) -> UInt {
    UInt((UInt64(offset) &* magic(c)) &>> 40)
  }
  @inline(__always) static func runPages(_ c: Int) -> Int { Int(arena_class_run_pages_table()[c]) }
  @inline(__always) static func cacheLimit(_ c: Int) -> UInt32 { arena_class_cache_limit_table()[c] }
}
