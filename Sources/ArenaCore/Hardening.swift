// Hardened heaps (ARENA_OPTIONS hardened:on for malloc's heap, `Arena(reserving:hardened:)` for a
// private one; guard_pages:on is an alias). On top of the checks every heap makes (double and
// invalid frees, Allocator.block), a hardened heap stops, with the one-line diagnosis naming the
// pointer and its size class:
//
// - Overflows and underflows of small blocks. Each small block ends in an 8-byte canary
//   (`canary(of:)`): a small request takes the class of size + 8 (at least 24 bytes), the bytes
//   between the request and the canary are poisoned, and the canary records how many there are,
//   so free, realloc and malloc_usable_size (which answers the request size) check them without a
//   stored size. free also checks the canary of the block before, which ends where this one starts
//   (an underflow, or an overflow of that block), unless it lies on a released page.
// - Writes after free into small blocks. A freed block is poisoned (bytes 16 up to its canary, at
//   most `poisonLimit` of them; words 0-1 hold the free-list link and the free tag) and checked
//   when it is handed out again.
// - Corrupted free-list links. A block is handed out only once its address is a block of the
//   right class in this heap and its word 1 holds the free tag (secret ^ address): a link
//   overwritten after free is detected before the block it names is used.
// - Overflows past page runs. A page run's slack (the bytes between the request and the end of its
//   last page) is filled with the poison byte, checked by free, realloc and malloc_usable_size
//   (which answers the request's size, kept in the run's descriptor). A run that fills its pages
//   is followed by its guard page.
// - Overruns past a run's end: a guard page after every page run and small run (Guards.swift).
// - Placement: a thread cache's refill is shuffled, so consecutive allocations are not adjacent.
//
// Not covered: writes into a freed page run or huge block (the pages go back whole), writes past
// the first 256 bytes of a freed small block, and writes that skip over a canary without touching
// it. The default path pays nothing for this: malloc's
// fast path serves sizes up to `fast_small_limit` and free's fast path looks up pointers in the
// primary range, and a hardened default heap sets both empty, so every call reaches the checked
// slow paths (which still use the thread caches).
import CSystemShims

enum Hardening {
  /// Bytes at the end of a small block that hold its canary.
  @inline(__always) static var canaryBytes: Int { 8 }
  /// The smallest block a hardened heap hands out: the free link and tag (words 0-1), then the
  /// canary.
  @inline(__always) static var smallestBlock: Int { 24 }
  /// The most bytes of a freed small block that are poisoned and checked: bytes 16-255, so blocks
  /// up to 256 B whole and the first 256 B of larger ones (where object headers and most stale
  /// writes land). Poisoning whole blocks up to 4 KiB cost 10-25% more time on the benchmark
  /// workloads.
  @inline(__always) static var poisonLimit: Int { 240 }
  /// The poison byte of freed blocks and the fill of page-run slack, and eight of them.
  @inline(__always) static var poisonByte: UInt8 { 0xDB }
  @inline(__always) static var poisonWord: UInt { 0x0101_0101_0101_0101 &* UInt(poisonByte) }

  /// The canary of small block `p` with `gap` unused bytes before it (0 for a free block):
  /// secret-keyed, different from the block's free tag, and recording the gap, so that free knows
  /// where the request ended without storing its size.
  @inline(__always)
  static func canary(of p: UnsafeMutableRawPointer, gap: Int = 0) -> UInt {
    (~(UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret) ^ UInt(bitPattern: p)) &* 0x9E37_79B9_7F4A_7C15) ^ UInt(gap)
  }

  /// Hands out small block `p` of class `c` for a request of `size` bytes: the bytes between the
  /// request and the canary are poisoned, and the canary records how many there are.
  static func handOut(_ p: UnsafeMutableRawPointer, size: Int, _ c: Int) {
    let end = SizeClass.size(ofClass: c) &- canaryBytes
    let request = min(size, end)
    if end > request { (p + request).initializeMemory(as: UInt8.self, repeating: poisonByte, count: end &- request) }
    p.storeBytes(of: canary(of: p, gap: end &- request), toByteOffset: end, as: UInt.self)
  }

  /// The request size of live small block `p` of class `c` (its usable size), after checking its
  /// canary and the poisoned bytes after the request; stops the process on an overflow.
  static func requestSize(_ p: UnsafeMutableRawPointer, _ c: Int, _ operation: StaticString) -> Int {
    let end = SizeClass.size(ofClass: c) &- canaryBytes
    let gap = p.load(fromByteOffset: end, as: UInt.self) ^ canary(of: p)
    if gap > UInt(end) { Allocator.fatalSmall(operation, "heap overflow past the end of the block (canary overwritten):", p, c) }
    let request = end &- Int(gap)
    if !isPoisoned(p + request, count: Int(gap)) {
      Allocator.fatalSmall(operation, "heap overflow past the end of the block (bytes after it overwritten):", p, c)
    }
    return request
  }

  /// Poisoned bytes of a block of `size` bytes: [16, 16 + poisonedBytes(size)).
  @inline(__always) static func poisonedBytes(_ size: Int) -> Int { max(0, min(size &- 16 &- canaryBytes, poisonLimit)) }

  /// Prepares a block of class `c` that is becoming free in a run for the first time (carved) or
  /// again after its page was released: poison and canary.
  @inline(__always)
  static func prepareFree(_ p: UnsafeMutableRawPointer, size: Int) {
    poison(p, size: size)
    p.storeBytes(of: canary(of: p), toByteOffset: size &- canaryBytes, as: UInt.self)
  }

  /// Whether `count` bytes from `p` all hold the poison byte: 8 bytes at a time (unaligned
  /// loads; the last word may overlap the one before it).
  @inline(__always)
  static func isPoisoned(_ p: UnsafeMutableRawPointer, count: Int) -> Bool {
    if count >= 8 {
      var i = 0
      while i &+ 8 < count {
        if p.loadUnaligned(fromByteOffset: i, as: UInt.self) != poisonWord { return false }
        i &+= 8
      }
      return p.loadUnaligned(fromByteOffset: count &- 8, as: UInt.self) == poisonWord
    }
    var i = 0
    while i < count {
      if p.load(fromByteOffset: i, as: UInt8.self) != poisonByte { return false }
      i &+= 1
    }
    return true
  }

  @inline(__always)
  static func poison(_ p: UnsafeMutableRawPointer, size: Int) {
    (p + 16).initializeMemory(as: UInt8.self, repeating: poisonByte, count: poisonedBytes(size))
  }

  /// Checks a block popped from a free list of class `c` before anything reads it beyond its
  /// address: it must be a block of class `c` in heap `h` whose free tag, poison and canary are
  /// intact. Stops the process otherwise.
  static func checkOut(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ c: Int) {
    checkLink(h, p, c)
    let size = SizeClass.size(ofClass: c)
    if !isPoisoned(p + 16, count: poisonedBytes(size)) {
      Allocator.fatalSmall("malloc():", "free block overwritten after free (use after free):", p, c)
    }
    if p.load(fromByteOffset: size &- canaryBytes, as: UInt.self) != canary(of: p) {
      Allocator.fatalSmall("malloc():", "free block overwritten after free (its canary):", p, c)
    }
  }

  /// A hardened default heap's small block at `p` in its primary reservation, on a page without
  /// the slow-path flag, not marked free: its class and index in its run. nil for anything else,
  /// which Allocator.block validates and diagnoses (the general path).
  @inline(__always)
  static func primaryLive(_ p: UnsafeMutableRawPointer) -> (sizeClass: Int, index: UInt)? {
    guard let b = primaryBlock(p, dataEnd: arena_globals_pointer().pointee.hardened_data_end) else { return nil }
    return (b.sizeClass, b.index)
  }

  /// The page-map entry of `a` in heap `h` (the primary reservation's map directly when it lies
  /// there), or nil outside the heap.
  @inline(__always)
  static func entry(_ h: HeapPointer, _ a: UInt) -> (entry: UInt32, runStart: UInt)? {
    let g = arena_globals_pointer()
    let offset = a &- g.pointee.primary_data_start
    if h.pointee.isDefault && offset < g.pointee.hardened_data_end &- g.pointee.primary_data_start {
      let e = g.pointee.primary_page_map.unsafelyUnwrapped[Int(offset &>> UInt(Layout.pageShift))]
      return (e, g.pointee.primary_data_start &+ (UInt(e &>> 8) &<< UInt(Layout.pageShift)))
    }
    guard let r = h.reservation(containing: a) else { return nil }
    let e = r.pointee.pageMap[r.pageIndex(a)]
    return (e, r.address(ofPage: Int(e &>> 8)))
  }

  /// Checks that `p`, reached through a free-list link of class `c`, is a free block of that class
  /// in heap `h` before its own link is read: its address is a block of the class and its word 1
  /// holds its free tag. Stops the process otherwise (the link was overwritten after free).
  static func checkLink(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ c: Int) {
    let a = UInt(bitPattern: p)
    guard let (entry, runStart) = Self.entry(h, a) else {
      Allocator.fatalSmall("malloc():", "free list corrupted (a link names memory outside the heap):", p, c)
    }
    let offset = a &- runStart
    guard SmallRuns.tag(ofEntry: entry) == c &+ 1, ClassTable.blockIndex(offset: offset, c) &* UInt(SizeClass.size(ofClass: c)) == offset else {
      Allocator.fatalSmall("malloc():", "free list corrupted (a link names no block of this class):", p, c)
    }
    if p.load(fromByteOffset: 8, as: UInt.self) != SmallRuns.tag(p) {
      Allocator.fatalSmall("malloc():", "free block overwritten after free (its free-list link or tag):", p, c)
    }
  }

  /// Checks the canary before small block `p` of class `c` (block `index` of its run; its own
  /// canary was checked by Allocator.block) as it is freed, then poisons it. Stops the process on
  /// an underflow.
  static func checkIn(_ h: HeapPointer, _ p: UnsafeMutableRawPointer, _ c: Int, index: UInt) {
    let size = SizeClass.size(ofClass: c)
    if index > 0 {
      // The block before ends with its own canary, free (gap 0) or live (its gap). When that
      // canary lies on the previous page and the page has the slow-path flag, the page may have
      // been released (its bytes now read as zero): nothing to check there.
      let before = p - size
      let a = UInt(bitPattern: p)
      let onPreviousPage = a & UInt(Layout.pageSize &- 1) < UInt(canaryBytes)
      let released = onPreviousPage && (entry(h, a &- UInt(canaryBytes)).map { $0.entry & SmallRuns.slowPathFlag != 0 } ?? true)
      if !released && p.load(fromByteOffset: -canaryBytes, as: UInt.self) ^ canary(of: before) > UInt(size &- canaryBytes) {
        Allocator.fatalSmall("free():", "heap underflow before the block, or overflow of the one before it (canary overwritten):", p, c)
      }
    }
    prepareFree(p, size: size)
  }

  /// Shuffles the first (up to 16) blocks of a list of `count` free blocks of class `c`, checking
  /// each link before it is read; returns the new head. Consecutive allocations from a refilled
  /// cache are then not neighbours in memory.
  static func shuffle(_ h: HeapPointer, _ head: UnsafeMutableRawPointer, count: Int, _ c: Int) -> UnsafeMutableRawPointer {
    var slots = (0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt,
                 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt, 0 as UInt)
    let capacity = 16
    return withUnsafeMutableBytes(of: &slots) { raw -> UnsafeMutableRawPointer in
      let a = raw.baseAddress!.assumingMemoryBound(to: UInt.self)
      var n = 0
      var next: UnsafeMutableRawPointer? = head
      while n < capacity && n < count, let b = next {
        checkLink(h, b, c)
        a[n] = UInt(bitPattern: b)
        next = UnsafeMutableRawPointer(bitPattern: b.load(as: UInt.self))
        n &+= 1
      }
      var state = UInt(truncatingIfNeeded: arena_sys_now_ns()) ^ UInt(truncatingIfNeeded: arena_globals_pointer().pointee.secret) ^ UInt(bitPattern: head)
      var i = n &- 1
      while i > 0 {
        state ^= state &<< 13; state ^= state &>> 7; state ^= state &<< 17
        let j = Int(state % UInt(i &+ 1))
        let t = a[i]; a[i] = a[j]; a[j] = t
        i &-= 1
      }
      // Relink: the shuffled blocks, then the rest of the list as it was.
      var k = 0
      while k < n {
        UnsafeMutableRawPointer(bitPattern: a[k])!.storeBytes(of: k &+ 1 < n ? a[k &+ 1] : UInt(bitPattern: next), as: UInt.self)
        k &+= 1
      }
      return UnsafeMutableRawPointer(bitPattern: a[0])!
    }
  }

  // MARK: Page runs

  /// Records request `size` in the descriptor of hardened page run `d` (a live run's `freeList` is
  /// otherwise unused) and fills the run's slack, [size, bytes), with the poison byte.
  static func fillSlack(_ d: DescriptorPointer, size: Int, bytes: Int) {
    d.pointee.freeList = UInt(size)
    if bytes > size { UnsafeMutableRawPointer(bitPattern: d.pointee.start &+ UInt(size))!.initializeMemory(as: UInt8.self, repeating: poisonByte, count: bytes &- size) }
  }

  /// The request size hardened page run `d` of `bytes` bytes recorded, after checking its slack;
  /// stops the process if the slack was written.
  static func checkSlack(_ d: DescriptorPointer, bytes: Int, _ operation: StaticString) -> Int {
    let size = min(Int(d.pointee.freeList), bytes)
    let p = UnsafeMutableRawPointer(bitPattern: d.pointee.start)!
    if !isPoisoned(p + size, count: bytes &- size) { slackOverwritten(operation, p) }
    return size
  }

  static func slackOverwritten(_ operation: StaticString, _ p: UnsafeMutableRawPointer) -> Never {
    Allocator.fatal(operation, "heap overflow past the end of the block (slack after it overwritten):", p)
  }
}
