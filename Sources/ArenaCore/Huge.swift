// Huge allocations: requests far above the largest page run get a mapping of their own, so they
// never fragment a reservation and go back to the kernel the moment they are freed. Each is
// recorded in the heap's huge table (open addressing, in the heap's header region) so that free
// can tell a huge block from a foreign pointer without touching memory around it.
import CSystemShims

enum Huge {
  @inline(__always) static var tombstone: UInt { 1 }

  @inline(__always)
  static func slot(_ address: UInt, _ capacity: Int) -> Int {
    Int(truncatingIfNeeded: ((address &>> 12) &* 0x9E37_79B9_7F4A_7C15) &>> 40) & (capacity &- 1)
  }

  /// Maps a huge block of at least `size` bytes aligned to `alignment`. When the kernel refuses
  /// (strict overcommit, RLIMIT_DATA), free memory that is still charged is given back and the
  /// mapping tried once more before ENOMEM.
  static func allocate(_ h: HeapPointer, size: Int, alignment: Int) -> UnsafeMutableRawPointer? {
    guard size <= Int.max / 2 &- alignment else { arena_set_errno(ENOMEM); return nil }
    // A full table is not a shortage of memory: no charge to give back (racy read, a hint).
    guard h.pointee.hugeLiveCount < h.pointee.hugeCapacity / 2 else { arena_set_errno(ENOMEM); return nil }
    if let p = map(h, size: size, alignment: alignment) { return p }
    if Release.giveBackCharge(h), let p = map(h, size: size, alignment: alignment) { return p }
    arena_set_errno(ENOMEM)
    return nil
  }

  /// One attempt at mapping and recording a huge block; nil when the kernel or the table refuses.
  /// An aligned block is carved from a PROT_NONE reservation of size + alignment (free of charge
  /// in every overcommit mode) and only the block itself is committed, so a 1 GiB alignment costs
  /// address space for a moment and charge for the block alone.
  static func map(_ h: HeapPointer, size: Int, alignment: Int) -> UnsafeMutableRawPointer? {
    let page = Layout.pageSize
    let bytes = max(page, roundUp(size, page))  // a 0-byte request still gets a unique, freeable block
    var start: UInt
    if alignment <= page {
      var mapped: UnsafeMutableRawPointer? = nil
      guard arena_sys_map(bytes, &mapped) == 0, let base = mapped else { return nil }
      start = UInt(bitPattern: base)
    } else {
      var reserved: UnsafeMutableRawPointer? = nil
      guard arena_sys_reserve(bytes &+ alignment, &reserved) == 0, let base = reserved else { return nil }
      let low = UInt(bitPattern: base)
      start = roundUp(low, UInt(alignment))
      let end = start &+ UInt(bytes)
      if start > low { _ = arena_sys_release(base, Int(start &- low)) }
      let tail = low &+ UInt(bytes &+ alignment) &- end
      if tail > 0 { _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: end), Int(tail)) }
      guard arena_sys_commit(UnsafeMutableRawPointer(bitPattern: start), bytes) == 0 else {
        _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: start), bytes)
        return nil
      }
    }
    guard record(h, address: start, size: UInt(bytes)) else {
      _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: start), bytes)
      return nil
    }
    return UnsafeMutableRawPointer(bitPattern: start)
  }

  static func record(_ h: HeapPointer, address: UInt, size: UInt) -> Bool {
    let table = h.hugeTable
    let capacity = h.pointee.hugeCapacity
    arena_lock_acquire(&h.pointee.hugeLock)
    defer { arena_lock_release(&h.pointee.hugeLock) }
    guard h.pointee.hugeLiveCount < capacity / 2 else { return false }
    var i = slot(address, capacity)
    while table[i].address > tombstone { i = (i &+ 1) & (capacity &- 1) }
    table[i] = HugeEntry(address: address, size: size, offerWords: 0, pad: 0)
    h.pointee.hugeLiveCount &+= 1
    h.pointee.hugeLiveBytes &+= Int(size)
    return true
  }

  /// The index of `address` in the huge table, or -1 (huge lock held).
  static func find(_ h: HeapPointer, _ address: UInt) -> Int {
    let table = h.hugeTable
    let capacity = h.pointee.hugeCapacity
    var i = slot(address, capacity)
    var probes = 0
    while probes < capacity {
      let a = table[i].address
      if a == 0 { return -1 }
      if a == address { return i }
      i = (i &+ 1) & (capacity &- 1)
      probes &+= 1
    }
    return -1
  }

  /// The mapped size of a huge block, or 0 if `address` is not one.
  static func size(_ h: HeapPointer, _ address: UInt) -> Int {
    arena_lock_acquire(&h.pointee.hugeLock)
    let i = find(h, address)
    let size = i >= 0 ? Int(h.hugeTable[i].size) : 0
    arena_lock_release(&h.pointee.hugeLock)
    return size
  }

  /// Unmaps a huge block; returns false if `address` is not one.
  static func free(_ h: HeapPointer, _ address: UInt) -> Bool {
    arena_lock_acquire(&h.pointee.hugeLock)
    let i = find(h, address)
    guard i >= 0 else { arena_lock_release(&h.pointee.hugeLock); return false }
    let size = h.hugeTable[i].size
    let offerWords = h.hugeTable[i].offerWords
    h.hugeTable[i].address = tombstone
    h.hugeTable[i].offerWords = 0
    h.pointee.hugeLiveCount &-= 1
    h.pointee.hugeLiveBytes &-= Int(size)
    arena_lock_release(&h.pointee.hugeLock)
    if offerWords != 0 {
      _ = arena_atomic_sub64(&h.pointee.offeredBytes, UInt64(size))
      Allocator.deallocate(h, UnsafeMutableRawPointer(bitPattern: offerWords)!, cache: nil)
    }
    let saved = arena_get_errno()
    _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: address), Int(size))
    arena_set_errno(saved)
    return true
  }

  /// Resizes a huge block with mremap (no copy); returns the new address or nil (block intact).
  static func resize(_ h: HeapPointer, _ address: UInt, to newSize: Int) -> UnsafeMutableRawPointer? {
    let bytes = roundUp(newSize, Layout.pageSize)
    arena_lock_acquire(&h.pointee.hugeLock)
    let i = find(h, address)
    guard i >= 0 else { arena_lock_release(&h.pointee.hugeLock); return nil }
    let old = h.hugeTable[i].size
    if h.hugeTable[i].offerWords != 0 {
      arena_lock_release(&h.pointee.hugeLock)
      Allocator.fatal("realloc():", "block is offered; reclaim it first:", UnsafeMutableRawPointer(bitPattern: address)!)
    }
    // Remove while the mapping moves, so no other thread finds a stale entry.
    h.hugeTable[i].address = tombstone
    h.pointee.hugeLiveCount &-= 1
    h.pointee.hugeLiveBytes &-= Int(old)
    arena_lock_release(&h.pointee.hugeLock)
    var moved: UnsafeMutableRawPointer? = nil
    var error = arena_sys_remap(UnsafeMutableRawPointer(bitPattern: address), Int(old), bytes, &moved)
    if error != 0 && bytes > Int(old) && Release.giveBackCharge(h) {
      error = arena_sys_remap(UnsafeMutableRawPointer(bitPattern: address), Int(old), bytes, &moved)
    }
    let result = error == 0 ? moved : nil
    let newAddress = result.map { UInt(bitPattern: $0) } ?? address
    _ = record(h, address: newAddress, size: error == 0 ? UInt(bytes) : old)
    return result
  }

  /// Unmaps every huge block of a heap (private arena reset and destroy).
  static func releaseAll(_ h: HeapPointer) {
    let table = h.hugeTable
    var i = 0
    while i < h.pointee.hugeCapacity {
      if table[i].address > tombstone {
        _ = arena_sys_release(UnsafeMutableRawPointer(bitPattern: table[i].address), Int(table[i].size))
      }
      table[i] = HugeEntry(address: 0, size: 0, offerWords: 0, pad: 0)
      i &+= 1
    }
    h.pointee.hugeLiveCount = 0
    h.pointee.hugeLiveBytes = 0
  }
}
