// Layer: the background scavenger. Each test runs in a child process (its own default heap and
// scavenger thread, its own RSS) and reads what the kernel reports.
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

/// Allocates `total` bytes on the default arena in small and medium blocks from two threads,
/// frees 90% in random order, and returns the survivors.
func spike(total: Int) -> [UnsafeMutableRawPointer] {
  let survivors = Shared<[UInt]>([])
  let threads = (0..<2).map { t in
    Thread {
      var rng = XorShift(seed: UInt64(t + 1))
      var mine: [UnsafeMutableRawPointer] = []
      mine.reserveCapacity(100_000)
      var bytes = 0
      while bytes < total / 2 {
        let n = rng.below(2) == 0 ? rng.below(1024) + 16 : rng.below(64 << 10) + 4096
        let p = Arena.default.allocate(byteCount: n)!
        memset(p, 0x5A, n)
        mine.append(p)
        bytes += n
      }
      for i in stride(from: mine.count - 1, to: 0, by: -1) { mine.swapAt(i, rng.below(i + 1)) }
      let keep = mine.count / 10
      for p in mine[keep...] { Arena.default.deallocate(p) }
      survivors.update { $0.append(contentsOf: mine[..<keep].map { UInt(bitPattern: $0) }) }
    }
  }
  for thread in threads { thread.start() }
  while !threads.allSatisfy(\.isFinished) { usleep(10_000) }
  return survivors.current.map { UnsafeMutableRawPointer(bitPattern: $0)! }
}

@Suite struct ScavengerTests {
  @Test func idleProgramsRSSFallsWithoutAnyAllocatorCall() async {
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let baseline = ProcessMemory.residentBytes
      let survivors = spike(total: 256 << 20)
      let live = Arena.default.statistics.liveBytes
      let atIdle = ProcessMemory.residentBytes - baseline
      usleep(2_500_000)  // no allocator call from here on
      let after = ProcessMemory.residentBytes - baseline
      let stats = Arena.default.statistics
      FileHandle.standardError.write(Data("live \(live >> 20) MiB, RSS at idle \(atIdle >> 20) MiB, after 2.5 s \(after >> 20) MiB, purged \(stats.purgedBytesTotal >> 20) MiB, scavenger CPU \(stats.scavengerCPUNanoseconds / 1_000_000) ms\n".utf8))
      if stats.scavengerPasses == 0 { fail("the scavenger never ran") }
      if after >= atIdle / 2 { fail("RSS did not fall: \(atIdle >> 20) -> \(after >> 20) MiB") }
      if Double(after) > 1.6 * Double(live) + Double(16 << 20) { fail("RSS \(after >> 20) MiB vs live \(live >> 20) MiB") }
      for p in survivors where p.load(as: UInt8.self) != 0x5A { fail("a live block lost its data") }
    }
    print("idle RSS:", String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }

  @Test func decommitGivesTheCommitChargeBack() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      setenv("ARENA_OPTIONS", "decay_ms:100,decommit_ms:200", 1)
      HeapHandle.reloadOptions()
      let before = procField("/proc/self/status", "VmData")!
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<128 { blocks.append(Arena.default.allocate(byteCount: 1 << 20)!) }
      let full = procField("/proc/self/status", "VmData")!
      for p in blocks { Arena.default.deallocate(p) }
      usleep(1_500_000)
      let after = procField("/proc/self/status", "VmData")!
      let stats = Arena.default.statistics
      if full - before < 120 << 20 { fail("setup: only \(full - before) committed") }
      if full - after < 100 << 20 { fail("VmData fell only \((full - after) >> 20) MiB; decommitted \(stats.decommittedBytesTotal >> 20) MiB") }
    }
  }

  @Test func scavengingConcurrentlyWithAllocatingThreadsLosesNoData() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      setenv("ARENA_OPTIONS", "decay_ms:1,decommit_ms:2,hot_reserve_kb:0", 1)
      HeapHandle.reloadOptions()
      let deadline = Date().addingTimeInterval(2)
      let failures = Shared(0)
      let threads = (0..<3).map { t in
        Thread {
          churnWithPatterns(
            seed: UInt64(t + 100), slots: 1000, batch: 1000, until: deadline, failures: failures,
            size: { $0.below(4) == 0 ? $0.below(200_000) + 8192 : $0.below(40_000) + 1 })
        }
      }
      for thread in threads { thread.start() }
      while !threads.allSatisfy(\.isFinished) { usleep(10_000) }
      let stats = Arena.default.statistics
      if failures.current > 0 { FileHandle.standardError.write(Data("\(failures.current) corrupted blocks\n".utf8)); exit(1) }
      if stats.purgedBytesTotal == 0 { FileHandle.standardError.write(Data("scavenger purged nothing\n".utf8)); exit(1) }
    }
  }

  /// Allocates `count` blocks of `size` bytes on `arena`, fills them, frees all but every
  /// `keepEvery`-th, and returns the survivors.
  static func sparseRuns(_ arena: Arena, size: Int, count: Int, keepEvery: Int) -> [UnsafeMutableRawPointer] {
    var blocks: [UnsafeMutableRawPointer] = []
    for _ in 0..<count { let p = arena.allocate(byteCount: size)!; memset(p, 1, size); blocks.append(p) }
    for (i, p) in blocks.enumerated() where i % keepEvery != 0 { arena.deallocate(p) }
    return blocks.enumerated().filter { $0.offset % keepEvery == 0 }.map(\.element)
  }

  @Test(arguments: [(200, 200), (16_000, 8), (4096, 5)])
  func scavengeReleasesPagesOnlyFreeBlocksTouch(size: Int, keepEvery: Int) {
    let arena = Arena(reserving: 256 << 20)!
    defer { arena.destroy() }
    let count = (48 << 20) / size
    let survivors = Self.sparseRuns(arena, size: size, count: count, keepEvery: keepEvery)
    // Blocks in use pin their pages; every other page of a partly used run goes back.
    let freeBytes = (count - survivors.count) * size
    let released = arena.scavenge()
    #expect(released.purgedBytes > freeBytes / 2, "purged only \(released.purgedBytes) of \(freeBytes) free bytes")
    #expect(arena.scavenge().purgedBytes == 0, "a second scavenge has nothing left to release")
    for p in survivors { #expect(p.load(fromByteOffset: size - 1, as: UInt8.self) == 1) }
    // Released blocks come back as usable blocks, once each.
    var again = Set<UInt>()
    for _ in 0..<(count - survivors.count) {
      let p = arena.allocate(byteCount: size)!
      memset(p, 2, size)
      again.insert(UInt(bitPattern: p))
    }
    #expect(again.count == count - survivors.count)
    #expect(again.isDisjoint(with: survivors.map { UInt(bitPattern: $0) }))
    for p in survivors { #expect(p.load(fromByteOffset: size - 1, as: UInt8.self) == 1) }
    for a in again { arena.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
    for p in survivors { arena.deallocate(p) }
  }

  @Test func doubleFreeOfAReleasedBlockIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let arena = Arena(reserving: 64 << 20)!
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<4096 { blocks.append(arena.allocate(byteCount: 256)!) }
      // Runs of 256 B blocks have 4 pages and 64 blocks: keep the first of each run.
      for (i, p) in blocks.enumerated() where i % 64 != 0 { arena.deallocate(p) }
      _ = arena.scavenge()
      arena.deallocate(blocks[2048 + 40])  // its page went back to the kernel
    }
    let line = BadInputTests.diagnosis(result)
    #expect(line.contains("double free"), "\(line)")
  }

  @Test func optionsAreParsedFromTheEnvironment() async {
    await #expect(processExitsWith: .success) {
      setenv("ARENA_OPTIONS", "decay_ms:250,decommit_ms:7000,scavenger:off", 1)
      HeapHandle.reloadOptions()
      let o = HeapHandle.scavengerOptions
      if o.decayNanoseconds != 250_000_000 || o.enabled { exit(1) }
      // Strict overcommit decommits at once; otherwise the configured delay holds.
      let strict = (try? String(contentsOfFile: "/proc/sys/vm/overcommit_memory", encoding: .utf8))?.hasPrefix("2") ?? false
      if o.decommitNanoseconds != (strict ? 0 : 7_000_000_000) { exit(2) }
    }
  }
}
