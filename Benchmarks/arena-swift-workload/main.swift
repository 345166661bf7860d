// arena-swift-workload: a Swift/Foundation program for the allocator benchmark (run preloaded,
// like arena-workload). It builds a large model (arrays of structs with strings, nested
// dictionaries), JSON-encodes and decodes it several times, does the same per chunk in parallel
// with Dispatch's concurrentPerform, verifies every round trip, and prints
//
//   RESULT workload=swift-json ops=<customers encoded+decoded> seconds=<s> checksum=<hex>
//   PEAK hwm_kib=<VmHWM>
//
// Parameters (key=value): customers=1000 rounds=2 chunks=8 seed=1 idle=0.
// With idle=S (seconds), the program then sits idle with everything freed and prints its RSS
// after 0, 0.5, 1, 1.5, 2, 3, ... S seconds as `IDLE t=<s> rss_kib=<n>` (release latency).
// Exit status 3 when a round trip does not give back the model, 2 on bad usage.

import Dispatch
import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

// MARK: - Parameters

func fail(_ code: Int32, _ message: String) -> Never {
  FileHandle.standardError.write(Data("\(message) (workload=swift-json)\n".utf8))
  exit(code)
}

struct Parameters {
  var customers = 1000, rounds = 2, chunks = 8, idle = 0
  var seed: UInt64 = 1

  init(_ args: [String]) {
    var kv: [String: String] = [:]
    for arg in args {
      if arg == "help" || arg == "--help" || arg == "-h" {
        print("usage: arena-swift-workload [customers=1000] [rounds=2] [chunks=8] [seed=1] [idle=0]")
        exit(0)
      }
      guard let eq = arg.firstIndex(of: "=") else { fail(2, "bad parameter '\(arg)'") }
      kv[String(arg[..<eq])] = String(arg[arg.index(after: eq)...])
    }
    func take(_ key: String, _ def: Int) -> Int {
      guard let v = kv.removeValue(forKey: key) else { return def }
      guard let x = Int(v) else { fail(2, "bad value for \(key): '\(v)'") }
      return x
    }
    customers = max(1, take("customers", customers))
    rounds = max(1, take("rounds", rounds))
    chunks = max(1, take("chunks", chunks))
    seed = UInt64(truncatingIfNeeded: take("seed", 1))
    idle = max(0, take("idle", 0))
    if let unknown = kv.keys.sorted().first { fail(2, "unknown parameter '\(unknown)'") }
  }
}

// MARK: - Deterministic PRNG (xorshift64*)

struct Rng {
  var state: UInt64
  init(_ seed: UInt64, stream: UInt64) {
    var z = seed &+ 0x9E37_79B9_7F4A_7C15 &* (stream &+ 1)
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    state = z == 0 ? 0x2545_F491_4F6C_DD1D : z
  }
  mutating func next() -> UInt64 {
    state ^= state >> 12
    state ^= state << 25
    state ^= state >> 27
    return state &* 0x2545_F491_4F6C_DD1D
  }
  mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int((next() >> 11) % UInt64(hi - lo + 1)) }
  mutating func pick<T>(_ xs: [T]) -> T { xs[int(0, xs.count - 1)] }
  mutating func word(_ minLen: Int, _ maxLen: Int) -> String {
    let letters = Array("abcdefghijklmnopqrstuvwxyzäöüéß")
    var s = ""
    for _ in 0..<int(minLen, maxLen) { s.append(pick(letters)) }
    return s
  }
}

// MARK: - Model

struct Address: Codable, Equatable {
  var street: String
  var city: String
  var postalCode: String
  var geo: [Double]
}

struct LineItem: Codable, Equatable {
  var sku: String
  var quantity: Int
  var priceCents: Int
  var notes: String?
}

struct Order: Codable, Equatable {
  var id: Int
  var status: String
  var items: [LineItem]
  var metadata: [String: String]
}

struct Customer: Codable, Equatable {
  var id: Int
  var name: String
  var email: String
  var tags: [String]
  var address: Address
  var orders: [Order]
  var preferences: [String: [String: Int]]
  var active: Bool
}

struct Model: Codable, Equatable {
  var version: Int
  var generatedBy: String
  var customers: [Customer]
}

let cities = ["Zürich", "Berlin", "Lisboa", "Kraków", "Osaka", "São Paulo", "Montréal", "Reykjavík"]
let statuses = ["new", "paid", "shipped", "delivered", "returned"]
let tagPool = (0..<64).map { "tag-\($0)" }

func makeCustomer(_ id: Int, _ r: inout Rng) -> Customer {
  let name = r.word(3, 9).capitalized + " " + r.word(4, 12).capitalized
  var orders: [Order] = []
  for o in 0..<r.int(0, 6) {
    var items: [LineItem] = []
    for _ in 0..<r.int(1, 8) {
      items.append(
        LineItem(
          sku: "SKU-\(r.int(10000, 99999))-\(r.word(2, 4))", quantity: r.int(1, 20), priceCents: r.int(99, 99999),
          notes: r.int(0, 3) == 0 ? r.word(10, 60) : nil))
    }
    var meta: [String: String] = [:]
    for k in 0..<r.int(0, 5) { meta["k\(k)-\(r.word(2, 6))"] = r.word(1, 24) }
    orders.append(Order(id: id * 100 + o, status: r.pick(statuses), items: items, metadata: meta))
  }
  var prefs: [String: [String: Int]] = [:]
  for g in 0..<r.int(1, 4) {
    var inner: [String: Int] = [:]
    for _ in 0..<r.int(1, 6) { inner[r.word(3, 10)] = r.int(-1000, 1000) }
    prefs["group\(g)"] = inner
  }
  return Customer(
    id: id, name: name, email: name.lowercased().replacingOccurrences(of: " ", with: ".") + "\(id)@example.org",
    tags: (0..<r.int(0, 8)).map { _ in r.pick(tagPool) },
    address: Address(
      street: "\(r.int(1, 999)) \(r.word(5, 14).capitalized) Street", city: r.pick(cities),
      postalCode: String(r.int(1000, 99999)), geo: [Double(r.int(-720, 720)) / 8, Double(r.int(-1440, 1440)) / 8]),
    orders: orders, preferences: prefs, active: r.int(0, 1) == 1)
}

// MARK: - Helpers

func fnv1a(_ data: Data) -> UInt64 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  data.withUnsafeBytes { raw in
    for b in raw { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
  }
  return h
}

func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func makeEncoder() -> JSONEncoder {
  let e = JSONEncoder()
  e.outputFormatting = [.sortedKeys]
  return e
}

final class Results: @unchecked Sendable {
  private let lock = NSLock()
  private var hashes: [Int: UInt64] = [:]
  private var failures: [String] = []
  func record(_ i: Int, _ h: UInt64) { lock.lock(); hashes[i] = h; lock.unlock() }
  func fail(_ s: String) { lock.lock(); failures.append(s); lock.unlock() }
  var all: ([Int: UInt64], [String]) { lock.lock(); defer { lock.unlock() }; return (hashes, failures) }
}

/// VmHWM in KiB (the parent's ru_maxrss also counts the spawning process's RSS at exec).
func peakResidentKiB() -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
  for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
    return Int(line.dropFirst(6).filter { $0.isNumber }) ?? -1
  }
  return -1
}

// MARK: - Run

func run() {

  let p = Parameters(Array(CommandLine.arguments.dropFirst()))
  let customerCount = p.customers, rounds = p.rounds, chunks = p.chunks
  let t0 = now()
  var rng = Rng(p.seed, stream: 700)
  let model = Model(
    version: 3, generatedBy: "arena-swift-workload",
    customers: (0..<customerCount).map { makeCustomer($0, &rng) })
  var checksum: UInt64 = 0
  var modelHash: UInt64 = 0
  var ops = 0

  for round in 0..<rounds {
    // Whole-model round trip on this thread.
    let data: Data
    let decoded: Model
    do {
      data = try makeEncoder().encode(model)
      decoded = try JSONDecoder().decode(Model.self, from: data)
    } catch { fail(3, "VERIFY FAILED: round \(round): JSON round trip threw \(error)") }
    guard decoded == model else { fail(3, "VERIFY FAILED: round \(round): decoded model differs from the original") }
    let h = fnv1a(data)
    if round == 0 { modelHash = h; checksum = h } else if h != modelHash {
      fail(3, "VERIFY FAILED: round \(round): encoding is not reproducible")
    }
    ops += 2 * customerCount

    // Untyped round trip (NSDictionary/NSArray trees) and some string work on the result.
    guard let tree = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let list = tree["customers"] as? [[String: Any]], list.count == customerCount
    else { fail(3, "VERIFY FAILED: round \(round): JSONSerialization did not give back \(customerCount) customers") }
    var byEmail: [String: Int] = [:]
    for c in list {
      guard let email = c["email"] as? String, let id = c["id"] as? Int else {
        fail(3, "VERIFY FAILED: round \(round): customer without email/id")
      }
      byEmail[email.uppercased()] = id
    }
    guard byEmail.count == Set(model.customers.map { $0.email.uppercased() }).count else {
      fail(3, "VERIFY FAILED: round \(round): email index has \(byEmail.count) entries")
    }

    // Chunks encoded and decoded in parallel.
    let results = Results()
    let per = (customerCount + chunks - 1) / chunks
    DispatchQueue.concurrentPerform(iterations: chunks) { i in
      let lo = min(i * per, customerCount), hi = min(lo + per, customerCount)
      let slice = Array(model.customers[lo..<hi])
      do {
        let d = try makeEncoder().encode(slice)
        let back = try JSONDecoder().decode([Customer].self, from: d)
        if back != slice { results.fail("chunk \(i) differs after the round trip") }
        // Derived data: a per-chunk summary with fresh strings and dictionaries.
        var totals: [String: Int] = [:]
        for c in back {
          for o in c.orders { totals[c.address.city + "/" + o.status, default: 0] += o.items.reduce(0) { $0 + $1.quantity * $1.priceCents } }
        }
        let summary = try makeEncoder().encode(totals)
        results.record(i, fnv1a(d) ^ (fnv1a(summary) &* 31))
      } catch {
        results.fail("chunk \(i) threw \(error)")
      }
    }
    let (hashes, failures) = results.all
    if let f = failures.first { fail(3, "VERIFY FAILED: round \(round): \(f)") }
    guard hashes.count == chunks else { fail(3, "VERIFY FAILED: round \(round): \(hashes.count) of \(chunks) chunks reported") }
    for i in 0..<chunks { checksum = (checksum &* 0x100_0000_01b3) ^ (hashes[i] ?? 0) &+ UInt64(round) }
    ops += 2 * customerCount
  }

  let seconds = now() - t0
  print("PEAK hwm_kib=\(peakResidentKiB())")
  print("RESULT workload=swift-json ops=\(ops) seconds=\(String(format: "%.6f", seconds)) checksum=\(String(checksum, radix: 16))")
}

run()

/// Resident set size in KiB (VmRSS).
func residentKiB() -> Int {
  guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
  for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
    return Int(line.dropFirst(6).filter { $0.isNumber }) ?? -1
  }
  return -1
}

let idleSeconds = Parameters(Array(CommandLine.arguments.dropFirst())).idle
if idleSeconds > 0 {
  let start = now()
  var marks: [Double] = [0, 0.5, 1, 1.5, 2]
  if idleSeconds > 2 { marks += (3...idleSeconds).map(Double.init) }
  for mark in marks where mark <= Double(idleSeconds) {
    let wait = start + mark - now()
    if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
    print("IDLE t=\(mark) rss_kib=\(residentKiB())")
  }
}
