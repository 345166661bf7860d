// Layer: reservation and commit accounting, checked against what the kernel reports (VmData,
// RLIMIT_DATA, /proc/self/maps), not against the allocator's own counters alone.
import ArenaAllocator
import CSystemShims
import Foundation
import Testing

@Suite struct ReservationTests {
  @Test func reservingCostsNoCommitAndCommitGrowsInGranules() async {
    // VmData counts private writable mappings: PROT_NONE reservations are not in it, committed
    // ranges are. It is per process; the check runs in a child so no other test disturbs it.
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let before = procField("/proc/self/status", "VmData")!
      let arena = Arena(reserving: 1 << 30)!
      let reserved = procField("/proc/self/status", "VmData")!
      // Header (64 KiB) and page map (1 MiB per GiB) are committed up front; nothing else.
      if reserved - before > 2 << 20 { fail("a 1 GiB reservation charged \(reserved - before) bytes") }
      if arena.statistics.reservedBytes != 1 << 30 { fail("reserved \(arena.statistics.reservedBytes)") }
      var blocks: [UnsafeMutableRawPointer] = []
      blocks.reserveCapacity(64)
      for _ in 0..<64 { blocks.append(arena.allocate(byteCount: 1 << 20)!) }
      let committed = procField("/proc/self/status", "VmData")!
      let stats = arena.statistics
      if committed - reserved < 64 << 20 { fail("64 MiB of runs committed only \(committed - reserved) bytes") }
      if committed - reserved > 72 << 20 { fail("64 MiB of runs committed \(committed - reserved) bytes") }
      if stats.committedBytes < 64 << 20 || stats.committedBytes > 66 << 20 { fail("statistics: \(stats.committedBytes)") }
      if stats.committedBytes % ArenaSizeClasses.granuleBytes != 0 { fail("commits are not whole granules") }
      if stats.commitCalls > 40 { fail("64 MiB took \(stats.commitCalls) commit calls") }
      for p in blocks { arena.deallocate(p) }
      arena.reset()
      let decommitted = procField("/proc/self/status", "VmData")!
      if decommitted - reserved > 1 << 20 { fail("reset kept \(decommitted - reserved) bytes charged") }
    }
  }

  @Test func commitFailureUnderRLIMIT_DATAIsACleanNilAndLosesNothing() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let arena = Arena(reserving: 1 << 30)!
      let data = procField("/proc/self/status", "VmData")!
      var limit = rlimit(rlim_cur: rlim_t(data + (96 << 20)), rlim_max: rlim_t(data + (96 << 20)))
      guard setrlimit(Int32(RLIMIT_DATA.rawValue), &limit) == 0 else { fail("setrlimit failed") }
      var blocks: [(UnsafeMutableRawPointer, UInt8)] = []
      blocks.reserveCapacity(200)
      while true {
        errno = 0
        guard let p = arena.allocate(byteCount: 1 << 20) else {
          if errno != ENOMEM { fail("errno \(errno), expected ENOMEM") }
          break
        }
        let seed = UInt8(truncatingIfNeeded: blocks.count)
        Pattern.fill(p, 1 << 20, seed: seed)
        blocks.append((p, seed))
        if blocks.count > 190 { fail("RLIMIT_DATA was not enforced") }
      }
      if blocks.count < 60 { fail("only \(blocks.count) MiB before ENOMEM under a 96 MiB limit") }
      for (p, seed) in blocks where !Pattern.check(p, 1 << 20, seed: seed) { fail("a block was corrupted") }
      // Small requests fail cleanly too once everything is charged.
      var small = 0
      while arena.allocate(byteCount: 64) != nil { small += 1; if small > 2_000_000 { fail("no limit for small") } }
      if errno != ENOMEM { fail("small: errno \(errno)") }
      for (p, _) in blocks { arena.deallocate(p) }
      // Freed memory is reused without new commit.
      guard let again = arena.allocate(byteCount: 8 << 20) else { fail("no reuse after free") }
      arena.deallocate(again)
    }
  }

  @Test func oneMillionRandomOperationsKeepTheVMACountBounded() async {
    // In a child process: other tests map and unmap (thread stacks) while they run.
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      let arena = Arena(reserving: 1 << 30)!
      let before = ProcessMemory.mappingCount
      var rng = XorShift(seed: 42)
      var slots = [UnsafeMutableRawPointer?](repeating: nil, count: 4096)
      for _ in 0..<1_000_000 {
        let i = rng.below(slots.count)
        if let p = slots[i] {
          arena.deallocate(p)
          slots[i] = nil
        } else {
          let roll = rng.below(1000)
          let size = roll < 900 ? rng.below(512) + 1 : roll < 995 ? rng.below(64 << 10) + 1 : rng.below(2 << 20) + 1
          slots[i] = arena.allocate(byteCount: size)
        }
      }
      let during = ProcessMemory.mappingCount
      for case let p? in slots { arena.deallocate(p) }
      arena.scavenge()
      let after = ProcessMemory.mappingCount
      FileHandle.standardError.write(Data("VMA count: before \(before), after 1M operations \(during), after freeing and scavenging \(after)\n".utf8))
      if during - before > 4 || after - before > 64 { exit(1) }
    }
    print(String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }

  @Test func reservationFallsBackToSmallerOnesUnderRLIMIT_AS() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let vm = procField("/proc/self/status", "VmSize")!
      var limit = rlimit(rlim_cur: rlim_t(vm + (300 << 20)), rlim_max: rlim_t(vm + (300 << 20)))
      guard setrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0 else { fail("setrlimit failed") }
      guard let arena = Arena(reserving: 1 << 30) else { fail("no fallback reservation") }
      let stats = arena.statistics
      if stats.reservedBytes >= 1 << 30 || stats.reservedBytes < 16 << 20 { fail("reserved \(stats.reservedBytes)") }
      guard let p = arena.allocate(byteCount: 1 << 20) else { fail("cannot allocate in the fallback reservation") }
      Pattern.fill(p, 1 << 20, seed: 1)
      if !Pattern.check(p, 1 << 20, seed: 1) { fail("corrupted") }
    }
  }
}

@Suite struct StatisticsTests {
  @Test func liveBytesAndClassCountsFollowAllocations() {
    let arena = Arena(reserving: 64 << 20)!
    defer { arena.destroy() }
    var blocks: [UnsafeMutableRawPointer] = []
    for _ in 0..<100 { blocks.append(arena.allocate(byteCount: 100)!) }       // class 112
    blocks.append(arena.allocate(byteCount: 50_000)!)                          // page run 53,248
    blocks.append(arena.allocate(byteCount: 40 << 20)!)                        // huge
    let stats = arena.statistics
    let c = ArenaSizeClasses.classIndex(forByteCount: 100)
    #expect(stats.sizeClasses[c - 1].blockSize == 112)
    #expect(stats.sizeClasses[c - 1].liveBlocks == 100)
    #expect(stats.largeLiveCount == 1 && stats.largeLiveBytes == 53_248)
    #expect(stats.hugeLiveCount == 1 && stats.hugeLiveBytes == 40 << 20)
    #expect(stats.liveBytes == 100 * 112 + 53_248 + (40 << 20))
    #expect(stats.committedBytes >= stats.liveBytes - (40 << 20))
    #expect(stats.residentBytesEstimate <= stats.committedBytes)
    for p in blocks { arena.deallocate(p) }
    let after = arena.statistics
    #expect(after.liveBytes == 0)
    #expect(after.freeDirtyBytes > 0, "freed runs are kept dirty for reuse")
  }
}
