// Layer: allocate / free / reallocate on the default and private arenas, with content checks.
import ArenaAllocator
import Foundation
import Testing

@Suite struct AllocationTests {
  /// Random allocate/free over every regime (small, page run, huge) with every byte verified.
  func churn(_ arena: Arena, seed: UInt64, steps: Int, maxSize: Int) -> Int {
    var rng = XorShift(seed: seed)
    var slots = [(UnsafeMutableRawPointer, Int, UInt8)?](repeating: nil, count: 512)
    var failures = 0
    for step in 0..<steps {
      let i = rng.below(slots.count)
      if let (p, n, s) = slots[i] {
        if !Pattern.check(p, n, seed: s) { failures += 1 }
        arena.deallocate(p)
        slots[i] = nil
      } else {
        let roll = rng.below(100)
        let n = roll < 80 ? rng.below(1024) + 1 : roll < 98 ? rng.below(maxSize / 8) + 1 : rng.below(maxSize) + 1
        guard let p = arena.allocate(byteCount: n) else { failures += 1; continue }
        #expect(Int(bitPattern: p) % 16 == 0)
        #expect(arena.usableSize(of: p) >= n)
        let s = UInt8(truncatingIfNeeded: step)
        Pattern.fill(p, n, seed: s)
        slots[i] = (p, n, s)
      }
    }
    for case let (p, n, s)? in slots {
      if !Pattern.check(p, n, seed: s) { failures += 1 }
      arena.deallocate(p)
    }
    return failures
  }

  @Test func churnOnThePrivateArenaKeepsEveryByte() {
    let arena = Arena(reserving: 256 << 20)!
    defer { arena.destroy() }
    #expect(churn(arena, seed: 1, steps: 60_000, maxSize: 200_000) == 0)
    let stats = arena.statistics
    #expect(stats.liveBytes == 0, "live bytes after freeing everything: \(stats.liveBytes)")
  }

  @Test func churnOnTheDefaultArenaFromFourThreads() async {
    let failures = await withTaskGroup(of: Int.self) { group in
      for t in 0..<4 {
        group.addTask { churn(Arena.default, seed: UInt64(t + 10), steps: 40_000, maxSize: 100_000) }
      }
      return await group.reduce(0, +)
    }
    #expect(failures == 0)
  }

  @Test func crossThreadFreesReturnBlocksToTheirRuns() async {
    // Blocks allocated on one thread and freed on another (remote frees) stay intact and reusable.
    let count = 20_000
    let addresses = (0..<count).map { i -> UInt in
      let p = Arena.default.allocate(byteCount: 16 + (i % 200))!
      Pattern.fill(p, 16 + (i % 200), seed: 7)
      return UInt(bitPattern: p)
    }
    let bad = await Task.detached {
      var bad = 0
      for (i, a) in addresses.enumerated() {
        let p = UnsafeMutableRawPointer(bitPattern: a)!
        if !Pattern.check(p, 16 + (i % 200), seed: 7) { bad += 1 }
        Arena.default.deallocate(p)
      }
      return bad
    }.value
    #expect(bad == 0)
  }

  @Test(arguments: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 65536, 1 << 18, 1 << 20])
  func alignmentIsHonouredAtEverySize(alignment: Int) {
    let arena = Arena.default
    for size in [1, 8, 24, 100, alignment - 1, alignment, alignment + 1, 3 * alignment, 40_000, 300_000] where size > 0 {
      guard let p = arena.allocate(byteCount: size, alignment: alignment) else {
        Issue.record("allocation of \(size) at alignment \(alignment) failed"); continue
      }
      #expect(Int(bitPattern: p) % alignment == 0, "size \(size) alignment \(alignment) -> \(p)")
      #expect(arena.usableSize(of: p) >= size)
      Pattern.fill(p, size, seed: 3)
      #expect(Pattern.check(p, size, seed: 3))
      arena.deallocate(p)
    }
  }

  @Test func zeroedAllocationsReadAsZeroEvenOnReusedMemory() {
    let arena = Arena(reserving: 64 << 20)!
    defer { arena.destroy() }
    for size in [16, 200, 5000, 70_000, 1 << 20] {
      let dirty = arena.allocate(byteCount: size)!
      memset(dirty, 0xAB, size)
      arena.deallocate(dirty)
      let p = arena.allocateZeroed(byteCount: size)!
      let bytes = p.assumingMemoryBound(to: UInt8.self)
      #expect((0..<size).allSatisfy { bytes[$0] == 0 }, "size \(size)")
      arena.deallocate(p)
    }
  }

  @Test func reallocateKeepsContentsAcrossEveryRegime() {
    let arena = Arena(reserving: 256 << 20)!
    defer { arena.destroy() }
    // small -> small -> page run -> larger page run -> huge -> larger huge -> back down.
    let sizes = [16, 100, 3000, 40_000, 500_000, 3 << 20, 40 << 20, 64 << 20, 2 << 20, 50_000, 24]
    var p = arena.allocate(byteCount: sizes[0])!
    Pattern.fill(p, sizes[0], seed: 9)
    var valid = sizes[0]
    for size in sizes.dropFirst() {
      guard let q = arena.reallocate(p, byteCount: size) else { Issue.record("realloc to \(size) failed"); return }
      valid = min(valid, size)
      #expect(Pattern.check(q, valid, seed: 9), "contents lost reallocating to \(size)")
      #expect(arena.usableSize(of: q) >= size)
      Pattern.fill(q, size, seed: 9)
      valid = size
      p = q
    }
    arena.deallocate(p)
    #expect(arena.statistics.liveBytes == 0)
  }

  @Test func pageRunsGrowInPlaceIntoFreeNeighbours() {
    let arena = Arena(reserving: 64 << 20)!
    defer { arena.destroy() }
    let p = arena.allocate(byteCount: 64 << 10)!
    Pattern.fill(p, 64 << 10, seed: 5)
    let q = arena.reallocate(p, byteCount: 256 << 10)!
    #expect(q == p, "a page run followed by free pages should grow in place")
    #expect(Pattern.check(q, 64 << 10, seed: 5))
    let r = arena.reallocate(q, byteCount: 80 << 10)!
    #expect(r == q, "shrinking a page run stays in place")
    #expect(arena.usableSize(of: r) == 80 << 10)
    arena.deallocate(r)
  }

  @Test func resetFreesEverythingAndTheArenaStaysUsable() {
    let arena = Arena(reserving: 64 << 20)!
    defer { arena.destroy() }
    for i in 0..<10_000 { _ = arena.allocate(byteCount: 16 + i % 3000) }
    _ = arena.allocate(byteCount: 40 << 20)  // huge
    #expect(arena.statistics.liveBytes > 10_000)
    arena.reset()
    let stats = arena.statistics
    #expect(stats.liveBytes == 0)
    #expect(stats.committedBytes == 0, "reset decommits: \(stats.committedBytes)")
    #expect(churn(arena, seed: 3, steps: 20_000, maxSize: 100_000) == 0)
  }

  @Test func privateArenasGrowNewReservationsWhenFull() {
    let arena = Arena(reserving: 16 << 20)!
    defer { arena.destroy() }
    var blocks: [UnsafeMutableRawPointer] = []
    for _ in 0..<40 { blocks.append(arena.allocate(byteCount: 1 << 20)!) }  // 40 MiB > 16 MiB
    #expect(arena.statistics.reservationCount >= 3)
    for (i, p) in blocks.enumerated() { Pattern.fill(p, 1 << 20, seed: UInt8(i)) }
    for (i, p) in blocks.enumerated() {
      #expect(Pattern.check(p, 1 << 20, seed: UInt8(i)))
      arena.deallocate(p)
    }
  }

  @Test func blocksOfOneArenaAreNotConfusedWithAnother() {
    let a = Arena(reserving: 16 << 20)!
    let b = Arena(reserving: 16 << 20)!
    defer { a.destroy(); b.destroy() }
    let p = a.allocate(byteCount: 100)!
    let q = b.allocate(byteCount: 100)!
    #expect(p != q)
    a.deallocate(p)
    b.deallocate(q)
  }
}
