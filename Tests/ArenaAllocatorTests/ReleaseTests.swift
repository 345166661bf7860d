// Layer: giving memory back. RSS and VmData are read from /proc (what the kernel says), in a
// child process so no other test disturbs them.
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

@Suite struct ReleaseTests {
  @Test func trimPurgesFreedRunsSoRSSFallsAndDecommitsWholeGranules() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let arena = Arena(reserving: 1 << 30)!
      var blocks: [UnsafeMutableRawPointer] = []
      blocks.reserveCapacity(20_000)
      for i in 0..<64 { let p = arena.allocate(byteCount: 1 << 20)!; memset(p, Int32(i), 1 << 20); blocks.append(p) }
      for i in 0..<16_384 { let p = arena.allocate(byteCount: 1024)!; memset(p, Int32(i & 0xFF), 1024); blocks.append(p) }
      let rssFull = ProcessMemory.residentBytes
      let dataFull = procField("/proc/self/status", "VmData")!
      for p in blocks { arena.deallocate(p) }
      let rssFreed = ProcessMemory.residentBytes
      if rssFull - rssFreed > 8 << 20 { fail("free alone should keep memory dirty for reuse") }
      let released = HeapHandle.trim(arena.heap)
      let rssTrimmed = ProcessMemory.residentBytes
      let dataTrimmed = procField("/proc/self/status", "VmData")!
      if rssFreed - rssTrimmed < 70 << 20 { fail("RSS fell only \(rssFreed - rssTrimmed) bytes after trim") }
      if dataFull - dataTrimmed < 64 << 20 { fail("commit charge fell only \(dataFull - dataTrimmed) bytes") }
      if released.decommitted < 64 << 20 { fail("decommitted only \(released.decommitted)") }
      let stats = arena.statistics
      if stats.freeDirtyBytes != 0 { fail("dirty bytes left: \(stats.freeDirtyBytes)") }
      if stats.committedBytes > 4 << 20 { fail("still committed: \(stats.committedBytes)") }
      // Released memory is reusable and reads as zero.
      let again = arena.allocateZeroed(byteCount: 8 << 20)!
      let bytes = again.assumingMemoryBound(to: UInt8.self)
      if !(0..<(8 << 20)).allSatisfy({ bytes[$0] == 0 }) { fail("reused memory is not zero") }
    }
  }

  /// Trim purges the pages of partly used runs that only free blocks touch. The free blocks left
  /// on other pages stay reusable: once every freed block is allocated again the class has made
  /// no new run. (The links were once read after the purge had zeroed the pages holding them, and
  /// every free block behind the first purged one was lost until its run emptied.)
  @Test func trimKeepsTheFreeBlocksOfPartlyUsedRunsReusable() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let arena = Arena(reserving: 1 << 30)!
      let size = 128
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<4096 { let p = arena.allocate(byteCount: size)!; memset(p, 0xA5, size); blocks.append(p) }
      let runs = arena.statistics.smallRunCount
      // Free every block of even pages and every other block of odd pages, in address order: each
      // run's free list then alternates between pages that trim purges and pages it keeps.
      var freed = 0
      for (i, p) in blocks.enumerated().sorted(by: { $0.element < $1.element })
      where (UInt(bitPattern: p) >> 12) & 1 == 0 || i & 1 == 0 {
        arena.deallocate(p)
        freed += 1
      }
      let released = HeapHandle.trim(arena.heap)
      if released.purged < 256 << 10 { fail("trim purged only \(released.purged) bytes") }
      for _ in 0..<freed { _ = arena.allocate(byteCount: size)! }
      let after = arena.statistics.smallRunCount
      if after != runs { fail("\(freed) blocks freed and allocated again took \(after - runs) new runs") }
    }
  }

  @Test func trimKeepsTheVMACountBounded() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let arena = Arena(reserving: 1 << 30)!
      let before = ProcessMemory.mappingCount
      var rng = XorShift(seed: 5)
      var blocks = [UnsafeMutableRawPointer?](repeating: nil, count: 2000)
      for round in 0..<20 {
        for i in 0..<blocks.count where rng.below(2) == 0 {
          if let p = blocks[i] { arena.deallocate(p); blocks[i] = nil } else {
            blocks[i] = arena.allocate(byteCount: rng.below(3) == 0 ? rng.below(1 << 20) + 1 : rng.below(4096) + 1)
          }
        }
        _ = HeapHandle.trim(arena.heap)
        let now = ProcessMemory.mappingCount
        // 1 GiB / 2 MiB granules: at most 2 boundaries per granule, and in practice far fewer.
        if now - before > 64 { fail("round \(round): VMAs grew from \(before) to \(now)") }
      }
    }
  }
}
