// Layer: bad input. Impossible requests return nil with errno; pointers the arena did not hand out
// stop the process with a one-line diagnosis naming the pointer (checked in a child process).
import ArenaAllocator
import Foundation
import Testing

@Suite struct BadInputTests {
  @Test func impossibleSizesReturnNilWithENOMEM() {
    let arena = Arena.default
    for size in [Int.max, Int.max / 2, 1 << 62, -1] {
      errno = 0
      #expect(arena.allocate(byteCount: size) == nil, "size \(size)")
      #expect(errno == ENOMEM, "size \(size): errno \(errno)")
    }
    let p = arena.allocate(byteCount: 64)!
    errno = 0
    #expect(arena.reallocate(p, byteCount: Int.max) == nil)
    #expect(errno == ENOMEM)
    #expect(arena.usableSize(of: p) == 64, "a failed reallocate leaves the block intact")
    arena.deallocate(p)
  }

  @Test func sizesBeyondTheAddressSpaceFailCleanly() {
    // Plausible-looking but unmappable: 64 TiB.
    errno = 0
    #expect(Arena.default.allocate(byteCount: 1 << 46) == nil)
    #expect(errno == ENOMEM)
  }

  @Test(arguments: [0, 3, 24, 48, 1000])
  func badAlignmentsReturnNilWithEINVAL(alignment: Int) {
    errno = 0
    #expect(Arena.default.allocate(byteCount: 16, alignment: alignment) == nil)
    #expect(errno == EINVAL)
  }

  static func diagnosis(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
  }

  /// Preloaded into a C program (Tests/Fixtures/misuse_invalid_frees.c): 17 kinds of double free
  /// and invalid pointer, for small blocks, page runs and huge blocks, also after merging and
  /// trim, each stopped with one line naming the pointer. (A small block that carving had not
  /// reached yet was once taken by free's fast path and handed out twice.) Needs the release build.
  @Test func everyDoubleAndInvalidFreeIsStoppedPreloaded() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let fixture = try env.compileFixture("misuse_invalid_frees")
    let result = try env.run([fixture], preload: true, seconds: 60)
    #expect(result.stdout.contains("arena_malloc_is_active=1"), "not running on the arena allocator:\n\(result.summary)")
    for line in result.stdout.split(separator: "\n") where line.hasPrefix("FAIL") { Issue.record("\(line)") }
    #expect(result.succeeded && result.stdout.hasSuffix("misuse_invalid_frees ok\n"), "\(result.summary)")
  }

  /// The same 17 kinds stay stopped in a hardened heap, and the misuse only hardening catches is
  /// stopped there (Tests/Fixtures/misuse_hardened.c): overflows and underflows of small blocks,
  /// a page run's slack and the guard page after it, writes into freed blocks and their free-list
  /// links. Without hardening the first of those passes, so the checks are the hardened heap's.
  @Test func hardenedHeapsStopOverflowsAndWritesAfterFree() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    for (fixture, suffix) in [("misuse_invalid_frees", "misuse_invalid_frees ok\n"), ("misuse_hardened", "misuse_hardened ok\n")] {
      let program = try env.compileFixture(fixture)
      let result = try env.run([program], preload: true, seconds: 60, environment: ["ARENA_OPTIONS": "hardened:on"])
      for line in result.stdout.split(separator: "\n") where line.hasPrefix("FAIL") { Issue.record("\(fixture) hardened: \(line)") }
      #expect(result.succeeded && result.stdout.hasSuffix(suffix), "\(fixture):\n\(result.summary)")
    }
    let plain = try env.run([try env.compileFixture("misuse_hardened")], preload: true, seconds: 60)
    #expect(plain.succeeded && plain.stdout.contains("hardened=0"), "\(plain.summary)")
  }

  /// A hardened heap must not mistake a released page for an overwrite: when the free blocks
  /// before a live block have had their page purged, the canary before the live block reads as
  /// zero, and freeing it is still fine. (It was once stopped as a "heap underflow" after any
  /// release pass: python3 and swiftc aborted under hardened:on.)
  @Test func aHardenedHeapFreesBlocksNextToReleasedPages() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      let arena = Arena(reserving: 64 << 20, hardened: true)!
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<20_000 { blocks.append(arena.allocate(byteCount: 56)!) }  // class 64 with the canary
      // Keep the page-aligned blocks of odd pages (each follows a block on the page before).
      let set = Set(blocks.map { UInt(bitPattern: $0) })
      let kept = blocks.filter {
        let a = UInt(bitPattern: $0)
        return a & 4095 == 0 && (a >> 12) & 1 == 1 && set.contains(a - 64)
      }
      if kept.count < 100 { exit(2) }
      let keptSet = Set(kept.map { UInt(bitPattern: $0) })
      for p in blocks where !keptSet.contains(UInt(bitPattern: p)) { arena.deallocate(p) }
      let released = arena.scavenge()
      if released.purgedBytes < 256 << 10 { exit(3) }
      for p in kept { arena.deallocate(p) }
    }
  }

  /// A private arena asks for hardening itself: its blocks carry canaries whatever ARENA_OPTIONS
  /// says, and an overflow stops the process at deallocate.
  @Test func aHardenedPrivateArenaStopsAnOverflow() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let arena = Arena(reserving: 64 << 20, hardened: true)!
      if !arena.isHardened { exit(2) }
      let p = arena.allocate(byteCount: 100)!
      if arena.usableSize(of: p) != 100 { exit(3) }
      (p + 100).storeBytes(of: 0x41, as: UInt8.self)
      arena.deallocate(p)
    }
    let line = Self.diagnosis(result)
    #expect(line.contains("heap overflow past the end of the block"), "\(line)")
    #expect(line.split(separator: "\n").count == 1, "one line: \(line)")
  }

  @Test func doubleFreeOfASmallBlockIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 48)!
      Arena.default.deallocate(p)
      Arena.default.deallocate(p)
    }
    let line = Self.diagnosis(result)
    #expect(line.contains("arena: free(): double free"), "\(line)")
    #expect(line.contains("0x"), "names the pointer: \(line)")
    #expect(line.split(separator: "\n").count == 1, "one line: \(line)")
  }

  @Test func doubleFreeOfAPageRunIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 100_000)!
      Arena.default.deallocate(p)
      Arena.default.deallocate(p)
    }
    #expect(Self.diagnosis(result).contains("double free"), "\(Self.diagnosis(result))")
  }

  @Test func doubleFreeOfAHugeBlockIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 64 << 20)!
      Arena.default.deallocate(p)
      Arena.default.deallocate(p)
    }
    #expect(Self.diagnosis(result).contains("not allocated by this allocator"), "\(Self.diagnosis(result))")
  }

  @Test func foreignPointerIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      // Memory of no arena (malloc itself may be the arena when the replacement is linked in).
      let foreign = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
      Arena.default.deallocate(foreign)
    }
    #expect(Self.diagnosis(result).contains("not allocated by this allocator"), "\(Self.diagnosis(result))")
  }

  @Test func interiorPointerIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 64)!
      Arena.default.deallocate(p + 16)
    }
    #expect(Self.diagnosis(result).contains("inside a block"), "\(Self.diagnosis(result))")
  }

  @Test func interiorPointerOfAPageRunIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 100_000)!
      Arena.default.deallocate(p + 8192)
    }
    #expect(Self.diagnosis(result).contains("not an allocated block"), "\(Self.diagnosis(result))")
  }

  @Test func pointerOfAnotherArenaIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let other = Arena(reserving: 16 << 20)!
      let p = other.allocate(byteCount: 64)!
      Arena.default.deallocate(p)
    }
    #expect(Self.diagnosis(result).contains("another arena"), "\(Self.diagnosis(result))")
  }

  @Test func usableSizeOfAFreedBlockIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGABRT), observing: [\.standardErrorContent]) {
      let p = Arena.default.allocate(byteCount: 200)!
      Arena.default.deallocate(p)
      _ = Arena.default.usableSize(of: p)
    }
    #expect(Self.diagnosis(result).contains("double free"), "\(Self.diagnosis(result))")
  }
}
