// Layer: size classes. The table is Swift's Array growth policy and malloc_usable_size's answer,
// so every invariant is checked exhaustively over 0...smallLimit.
import ArenaAllocator
import ArenaCore
import Testing

@Suite struct SizeClassTests {
  @Test func classesAreIncreasingMultiplesOf16() {
    var previous = 0
    for c in 1...ArenaSizeClasses.count {
      let size = ArenaSizeClasses.blockSize(ofClass: c)
      #expect(size % 16 == 0, "class \(c) size \(size) is not 16-byte aligned")
      #expect(size > previous, "class \(c) does not grow")
      previous = size
    }
    #expect(ArenaSizeClasses.blockSize(ofClass: ArenaSizeClasses.count) == ArenaSizeClasses.smallLimit)
  }

  @Test func everySizeMapsToTheSmallestClassThatHoldsIt() {
    for size in 0...ArenaSizeClasses.smallLimit {
      let c = ArenaSizeClasses.classIndex(forByteCount: size)
      let block = ArenaSizeClasses.blockSize(ofClass: c)
      #expect(block >= size)
      if c > 1 { #expect(ArenaSizeClasses.blockSize(ofClass: c - 1) < size, "size \(size) skips a smaller class") }
      if block < size || (c > 1 && ArenaSizeClasses.blockSize(ofClass: c - 1) >= size) { return }
    }
  }

  @Test func wasteIsBoundedAbove128AndExactBelow64() {
    var worst = 0.0
    var worstSize = 0
    for size in 1...ArenaSizeClasses.smallLimit {
      let block = ArenaSizeClasses.blockSize(ofClass: ArenaSizeClasses.classIndex(forByteCount: size))
      if size <= 64 { #expect(block == (size + 15) / 16 * 16) }
      if size > 128 {
        let waste = Double(block - size) / Double(size)
        if waste > worst { worst = waste; worstSize = size }
      }
    }
    #expect(worst <= 0.125, "worst waste \(worst) at \(worstSize) B")
  }

  @Test func runsWasteAtMostOneThirtySecond() {
    for c in 1...ArenaSizeClasses.count {
      let runBytes = HeapHandle.runPages(ofClass: c) * 4096
      let block = ArenaSizeClasses.blockSize(ofClass: c)
      #expect(runBytes / block >= 8, "class \(c): fewer than 8 blocks per run")
      #expect((runBytes % block) * 32 <= runBytes, "class \(c): run tail waste too large")
    }
  }

  @Test func usableSizeIsExactlyTheClassSize() {
    let arena = Arena.default
    for size in [1, 16, 17, 100, 128, 129, 1000, 4097, 32768] {
      let p = arena.allocate(byteCount: size)!
      #expect(arena.usableSize(of: p) == ArenaSizeClasses.blockSize(ofClass: ArenaSizeClasses.classIndex(forByteCount: size)))
      arena.deallocate(p)
    }
    let large = arena.allocate(byteCount: 40_000)!
    #expect(arena.usableSize(of: large) == 40_960)
    arena.deallocate(large)
  }
}
