// Layer: thread caches. Blocks parked in the cache of a thread that has stopped calling the
// allocator are taken back by the scavenger and by scavenge()/malloc_trim, without a lock or an
// atomic operation on the owner's fast path. Each test runs in a child process (its own default
// heap, its own scavenger).
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

/// A thread that fills its cache with small blocks of every size from 16 B to 1 KiB, then waits
/// (making no allocator call) until told to go on; it then allocates again, checks and exits.
final class CacheFiller: @unchecked Sendable {
  let filled = DispatchSemaphore(value: 0)
  let resume = DispatchSemaphore(value: 0)
  let refilled = DispatchSemaphore(value: 0)
  let finish = DispatchSemaphore(value: 0)
  let failures = Shared(0)
  let thread: Thread

  init() {
    let (filled, resume, refilled, finish, failures) = (filled, resume, refilled, finish, failures)
    thread = Thread {
      func round(_ seed: UInt8) {
        var blocks: [(UnsafeMutableRawPointer, Int)] = []
        blocks.reserveCapacity(1024)
        for size in stride(from: 16, through: 1024, by: 16) {
          for _ in 0..<8 {
            let p = Arena.default.allocate(byteCount: size)!
            Pattern.fill(p, size, seed: seed)
            blocks.append((p, size))
          }
        }
        for (p, n) in blocks where !Pattern.check(p, n, seed: seed) { failures.update { $0 += 1 } }
        for (p, _) in blocks { Arena.default.deallocate(p) }
      }
      round(1)
      filled.signal()
      resume.wait()   // idle: its cache is full and it makes no allocator call
      round(2)        // the cache, emptied by another thread, works as before
      refilled.signal()
      finish.wait()
    }
    thread.start()
  }
}

@Suite struct ThreadCacheTests {
  @Test func theScavengerTakesBackAnIdleThreadsCache() async {
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      setenv("ARENA_OPTIONS", "decay_ms:100", 1)
      HeapHandle.reloadOptions()
      Arena.default.deallocate(Arena.default.allocate(byteCount: 16)!)  // the main thread's cache
      let filler = CacheFiller()
      filler.filled.wait()
      let full = Arena.default.statistics
      usleep(1_000_000)  // ten decay times; the filler thread is blocked the whole time
      let idle = Arena.default.statistics
      filler.resume.signal()
      filler.refilled.wait()
      let again = Arena.default.statistics
      filler.finish.signal()
      FileHandle.standardError.write(Data("cached \(full.cachedBytes) -> \(idle.cachedBytes) -> \(again.cachedBytes) B, taken back \(idle.threadCacheReclaimedBytes) B\n".utf8))
      if full.cachedBytes < 100_000 { fail("setup: only \(full.cachedBytes) B cached") }
      if idle.threadCacheReclaimedBytes < full.cachedBytes / 2 { fail("taken back only \(idle.threadCacheReclaimedBytes) B") }
      if idle.cachedBytes > full.cachedBytes / 4 { fail("still cached: \(idle.cachedBytes) B") }
      if again.cachedBytes < 100_000 { fail("the filler's cache was not handed back: \(again.cachedBytes) B cached") }
      if filler.failures.current > 0 { fail("\(filler.failures.current) corrupted blocks") }
    }
    print("idle cache:", String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }

  @Test func scavengeTakesOtherThreadsCachesAtOnce() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      setenv("ARENA_OPTIONS", "scavenger:off", 1)
      HeapHandle.reloadOptions()
      let filler = CacheFiller()
      filler.filled.wait()
      let full = Arena.default.statistics
      _ = Arena.default.scavenge()
      let trimmed = Arena.default.statistics
      filler.resume.signal()
      filler.refilled.wait()
      filler.finish.signal()
      if full.cachedBytes < 100_000 { fail("setup: only \(full.cachedBytes) B cached") }
      if trimmed.threadCacheReclaimedBytes < full.cachedBytes / 2 { fail("taken back only \(trimmed.threadCacheReclaimedBytes) B of \(full.cachedBytes)") }
      if trimmed.cachedBytes > full.cachedBytes / 4 { fail("still cached: \(trimmed.cachedBytes) B") }
      if filler.failures.current > 0 { fail("\(filler.failures.current) corrupted blocks") }
    }
  }

  /// A consumer thread frees blocks another thread allocated: its bin overflows without ever
  /// being refilled, so its limit shrinks to the minimum (a quarter: 8 blocks of 512 B) instead of
  /// parking up to 32 blocks it will never reuse.
  @Test func aThreadThatOnlyFreesKeepsLittleInItsCache() async {
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      setenv("ARENA_OPTIONS", "scavenger:off", 1)
      HeapHandle.reloadOptions()
      let blocks = Shared<[UInt]>([])
      let producer = Thread {
        var made: [UInt] = []
        for _ in 0..<10_000 { made.append(UInt(bitPattern: Arena.default.allocate(byteCount: 512)!)) }
        blocks.update { $0 = made }
      }
      producer.start()
      while !producer.isFinished { usleep(1000) }  // its cache went back when it exited
      let freed = DispatchSemaphore(value: 0), finish = DispatchSemaphore(value: 0)
      let consumer = Thread {
        for a in blocks.current { Arena.default.deallocate(UnsafeMutableRawPointer(bitPattern: a)!) }
        freed.signal()
        finish.wait()
      }
      consumer.start()
      freed.wait()
      let c = HeapHandle.classIndex(forSize: 512)
      let cached = Arena.default.statistics.sizeClasses[c - 1].cachedBlocks
      finish.signal()
      FileHandle.standardError.write(Data("consumer caches \(cached) blocks of 512 B\n".utf8))
      if cached > 8 { fail("the consumer holds \(cached) blocks of 512 B") }
    }
    print("consumer:", String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }

  /// Threads allocate and free small blocks (the cache fast path) in bursts with short pauses,
  /// while the main thread takes their caches back as often as it can and the scavenger does too
  /// every 20 ms: no block may be handed out twice or lose its contents, whichever side wins each
  /// race.
  @Test func takingCachesRacesWithTheirOwnersWithoutLosingABlock() async {
    let result = await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      func fail(_ why: String) -> Never { FileHandle.standardError.write(Data((why + "\n").utf8)); exit(1) }
      setenv("ARENA_OPTIONS", "decay_ms:1", 1)
      HeapHandle.reloadOptions()
      let deadline = Date().addingTimeInterval(1.5)
      let failures = Shared(0)
      let threads = (0..<2).map { t in
        Thread {
          churnWithPatterns(
            seed: UInt64(t + 7), slots: 256, batch: 2000, until: deadline, failures: failures,
            size: { $0.below(512) + 1 }, pause: { if $0.below(4) == 0 { usleep(100) } })
        }
      }
      for thread in threads { thread.start() }
      var takes = 0
      while !threads.allSatisfy(\.isFinished) {
        _ = Arena.default.scavenge()
        takes += 1
      }
      let stats = Arena.default.statistics
      FileHandle.standardError.write(Data("\(takes) scavenges took back \(stats.threadCacheReclaimedBytes) B\n".utf8))
      if failures.current > 0 { fail("\(failures.current) corrupted blocks") }
      if stats.threadCacheReclaimedBytes == 0 { fail("no cache was ever taken back") }
    }
    print("racing:", String(decoding: result?.standardErrorContent ?? [], as: UTF8.self))
  }
}
