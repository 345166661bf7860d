// The Swift API of ArenaAllocator.
import ArenaCore
import CSystemShims

/// A memory arena: one or more contiguous reservations of address space (1 GiB by default),
/// committed only as they are used and carved into size classes and page runs.
///
/// `Arena.default` is the process-wide arena; when the process also links or preloads the
/// ArenaMalloc library, it is the same heap that serves `malloc`. `Arena(reserving:)` creates an
/// independent private arena that can be `reset()` (everything freed at once) or `destroy()`ed.
///
/// `Arena` is a handle (like a file descriptor): copies refer to the same arena. All methods are
/// thread-safe, except `reset()` and `destroy()`, which require that no other thread uses the
/// arena at the same time.
public struct Arena: @unchecked Sendable, Equatable {
  package let heap: UnsafeMutableRawPointer

  /// The process-wide arena. Created on first use; fatal only if not even a 16 MiB reservation
  /// can be made.
  public static var `default`: Arena {
    guard let heap = HeapHandle.defaultHeap else { fatalError("ArenaAllocator: cannot reserve address space for the default arena") }
    return Arena(heap: heap)
  }

  init(heap: UnsafeMutableRawPointer) { self.heap = heap }

  /// Creates a private arena with a first reservation of `byteCount` bytes (rounded up to at least
  /// 16 MiB; smaller reservations are tried when the address space is limited). Further
  /// reservations are added when it fills. Returns nil (errno ENOMEM) when no address space can
  /// be reserved.
  ///
  /// `hardened: true` makes it a hardened arena (as `ARENA_OPTIONS=hardened:on` does for every
  /// heap): each small block ends in a canary that deallocate checks, freed blocks are poisoned
  /// and checked when handed out again, free-list links are checked before they are followed,
  /// page runs' slack is checked and every run is followed by a guard page. A detected misuse
  /// stops the process with a one-line diagnosis naming the pointer. Costs time and a little
  /// memory (8 bytes per small block, a page per run).
  public init?(reserving byteCount: Int = 1 << 30, hardened: Bool = false) {
    guard byteCount > 0, let heap = HeapHandle.create(reservationSize: byteCount, hardened: hardened) else { return nil }
    self.heap = heap
  }

  /// Whether this arena is hardened (see `init(reserving:hardened:)`).
  public var isHardened: Bool { HeapHandle.isHardened(heap) }

  /// Whether this is the process-wide arena.
  public var isDefault: Bool { HeapHandle.isDefault(heap) }

  /// Allocates `byteCount` bytes aligned to `alignment` (a power of two; at least 16 is always
  /// given). Returns nil with errno `ENOMEM` when the size is impossible or memory cannot be
  /// committed, and `EINVAL` for an alignment that is not a power of two.
  public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
    HeapHandle.allocate(heap, size: byteCount, alignment: alignment, zeroed: false)
  }

  /// Like `allocate(byteCount:alignment:)`, with the memory zeroed.
  public func allocateZeroed(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
    HeapHandle.allocate(heap, size: byteCount, alignment: alignment, zeroed: true)
  }

  /// Frees a block of this arena (nil is ignored). A pointer this arena did not hand out, or a
  /// block freed twice, stops the process with a one-line diagnosis naming the pointer.
  public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
    guard let pointer else { return }
    HeapHandle.deallocate(heap, pointer)
  }

  /// Resizes a block, in place when possible (same size class, a page run that can shrink or grow
  /// into free neighbouring pages, a huge mapping moved by mremap), otherwise by moving it.
  /// A nil pointer allocates. On failure returns nil (errno ENOMEM) and the block is untouched.
  public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
    guard let pointer else { return allocate(byteCount: byteCount) }
    return HeapHandle.reallocate(heap, pointer, size: byteCount)
  }

  /// The exact number of usable bytes of a block: its size class, page run or mapping size (in a
  /// hardened arena, the size that was asked for: the bytes after it are checked). O(1);
  /// validates the pointer like `deallocate`.
  public func usableSize(of pointer: UnsafeRawPointer) -> Int {
    HeapHandle.usableSize(heap, UnsafeMutableRawPointer(mutating: pointer))
  }

  /// Frees everything in a private arena at once: all memory is decommitted (its commit charge
  /// given back) and extra reservations are unmapped. The arena stays usable. Must not be called
  /// on `Arena.default` (a precondition) or while other threads use the arena.
  public func reset() {
    precondition(!isDefault, "Arena.reset() is only for private arenas")
    HeapHandle.reset(heap)
  }

  /// Unmaps a private arena and everything in it. The handle (and its copies) must not be used
  /// afterwards.
  public func destroy() {
    precondition(!isDefault, "Arena.destroy() is only for private arenas")
    HeapHandle.destroy(heap)
  }

  /// Gives this arena's free memory back to the kernel now: flushes the calling thread's cache
  /// (default arena), purges free page runs and free blocks of partly used runs (RSS falls) and
  /// decommits whole free 2 MiB granules (the commit charge falls). The background scavenger does
  /// the same for the default arena on its own, after the decay time (ARENA_OPTIONS `decay_ms`).
  /// Returns the bytes purged and decommitted by this call.
  @discardableResult
  public func scavenge() -> (purgedBytes: Int, decommittedBytes: Int) {
    let r = HeapHandle.trim(heap)
    return (r.purged, r.decommitted)
  }

  /// A snapshot of the arena's counters.
  public var statistics: ArenaStatistics {
    let count = HeapHandle.smallClassCount
    var live = [Int](repeating: 0, count: count + 1)
    var cached = [Int](repeating: 0, count: count + 1)
    let counters = live.withUnsafeMutableBufferPointer { l in
      cached.withUnsafeMutableBufferPointer { c in
        HeapHandle.counters(heap, liveBlocks: l.baseAddress!, cachedBlocks: c.baseAddress!)
      }
    }
    var classes: [ArenaStatistics.SizeClass] = []
    classes.reserveCapacity(count)
    for c in 1...count {
      classes.append(.init(blockSize: HeapHandle.classSize(c), liveBlocks: live[c], cachedBlocks: cached[c]))
    }
    return ArenaStatistics(counters: counters, classes: classes)
  }
}

/// Counters of an arena at one moment. Reading them takes each internal lock briefly; the
/// snapshot is not atomic across threads that allocate meanwhile.
public struct ArenaStatistics: Sendable {
  /// One small size class.
  public struct SizeClass: Sendable {
    /// The block size of the class (its usable size).
    public var blockSize: Int
    /// Blocks handed out to the program and not freed.
    public var liveBlocks: Int
    /// Free blocks parked in thread caches.
    public var cachedBlocks: Int
  }

  /// Address space reserved (all reservations; costs no commit charge).
  public var reservedBytes: Int
  /// Number of reservations.
  public var reservationCount: Int
  /// Data bytes committed (charged against the commit limit), excluding metadata.
  public var committedBytes: Int
  /// Metadata bytes committed (headers, page map, run descriptors).
  public var metadataBytes: Int
  /// An estimate of resident data bytes: committed minus free runs known to be untouched or purged.
  public var residentBytesEstimate: Int
  /// Bytes in blocks handed out and not freed (small blocks at their class size, page runs and
  /// huge mappings at their usable size).
  public var liveBytes: Int
  /// Free page runs that are committed and dirty (reused first, resident).
  public var freeDirtyBytes: Int
  /// Free page runs that are committed and read as zero (not resident).
  public var freeCleanBytes: Int
  /// Free page runs that are decommitted (no charge, not resident).
  public var freeDecommittedBytes: Int
  /// Bytes of free small blocks parked in thread caches.
  public var cachedBytes: Int
  /// Bytes of free small blocks parked in the size classes' transfer caches (whole batches on
  /// their way from the threads that free them to the threads that allocate them).
  public var transferCachedBytes: Int
  /// Live page runs (bytes and count).
  public var largeLiveBytes: Int
  public var largeLiveCount: Int
  /// Live huge mappings (bytes and count).
  public var hugeLiveBytes: Int
  public var hugeLiveCount: Int
  /// Small runs in use by size classes.
  public var smallRunCount: Int
  /// Commit system calls made (each may add a VMA boundary; granules keep this small).
  public var commitCalls: Int
  /// Bytes purged (MADV_DONTNEED) since the arena was created, by the scavenger or `scavenge()`.
  public var purgedBytesTotal: Int
  /// Bytes decommitted (commit charge given back) since the arena was created.
  public var decommittedBytesTotal: Int
  /// CPU time used by the background scavenger thread (default arena only), and its passes.
  public var scavengerCPUNanoseconds: Int
  public var scavengerPasses: Int
  /// Bytes currently offered (discardable), and totals of bytes reclaimed intact and discarded.
  public var offeredBytes: Int
  public var reclaimedIntactBytes: Int
  public var discardedBytes: Int
  /// Bytes of cached blocks the scavenger or `scavenge()` took back from other threads' caches.
  public var threadCacheReclaimedBytes: Int
  /// Per size class, index 0 is class 1.
  public var sizeClasses: [SizeClass]

  init(counters s: HeapCounters, classes: [SizeClass]) {
    reservedBytes = s.reservedBytes
    reservationCount = s.reservationCount
    committedBytes = s.committedBytes
    metadataBytes = s.metadataBytes
    residentBytesEstimate = max(0, s.committedBytes - s.freeCleanBytes)
    liveBytes = s.smallLiveBytes + s.largeLiveBytes + s.hugeLiveBytes
    freeDirtyBytes = s.freeDirtyBytes
    freeCleanBytes = s.freeCleanBytes
    freeDecommittedBytes = s.freeDecommittedBytes
    cachedBytes = s.cachedBytes
    transferCachedBytes = s.transferCachedBytes
    largeLiveBytes = s.largeLiveBytes
    largeLiveCount = s.largeLiveCount
    hugeLiveBytes = s.hugeLiveBytes
    hugeLiveCount = s.hugeLiveCount
    smallRunCount = s.smallRunCount
    commitCalls = s.commitCalls
    purgedBytesTotal = s.purgedBytesTotal
    decommittedBytesTotal = s.decommittedBytesTotal
    scavengerCPUNanoseconds = s.scavengerCPUNanoseconds
    scavengerPasses = s.scavengerPasses
    offeredBytes = s.offeredBytes
    reclaimedIntactBytes = s.reclaimedIntactBytes
    discardedBytes = s.discardedBytes
    threadCacheReclaimedBytes = s.cacheReclaimedBytes
    sizeClasses = classes
  }
}

/// Facts about the process, read without allocating.
public enum ProcessMemory {
  /// Resident set size of the process (from /proc/self/statm).
  public static var residentBytes: Int { Int(arena_sys_resident_bytes()) }
  /// Number of VMAs of the process (lines of /proc/self/maps).
  public static var mappingCount: Int { arena_sys_vma_count() }
}

/// The size-class table, for inspection.
public enum ArenaSizeClasses {
  /// Number of small size classes.
  public static var count: Int { HeapHandle.smallClassCount }
  /// The block size of class `index` (1...count).
  public static func blockSize(ofClass index: Int) -> Int { HeapHandle.classSize(index) }
  /// The class serving a request of `byteCount` bytes, or 0 above the largest small class.
  public static func classIndex(forByteCount byteCount: Int) -> Int { HeapHandle.classIndex(forSize: byteCount) }
  /// The largest request served from a small size class.
  public static var smallLimit: Int { HeapHandle.smallLimit }
  /// Requests above this get a mapping of their own.
  public static var hugeThreshold: Int { HeapHandle.hugeThreshold }
  /// The commit granule in bytes.
  public static var granuleBytes: Int { HeapHandle.granuleBytes }
}
