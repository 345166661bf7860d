// Layer: the commit probe (touch under a per-thread sigsetjmp guard).
import ArenaAllocator
import ArenaCore
import CSystemShims
import Foundation
import Testing

@Suite struct ProbeTests {
  @Test func probingAPageThatFaultsFailsInsteadOfCrashing() async {
    await #expect(processExitsWith: .success) {
      setenv("ARENA_OPTIONS", "commit_probe:on", 1)
      HeapHandle.reloadOptions()
      HeapHandle.installFaultHandlerIfAsked()
      ProbeTests.probeAFaultingRange()
    }
  }

  @Test func withoutTheHandlerTheProbeTouchesNothing() async {
    await #expect(processExitsWith: .success) {
      let size = 64 << 10
      let region = mmap(nil, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
      // No handler was asked for: probing a range that would fault must not touch it.
      if arena_probe_range(region, size) != 0 { exit(1) }
    }
  }

  static func probeAFaultingRange() {
    let size = 64 << 10
    let region = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    defer { munmap(region, size) }
    memset(region, 7, size)
    if arena_probe_range(region, size) != 0 { exit(1) }
    if region.load(fromByteOffset: 4096, as: UInt8.self) != 7 { exit(2) }  // probing keeps the contents
    mprotect(region + 32768, 4096, PROT_NONE)  // a fault we cause ourselves
    if arena_probe_range(region, size) != EFAULT { exit(3) }
    // The guard is per call: a second probe of the good half still works.
    if arena_probe_range(region, 32768) != 0 { exit(4) }
  }

  @Test func allocationsWithTheProbeOnWork() async {
    await #expect(processExitsWith: .success) {
      setenv("ARENA_OPTIONS", "commit_probe:on", 1)
      HeapHandle.reloadOptions()
      HeapHandle.installFaultHandlerIfAsked()
      let arena = Arena(reserving: 64 << 20)!
      let before = ProcessMemory.residentBytes
      let p = arena.allocate(byteCount: 1 << 20)!
      // The probe touched the committed granule: it is resident before the program writes.
      if ProcessMemory.residentBytes - before < 1 << 20 { exit(1) }
      memset(p, 1, 1 << 20)
      arena.deallocate(p)
    }
  }
}
