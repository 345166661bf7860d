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
