import ArenaAllocator
import Foundation

/// Deterministic xorshift generator (tests must be repeatable).
struct XorShift {
  var state: UInt64
  init(seed: UInt64) { state = seed | 1 }
  mutating func next() -> UInt64 {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return state
  }
  mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// Fills a block with a pattern derived from its address and a seed, and checks it later.
enum Pattern {
  static func fill(_ p: UnsafeMutableRawPointer, _ count: Int, seed: UInt8) {
    let bytes = p.assumingMemoryBound(to: UInt8.self)
    var i = 0
    while i < count { bytes[i] = UInt8(truncatingIfNeeded: i &* 31) &+ seed; i += 1 }
  }
  static func check(_ p: UnsafeRawPointer, _ count: Int, seed: UInt8) -> Bool {
    let bytes = p.assumingMemoryBound(to: UInt8.self)
    var i = 0
    while i < count {
      if bytes[i] != UInt8(truncatingIfNeeded: i &* 31) &+ seed { return false }
      i += 1
    }
    return true
  }
}

/// Reads a field (in kB) of /proc/meminfo or /proc/self/status.
func procField(_ file: String, _ name: String) -> Int? {
  guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
  for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
    let digits = line.dropFirst(name.count + 1).filter { $0.isNumber }
    return Int(String(digits)).map { $0 * 1024 }
  }
  return nil
}

/// A value shared between test threads, guarded by a lock.
final class Shared<Value>: @unchecked Sendable {
  private var value: Value
  private let lock = NSLock()
  init(_ value: Value) { self.value = value }
  func update<R>(_ body: (inout Value) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
  var current: Value { update { $0 } }
}

/// A test thread's allocation churn on the default arena until `deadline`: `batch` times per round
/// it picks one of `slots` slots at random and frees its block (checking its pattern first) or
/// allocates a `size(&rng)`-byte block there and fills it; `pause` runs after each round. At the
/// end every remaining block is checked and freed. Corrupted blocks are counted in `failures`.
func churnWithPatterns(seed: UInt64, slots count: Int, batch: Int, until deadline: Date, failures: Shared<Int>,
                       size: (inout XorShift) -> Int, pause: (inout XorShift) -> Void = { _ in }) {
  var rng = XorShift(seed: seed)
  var slots = [(UnsafeMutableRawPointer, Int, UInt8)?](repeating: nil, count: count)
  var step = 0
  while Date() < deadline {
    for _ in 0..<batch {
      step += 1
      let i = rng.below(slots.count)
      if let (p, n, s) = slots[i] {
        if !Pattern.check(p, n, seed: s) { failures.update { $0 += 1 } }
        Arena.default.deallocate(p)
        slots[i] = nil
      } else {
        let n = size(&rng)
        let p = Arena.default.allocate(byteCount: n)!
        let s = UInt8(truncatingIfNeeded: step)
        Pattern.fill(p, n, seed: s)
        slots[i] = (p, n, s)
      }
    }
    pause(&rng)
  }
  for case let (p, n, s)? in slots {
    if !Pattern.check(p, n, seed: s) { failures.update { $0 += 1 } }
    Arena.default.deallocate(p)
  }
}
