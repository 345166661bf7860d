// Layer: discardable memory (offer / reclaim).
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

let cgroupRoot = "/sys/fs/cgroup/memory"
let cgroupV1MemoryWritable: Bool = {
  let probe = cgroupRoot + "/arena-probe-\(getpid())"
  guard mkdir(probe, 0o755) == 0 else { return false }
  rmdir(probe)
  return true
}()

@Suite struct OfferTests {
  @Test func descriptorOffsetsMatchTheLayout() {
    #expect(HeapHandle.offerSlotsMatchLayout)
  }

  @Test(arguments: [40_000, 1 << 20, 40 << 20])
  func offerAndReclaimWithoutPressureKeepsEveryByte(size: Int) throws {
    let arena = Arena(reserving: 256 << 20)!
    defer { arena.destroy() }
    let p = arena.allocate(byteCount: size)!
    Pattern.fill(p, size, seed: 11)
    try arena.offer(p)
    #expect(arena.statistics.offeredBytes >= size)
    #expect(try arena.reclaim(p) == .intact)
    #expect(Pattern.check(p, size, seed: 11))
    #expect(arena.statistics.offeredBytes == 0)
    // Offer again, then free while offered: allowed.
    try arena.offer(p)
    arena.deallocate(p)
    #expect(arena.statistics.offeredBytes == 0)
  }

  @Test func errorCasesAreReported() throws {
    let arena = Arena(reserving: 64 << 20)!
    defer { arena.destroy() }
    let small = arena.allocate(byteCount: 1000)!
    #expect(throws: OfferError.notOfferable) { try arena.offer(small) }
    let large = arena.allocate(byteCount: 100_000)!
    #expect(throws: OfferError.notOffered) { try arena.reclaim(large) }
    try arena.offer(large)
    #expect(throws: OfferError.alreadyOffered) { try arena.offer(large) }
    #expect(try arena.reclaim(large) == .intact)
    #expect(throws: OfferError.notOffered) { try arena.reclaim(large) }
    arena.deallocate(small)
    arena.deallocate(large)
  }

  @Test func reallocatingAnOfferedBlockIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 100_000)!
      try? Arena.default.offer(p)
      _ = Arena.default.reallocate(p, byteCount: 200_000)
    }
    let line = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(line.contains("offered"), "\(line)")
  }

  @Test func discardableBufferRegeneratesWhatWasLost() throws {
    let buffer = DiscardableBuffer<UInt32>(count: 50_000) { b in
      for i in b.indices { b[i] = UInt32(i) &* 2_654_435_761 }
    }!
    buffer.offer()
    let ok = buffer.withContents { b in b.indices.allSatisfy { b[$0] == UInt32($0) &* 2_654_435_761 } }
    #expect(ok)
    #expect(buffer.regenerations == 0, "no memory pressure: nothing was discarded")
  }

  @Test(.enabled(if: cgroupV1MemoryWritable, "needs a writable cgroup v1 memory controller (root)"))
  func underMemoryPressureSomeBlocksAreDiscardedAndIntactOnesKeepTheirBytes() async throws {
    let group = cgroupRoot + "/arena-offer-test-\(getpid())"
    defer { rmdir(group) }
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      let group = cgroupRoot + "/arena-offer-test-\(getppid())"
      mkdir(group, 0o755)
      guard (try? "\(160 << 20)".write(toFile: group + "/memory.limit_in_bytes", atomically: false, encoding: .utf8)) != nil,
            (try? "\(getpid())".write(toFile: group + "/cgroup.procs", atomically: false, encoding: .utf8)) != nil
      else { fail("cannot join the cgroup") }
      let arena = Arena.default
      let blockSize = 4 << 20
      var blocks: [UnsafeMutableRawPointer] = []
      for i in 0..<24 {  // 96 MiB offered
        let p = arena.allocate(byteCount: blockSize)!
        Pattern.fill(p, blockSize, seed: UInt8(i))
        blocks.append(p)
      }
      for p in blocks { try? arena.offer(p) }
      // Pressure from outside the allocator: 128 MiB touched through mmap.
      let pressureSize = 128 << 20
      let pressure = mmap(nil, pressureSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
      memset(pressure, 1, pressureSize)
      munmap(pressure, pressureSize)
      var intact = 0, discarded = 0
      for (i, p) in blocks.enumerated() {
        switch try? arena.reclaim(p) {
        case .intact?:
          intact += 1
          if !Pattern.check(p, blockSize, seed: UInt8(i)) { fail("block \(i) reported intact but changed") }
        case .discarded?:
          discarded += 1
          // Every page is either all zero (discarded) or exactly its old bytes.
          for page in stride(from: 0, to: blockSize, by: 4096) {
            let bytes = (p + page).assumingMemoryBound(to: UInt8.self)
            let zero = (0..<4096).allSatisfy { bytes[$0] == 0 }
            let kept = (0..<4096).allSatisfy { bytes[$0] == UInt8(truncatingIfNeeded: (page + $0) &* 31) &+ UInt8(i) }
            if !zero && !kept { fail("block \(i) page \(page / 4096) is neither zero nor intact") }
          }
        case nil: fail("reclaim failed")
        }
      }
      let stats = arena.statistics
      FileHandle.standardError.write(Data("intact \(intact), discarded \(discarded), discarded bytes \(stats.discardedBytes >> 20) MiB\n".utf8))
      if discarded == 0 { fail("no block was discarded under pressure") }
      try? "\(getpid())".write(toFile: cgroupRoot + "/cgroup.procs", atomically: false, encoding: .utf8)
    }
    print("offer under pressure:", String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }
}
