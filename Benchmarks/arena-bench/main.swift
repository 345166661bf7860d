// arena-bench: side-by-side allocator benchmark driver.
//
//   swift build -c release --product ArenaMalloc
//   swift build -c release --product arena-bench      (and arena-workload, arena-swift-workload)
//   .build/release/arena-bench [--short | --full] [--workloads a,b] [--allocators a,b]
//                              [--reps N] [--idle S] [--json PATH] [--svg PATH] [--list]
//
// Runs every workload (arena-workload / arena-swift-workload, found next to this executable) once
// per allocator per repetition, each in its own child process with LD_PRELOAD set only in the
// child's environment, strictly one child at a time, allocators alternating round-robin across
// repetitions. Measures the time the workload reports, peak RSS (wait4's ru_maxrss) and, for
// spike-idle, VmRSS every 50 ms. Prints tables, writes all raw samples as JSON and a chart as SVG.
// python-dict and swiftc run real programs (python3, swiftc from PATH; skipped when missing) under
// the allocator through `arena-workload exec`, which times them and hashes their stdout.
// Exits 1 when any run failed (crash, wrong data, checksum differing between allocators, timeout).
//
// This driver is not allocator code: it uses Foundation freely.

import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif

// MARK: - Small utilities

func monotonicNow() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func writeStderr(_ s: String) {
  let bytes = Array(s.utf8)
  var off = 0
  while off < bytes.count {
    let n = bytes[off...].withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count) }
    if n <= 0 { if errno == EINTR { continue }; return }
    off += n
  }
}

func fatal(_ message: String, code: Int32 = 2) -> Never {
  writeStderr("arena-bench: \(message)\n")
  exit(code)
}

func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }
func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

func fmt(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

func mib(_ kib: Int) -> String {
  let m = Double(kib) / 1024
  if m >= 1000 { return String(format: "%.0fM", m) }
  if m >= 100 { return String(format: "%.0fM", m) }
  return String(format: "%.1fM", m)
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
  let n = s.count
  if n >= width { return s }
  let fill = String(repeating: " ", count: width - n)
  return left ? fill + s : s + fill
}

func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  if s.isEmpty { return .nan }
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func shellQuote(_ s: String) -> String {
  if s.allSatisfy({ $0.isLetter || $0.isNumber || "-_=./,:+@%".contains($0) }) && !s.isEmpty { return s }
  return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Directory of this executable (the build products directory).
func executableDirectory() -> String {
  var buf = [UInt8](repeating: 0, count: 4096)
  let n = buf.withUnsafeMutableBufferPointer { p in
    p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { readlink("/proc/self/exe", $0, p.count - 1) }
  }
  let path: String
  if n > 0 {
    path = String(decoding: buf[0..<n], as: UTF8.self)
  } else {
    path = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
  }
  return URL(fileURLWithPath: path).deletingLastPathComponent().path
}

/// VmRSS of a process in KiB, or nil when it cannot be read.
func readVmRSS(pid: pid_t) -> Int? {
  let fd = open("/proc/\(pid)/status", O_RDONLY | O_CLOEXEC)
  if fd < 0 { return nil }
  defer { close(fd) }
  var buf = [UInt8](repeating: 0, count: 4096)
  var total = 0
  while total < buf.count {
    let n = buf[total...].withUnsafeMutableBufferPointer { read(fd, $0.baseAddress, $0.count) }
    if n <= 0 { break }
    total += n
  }
  let text = String(decoding: buf[0..<total], as: UTF8.self)
  for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
    let digits = line.dropFirst(6).filter { $0.isNumber }
    return Int(digits)
  }
  return nil
}

/// Busy and total CPU seconds of the whole machine so far (first line of /proc/stat).
func machineCPUSeconds() -> (busy: Double, total: Double)? {
  guard let s = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
    let line = s.split(separator: "\n").first, line.hasPrefix("cpu ")
  else { return nil }
  let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
  guard v.count >= 4 else { return nil }
  let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
  let total = v.prefix(8).reduce(0, +)
  let idle = v[3] + (v.count > 4 ? v[4] : 0)  // idle + iowait
  return ((total - idle) / tick, total / tick)
}

/// CPU seconds used by this process (the driver itself).
func selfCPUSeconds() -> Double {
  var u = rusage()
  getrusage(RUSAGE_SELF.rawValue, &u)
  return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) * 1e-6 + Double(u.ru_stime.tv_sec)
    + Double(u.ru_stime.tv_usec) * 1e-6
}

// MARK: - Options

enum Mode: String, Codable {
  case short, normal = "default", full
}

struct Options {
  var mode: Mode = .normal
  var workloads: [String]? = nil
  var allocators: [String]? = nil
  var jsonPath = "arena-bench.json"
  var svgPath = "arena-bench.svg"
  var reps: Int? = nil
  var idle: Double? = nil
  var timeout: Double? = nil
  var list = false
  var verbose = false

  static let usage = """
    usage: arena-bench [--short | --full] [--workloads a,b,...] [--allocators a,b,...]
                       [--reps N] [--idle SECONDS] [--timeout SECONDS] [--json PATH] [--svg PATH]
                       [--list] [--verbose]

      --short        CI mode: small sizes, 1 repetition, a few seconds in total
      (default)      a few minutes on 2 cores, 3 repetitions (spike-idle: 1)
      --full         larger sizes, 5 repetitions (spike-idle: 3)
      --workloads    subset of: \(workloadNames.joined(separator: ","))
      --allocators   subset of: \(allocatorNames.joined(separator: ","))
      --reps N       repetitions per allocator (overrides the mode)
      --idle S       idle seconds for spike-idle (overrides the mode; >= 10 to get "+10 s")
      --timeout S    kill a child after S seconds and count it as failed (default 60/300/900 s)
      --json PATH    raw samples (default arena-bench.json)
      --svg PATH     chart (default arena-bench.svg)
      --list         print workloads, allocators and the commands, then exit
      --verbose      print each child's command line and output

    Build first:  swift build -c release --product ArenaMalloc && swift build -c release --product arena-bench
                  swift build -c release --product arena-workload && swift build -c release --product arena-swift-workload
    Peers:        Benchmarks/install-peers.sh (jemalloc, mimalloc, tcmalloc from Debian packages)
    Overrides:    ARENA_BENCH_LIB_<NAME>=/path/lib.so (e.g. ARENA_BENCH_LIB_MIMALLOC) picks another library
    """

  static func parse(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value(_ flag: String) -> String {
      i += 1
      guard i < args.count else { fatal("\(flag) needs a value\n\n\(usage)") }
      return args[i]
    }
    func list(_ s: String, known: [String], what: String) -> [String] {
      let items = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      for item in items where !known.contains(item) {
        fatal("unknown \(what) '\(item)' (known: \(known.joined(separator: ", ")))")
      }
      return items
    }
    while i < args.count {
      let a = args[i]
      var flag = a, inline: String? = nil
      if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
        flag = String(a[..<eq])
        inline = String(a[a.index(after: eq)...])
      }
      func v() -> String { inline ?? value(flag) }
      switch flag {
      case "--short": o.mode = .short
      case "--full": o.mode = .full
      case "--default": o.mode = .normal
      case "--workloads": o.workloads = list(v(), known: workloadNames, what: "workload")
      case "--allocators": o.allocators = list(v(), known: allocatorNames, what: "allocator")
      case "--json": o.jsonPath = v()
      case "--svg": o.svgPath = v()
      case "--reps":
        guard let n = Int(v()), n >= 1 else { fatal("--reps needs a positive integer") }
        o.reps = n
      case "--idle":
        guard let s = Double(v()), s >= 0 else { fatal("--idle needs a number of seconds") }
        o.idle = s
      case "--timeout":
        guard let s = Double(v()), s > 0 else { fatal("--timeout needs a positive number of seconds") }
        o.timeout = s
      case "--list": o.list = true
      case "--verbose", "-v": o.verbose = true
      case "--help", "-h":
        print(usage)
        exit(0)
      default: fatal("unknown option '\(a)'\n\n\(usage)")
      }
      i += 1
    }
    return o
  }
}

// MARK: - Workloads and allocators

let workloadNames = [
  "churn", "mixed", "prodcons", "realloc", "large", "server", "spike-idle", "swift-json", "xfer", "larson", "leak",
  "python-dict", "swiftc",
]
let allocatorNames = ["arena", "glibc", "jemalloc", "mimalloc", "tcmalloc", "arena-noscav", "arena-hardened"]
let peerNames = ["glibc", "jemalloc", "mimalloc", "tcmalloc"]

struct WorkloadSpec: Codable {
  var name: String
  var executable: String  // file name next to arena-bench
  var arguments: [String]
  var reps: Int
  var sampleRSS: Bool
  var idleSeconds: Double?
  var timeoutSeconds: Double
  var summary: String
  /// Added to the child's environment (the exec workloads: PYTHONMALLOC=malloc for python-dict).
  var environment: [String: String]? = nil
  /// A program the workload runs, looked up in PATH; the workload is skipped when it is missing.
  var requiresProgram: String? = nil
}

/// Scratch directory for generated inputs (the swiftc workload's source file), removed at the end.
let scratchDirectory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("arena-bench-\(getpid())").path

/// Number of generated struct/function groups in the swiftc workload's source file.
func swiftcUnits(_ mode: Mode) -> Int { mode == .short ? 3 : mode == .normal ? 30 : 100 }

/// The python-dict workload's script: a dict of n entries (lists, dicts and strings), JSON round
/// trip, sorted keys, and a hash of the dump, so the output is the same under every allocator.
func pythonDictScript(entries n: Int) -> String {
  "import hashlib,json;n=\(n);"
    + "d={str(i):[i,str(i*7),{\"v\":i%97}] if i%3==0 else {\"id\":i,\"name\":\"item-\"+str(i),\"tags\":[\"t\"+str(i%5)]*(i%4),\"w\":i/8}"
    + " if i%3==1 else \"s\"*(i%29) for i in range(n)};"
    + "s=json.dumps(d);e=json.loads(s);ks=sorted(e);assert len(ks)==n and e==d;"
    + "print(hashlib.sha256(s.encode()).hexdigest(),len(s),ks[0],ks[-1])"
}

func workloadSpecs(mode: Mode, repsOverride: Int?, idleOverride: Double?, timeoutOverride: Double?) -> [WorkloadSpec] {
  // (short, default, full) arguments for each workload.
  func pick(_ s: [String], _ d: [String], _ f: [String]) -> [String] {
    switch mode {
    case .short: return s
    case .normal: return d
    case .full: return f
    }
  }
  let reps = repsOverride ?? (mode == .short ? 1 : mode == .normal ? 3 : 5)
  let spikeReps = repsOverride ?? (mode == .full ? 3 : 1)
  let idle = idleOverride ?? (mode == .short ? 1.2 : mode == .normal ? 11 : 15)
  let timeout: Double = timeoutOverride ?? (mode == .short ? 60 : mode == .normal ? 300 : 900)
  let c = "arena-workload"
  return [
    WorkloadSpec(
      name: "churn", executable: c,
      arguments: ["churn"]
        + pick(["ops=300000", "window=5000"], ["ops=6000000", "window=20000"], ["ops=20000000", "window=50000"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "Swift-shaped 16-128 B objects and temporaries, window of live blocks, 1 thread"),
    WorkloadSpec(
      name: "mixed", executable: c,
      arguments: ["mixed", "threads=2"]
        + pick(["ops=100000", "window=1000"], ["ops=1500000", "window=4000"], ["ops=5000000", "window=8000"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "16 B-64 KiB skewed small (some calloc/posix_memalign), 2 threads with own windows"),
    WorkloadSpec(
      name: "prodcons", executable: c,
      arguments: ["prodcons"] + pick(["ops=100000"], ["ops=1000000"], ["ops=4000000"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "16-512 B allocated on one thread, verified and freed on another (SPSC ring)"),
    WorkloadSpec(
      name: "realloc", executable: c,
      arguments: ["realloc"]
        + pick(
          ["buffers=16", "rounds=2", "max=262144"], ["buffers=64", "rounds=10", "max=1048576"],
          ["buffers=128", "rounds=20", "max=1048576"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "realloc growth 16 B -> 1 MiB (doubling and small steps), many buffers interleaved"),
    WorkloadSpec(
      name: "large", executable: c,
      arguments: ["large"] + pick(["ops=300", "window=8"], ["ops=4000", "window=16"], ["ops=12000", "window=32"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "64 KiB-4 MiB blocks, every page touched, window of 16"),
    WorkloadSpec(
      name: "server", executable: c,
      arguments: ["server", "threads=2"]
        + pick(
          ["cycles=3", "requests=500", "idle_ms=50"], ["cycles=10", "requests=3000", "idle_ms=150"],
          ["cycles=20", "requests=6000", "idle_ms=250"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "request bursts on 2 worker threads (mixed sizes, realloc'd responses, a cache), idle pauses"),
    WorkloadSpec(
      name: "spike-idle", executable: c,
      arguments: ["spike-idle", "threads=2", "mix=count", "idle=\(idle)"] + pick(["mib=64"], ["mib=1024"], ["mib=2048"]),
      reps: spikeReps, sampleRSS: true, idleSeconds: idle, timeoutSeconds: timeout + idle,
      summary: "allocate a spike (half the blocks 16 B-1 KiB, half 4-68 KiB; 2 threads), free 90% randomly, sit idle"),
    WorkloadSpec(
      name: "swift-json", executable: "arena-swift-workload",
      arguments: pick(
        ["customers=200", "rounds=1", "chunks=4"], ["customers=1000", "rounds=2", "chunks=8"],
        ["customers=3000", "rounds=3", "chunks=8"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "Foundation: build a model, JSONEncoder/Decoder round trips, concurrentPerform"),
    WorkloadSpec(
      name: "xfer", executable: c,
      arguments: ["xfer", "threads=2", "queue=32", "batch=1024", "max=256"]
        + pick(["ops=1000000"], ["ops=16000000"], ["ops=40000000"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "2 producers fill batches of 1024 blocks of 8-256 B, 2 consumers verify and free them (remote frees)"),
    WorkloadSpec(
      name: "larson", executable: c,
      arguments: ["larson", "threads=2", "min=16", "max=1000"]
        + pick(
          ["slots=1000", "steps=5000", "rounds=20"], ["slots=1000", "steps=20000", "rounds=200"],
          ["slots=4000", "steps=50000", "rounds=200"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "2 threads replace random 16-1000 B blocks in slot arrays that move to the next thread every round"),
    WorkloadSpec(
      name: "leak", executable: c,
      arguments: ["leak", "free_every=16"] + pick(["ops=300000"], ["ops=3000000"], ["ops=8000000"]),
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "a growing cache: 16-256 B blocks kept, one random block freed every 16th allocation, 1 thread"),
    WorkloadSpec(
      name: "python-dict", executable: c,
      arguments: ["exec", "python3", "-c", pythonDictScript(entries: mode == .short ? 20_000 : mode == .normal ? 100_000 : 300_000)],
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "CPython with PYTHONMALLOC=malloc: dict of str -> list/dict/str, json dumps/loads, sorted keys, sha256",
      environment: ["PYTHONMALLOC": "malloc"], requiresProgram: "python3"),
    WorkloadSpec(
      name: "swiftc", executable: c,
      arguments: [
        "exec", "swiftc", "-O", "-c", "\(scratchDirectory)/gen.swift", "-o", "\(scratchDirectory)/gen.o",
        "-module-cache-path", "\(scratchDirectory)/module-cache",
        // Otherwise the frontend skips LLVM when the existing .o has the same IR hash (every run after the first).
        "-Xfrontend", "-disable-incremental-llvm-codegen",
      ],
      reps: reps, sampleRSS: false, timeoutSeconds: timeout,
      summary: "swiftc -O -c of a generated file (\(swiftcUnits(mode)) structs with generic calls); driver and frontend",
      requiresProgram: "swiftc"),
  ]
}

/// Full path of a program found in PATH, or nil.
func findInPath(_ name: String) -> String? {
  if name.contains("/") { return isExecutable(name) ? name : nil }
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
  for dir in path.split(separator: ":") where !dir.isEmpty {
    let candidate = "\(dir)/\(name)"
    var st = stat()
    if isExecutable(candidate) && stat(candidate, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { return candidate }
  }
  return nil
}

/// Source of the swiftc workload: `units` small structs, each with a protocol conformance, a
/// synthesized Equatable, a method and a function that calls generic functions with it.
func swiftcSource(units: Int) -> String {
  var s = """
    // Generated by arena-bench for the swiftc workload.
    public protocol Shape { var area: Int { get } }
    public func larger<T: Shape>(_ a: T, _ b: T) -> T { a.area >= b.area ? a : b }
    public func sumAreas<T: Shape>(_ xs: [T]) -> Int { xs.reduce(0) { $0 &+ $1.area } }

    """
  for i in 0..<units {
    s += """

      public struct S\(i): Shape, Equatable {
        var w: Int
        var h: Int
        var label: String
        public var area: Int { w &* h &+ \(i) }
        func scaled(_ k: Int) -> S\(i) { S\(i)(w: w &* k, h: h &+ \(i % 5), label: label) }
      }
      public func use\(i)(_ k: Int) -> Int {
        let a = S\(i)(w: k, h: \(i % 7 + 1), label: "s\(i)")
        let b = larger(a, a.scaled(3))
        return sumAreas([a, b]) &+ (a == b ? 1 : 0) &+ b.label.utf8.count
      }

      """
  }
  return s
}

/// Writes the generated inputs of the selected workloads into the scratch directory, and compiles
/// the swiftc workload's file once, untimed and without preload, with the same command: that builds
/// the module cache (keyed by the options, -O included) and warms what a first compile pays for.
func prepareInputs(specs: [WorkloadSpec], mode: Mode) {
  guard let spec = specs.first(where: { $0.name == "swiftc" }) else { return }
  do {
    try FileManager.default.createDirectory(atPath: scratchDirectory, withIntermediateDirectories: true)
    try swiftcSource(units: swiftcUnits(mode)).write(
      toFile: "\(scratchDirectory)/gen.swift", atomically: true, encoding: .utf8)
  } catch {
    fatal("cannot write the swiftc workload's input into \(scratchDirectory): \(error)", code: 1)
  }
  // spec.arguments is ["exec", "swiftc", options...].
  guard spec.arguments.count > 2, let swiftc = findInPath(spec.arguments[1]) else { return }
  let p = Process()
  p.executableURL = URL(fileURLWithPath: swiftc)
  p.arguments = Array(spec.arguments.dropFirst(2))
  var env = ProcessInfo.processInfo.environment
  env.removeValue(forKey: "LD_PRELOAD")
  p.environment = env
  p.standardInput = FileHandle.nullDevice
  p.standardOutput = FileHandle.nullDevice
  do {
    try p.run()
    p.waitUntilExit()
    if p.terminationStatus != 0 { writeStderr("arena-bench: the untimed swiftc warm-up compile failed\n") }
  } catch {
    writeStderr("arena-bench: the untimed swiftc warm-up compile could not start: \(error)\n")
  }
}

struct AllocatorInfo: Codable {
  var name: String
  var library: String?  // nil: no preload (glibc)
  var available: Bool
  var note: String
  /// Appended to the child's ARENA_OPTIONS.
  var arenaOptions: String? = nil
  /// Run without --allocators naming it.
  var byDefault = true
}

func findPeerLibrary(_ candidates: [String]) -> String? {
  let dirs = [
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
    "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
  ]
  for name in candidates {
    for dir in dirs where fileExists("\(dir)/\(name)") { return "\(dir)/\(name)" }
  }
  return nil
}

func allocatorInfos(buildDir: String) -> [AllocatorInfo] {
  func env(_ name: String) -> String? {
    let key = "ARENA_BENCH_LIB_" + name.uppercased()
    if let v = ProcessInfo.processInfo.environment[key], !v.isEmpty { return v }
    return nil
  }
  var result: [AllocatorInfo] = []
  let arena = env("arena") ?? "\(buildDir)/libArenaMalloc.so"
  result.append(
    AllocatorInfo(
      name: "arena", library: arena, available: fileExists(arena),
      note: fileExists(arena) ? "" : "\(arena) not found: run `swift build -c release --product ArenaMalloc`"))
  // The same library with the scavenger thread off: what the scavenger costs in throughput.
  result.append(
    AllocatorInfo(
      name: "arena-noscav", library: arena, available: fileExists(arena), note: "arena with ARENA_OPTIONS=scavenger:off",
      arenaOptions: "scavenger:off", byDefault: false))
  // The same library hardened (canaries, poison, checked links, guard pages): what hardening costs.
  result.append(
    AllocatorInfo(
      name: "arena-hardened", library: arena, available: fileExists(arena), note: "arena with ARENA_OPTIONS=hardened:on",
      arenaOptions: "hardened:on", byDefault: false))
  result.append(AllocatorInfo(name: "glibc", library: nil, available: true, note: "system malloc, no preload"))
  let peers: [(String, [String], String)] = [
    ("jemalloc", ["libjemalloc.so.2", "libjemalloc.so"], "libjemalloc2"),
    (
      "mimalloc", ["libmimalloc.so.2", "libmimalloc.so.2.0", "libmimalloc.so.2.1", "libmimalloc.so.2.2", "libmimalloc.so"],
      "libmimalloc2.0"
    ),
    ("tcmalloc", ["libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so.4"], "libtcmalloc-minimal4"),
  ]
  for (name, files, pkg) in peers {
    if let path = env(name) ?? findPeerLibrary(files), fileExists(path) {
      result.append(AllocatorInfo(name: name, library: path, available: true, note: ""))
    } else {
      result.append(
        AllocatorInfo(
          name: name, library: nil, available: false,
          note: "library not found (package \(pkg)): run Benchmarks/install-peers.sh"))
    }
  }
  return result
}

// MARK: - Running one child

struct Phase: Codable {
  var name: String
  var time: Double  // seconds since the child was spawned
  var fields: [String: String]
}

struct RunRecord: Codable {
  var workload: String
  var allocator: String
  var rep: Int
  var sequence: Int
  var command: String
  var ok: Bool
  var failure: String?
  var exitCode: Int32?
  var signal: Int32?
  var seconds: Double?  // time reported by the workload (excludes process start and idle pauses)
  var wallSeconds: Double
  var userSeconds: Double
  var systemSeconds: Double
  var maxRSSKiB: Int  // wait4's ru_maxrss (includes the driver's RSS at exec: see peakRSSKiB)
  var hwmKiB: Int?  // VmHWM the child reported for itself just before exiting
  var ops: Int?
  var checksum: String?
  var result: [String: String]
  var phases: [Phase]
  var idleStart: Double?  // seconds since spawn when the child printed PHASE idle
  var rssSamples: [[Double]]  // [seconds since spawn, VmRSS KiB]
  var output: String  // output that is not RESULT/PHASE (trimmed), kept for failures

  /// Peak RSS of the workload: its own VmHWM when it reported one, else ru_maxrss. (On exec the
  /// kernel folds the old address space's high-water mark into ru_maxrss, and with posix_spawn that
  /// is the driver's, so ru_maxrss alone never reads below the driver's ~20 MB.)
  var peakRSSKiB: Int { hwmKiB.map { min($0, maxRSSKiB) } ?? maxRSSKiB }
}

func parseFields<S: StringProtocol>(_ words: [S]) -> [String: String] {
  var d: [String: String] = [:]
  for w in words {
    if let eq = w.firstIndex(of: "=") { d[String(w[..<eq])] = String(w[w.index(after: eq)...]) }
  }
  return d
}

final class Progress {
  let tty = isatty(2) != 0
  var last = ""
  func show(_ s: String) {
    if tty {
      writeStderr("\r\u{1B}[K" + s)
      last = s
    }
  }
  func line(_ s: String) {
    if tty { writeStderr("\r\u{1B}[K" + s + "\n" + last) } else { writeStderr(s + "\n") }
  }
  /// One line per step when stderr is not a terminal (CI logs), nothing otherwise.
  func step(_ s: String) {
    if !tty { writeStderr(s + "\n") }
  }
  func clear() {
    if tty { writeStderr("\r\u{1B}[K") }
    last = ""
  }
}

func runChild(
  spec: WorkloadSpec, allocator: AllocatorInfo, buildDir: String, rep: Int, sequence: Int,
  progress: Progress, progressPrefix: String, verbose: Bool
) -> RunRecord {
  let exe = "\(buildDir)/\(spec.executable)"
  let args = [exe] + spec.arguments
  var env = ProcessInfo.processInfo.environment
  env.removeValue(forKey: "LD_PRELOAD")
  // Same hash seed in every run, so Swift Dictionary/Set layouts (and their allocations) repeat.
  env["SWIFT_DETERMINISTIC_HASHING"] = "1"
  if let lib = allocator.library { env["LD_PRELOAD"] = lib }
  if let o = allocator.arenaOptions { env["ARENA_OPTIONS"] = (env["ARENA_OPTIONS"].map { $0 + "," } ?? "") + o }
  let extraEnv = (spec.environment ?? [:]).sorted { $0.key < $1.key }
  for (k, v) in extraEnv { env[k] = v }
  let command = extraEnv.map { "\($0.key)=\(shellQuote($0.value)) " }.joined()
    + (allocator.arenaOptions.map { _ in "ARENA_OPTIONS=\(shellQuote(env["ARENA_OPTIONS"]!)) " } ?? "")
    + (allocator.library.map { "LD_PRELOAD=\(shellQuote($0)) " } ?? "")
    + args.map(shellQuote).joined(separator: " ")

  var record = RunRecord(
    workload: spec.name, allocator: allocator.name, rep: rep, sequence: sequence, command: command, ok: false,
    failure: nil, exitCode: nil, signal: nil, seconds: nil, wallSeconds: 0, userSeconds: 0, systemSeconds: 0,
    maxRSSKiB: 0, hwmKiB: nil, ops: nil, checksum: nil, result: [:], phases: [], idleStart: nil, rssSamples: [], output: "")
  if verbose { progress.line("$ \(command)") }

  // Output pipe (stdout and stderr of the child), stdin from /dev/null.
  var fds: [Int32] = [0, 0]
  guard pipe(&fds) == 0 else {
    record.failure = "pipe failed: errno \(errno)"
    return record
  }
  let readFd = fds[0], writeFd = fds[1]
  // Close-on-exec for both ends (the driver is single-threaded, so no other spawn can race this);
  // the child gets the write end as its stdout/stderr through dup2, which clears the flag.
  _ = fcntl(readFd, F_SETFD, FD_CLOEXEC)
  _ = fcntl(writeFd, F_SETFD, FD_CLOEXEC)
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  posix_spawn_file_actions_adddup2(&actions, writeFd, 1)
  posix_spawn_file_actions_adddup2(&actions, writeFd, 2)
  defer { posix_spawn_file_actions_destroy(&actions) }

  let cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
  let cEnv: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
  defer {
    for p in cArgs { free(p) }
    for p in cEnv { free(p) }
  }
  var pid: pid_t = 0
  let start = monotonicNow()
  let rc = posix_spawn(&pid, exe, &actions, nil, cArgs, cEnv)
  close(writeFd)
  guard rc == 0 else {
    close(readFd)
    record.failure = "posix_spawn(\(exe)) failed: \(String(cString: strerror(rc)))"
    return record
  }

  var pending = [UInt8]()
  var otherLines: [String] = []
  var otherBytes = 0
  var resultLine: String? = nil
  var killedForTimeout = false
  let sampleInterval = 0.05
  var nextSample = start
  var nextProgress = start + 0.5
  var buf = [UInt8](repeating: 0, count: 65536)

  func handleLine(_ line: String) {
    if line.hasPrefix("RESULT ") {
      resultLine = line
    } else if line.hasPrefix("PEAK ") {
      record.hwmKiB = parseFields(line.split(separator: " ").dropFirst().map { $0 })["hwm_kib"].flatMap(Int.init)
        .flatMap { $0 > 0 ? $0 : nil }
    } else if line.hasPrefix("PHASE ") {
      let words = line.split(separator: " ")
      if words.count >= 3, let t = Double(words[2]) {
        let phase = Phase(name: String(words[1]), time: t - start, fields: parseFields(Array(words.dropFirst(3))))
        record.phases.append(phase)
        if phase.name == "idle" { record.idleStart = phase.time }
      }
    } else {
      otherBytes += line.utf8.count
      otherLines.append(line)
      if otherLines.count > 60 { otherLines.removeFirst(otherLines.count - 60) }
      if verbose { progress.line("  | \(line)") }
    }
  }

  while true {
    let now = monotonicNow()
    var waitMs: Int32 = 200
    if spec.sampleRSS { waitMs = Int32(max(0, min(200, (nextSample - now) * 1000))) }
    var pfd = pollfd(fd: readFd, events: Int16(POLLIN), revents: 0)
    let pr = poll(&pfd, 1, waitMs)
    if pr > 0 {
      let n = read(readFd, &buf, buf.count)
      if n == 0 { break }
      if n < 0 {
        if errno == EINTR || errno == EAGAIN { continue }
        break
      }
      pending.append(contentsOf: buf[0..<n])
      while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
        handleLine(String(decoding: pending[0..<nl], as: UTF8.self))
        pending.removeSubrange(0...nl)
      }
    } else if pr < 0 && errno != EINTR {
      break
    }
    let t = monotonicNow()
    if spec.sampleRSS && t >= nextSample {
      if let kib = readVmRSS(pid: pid) { record.rssSamples.append([t - start, Double(kib)]) }
      nextSample += sampleInterval
      if nextSample < t { nextSample = t + sampleInterval }
    }
    if t >= nextProgress {
      nextProgress = t + 0.5
      var s = "\(progressPrefix) \(fmt(t - start, 1))s"
      if let idle = record.idleStart {
        s += " (idle \(fmt(t - start - idle, 1))s"
        if let last = record.rssSamples.last { s += ", RSS \(mib(Int(last[1])))" }
        s += ")"
      } else if spec.sampleRSS, let last = record.rssSamples.last {
        s += " (RSS \(mib(Int(last[1]))))"
      }
      progress.show(s)
    }
    if !killedForTimeout && t - start > spec.timeoutSeconds {
      kill(pid, SIGKILL)
      killedForTimeout = true
    }
  }
  if !pending.isEmpty { handleLine(String(decoding: pending, as: UTF8.self)) }
  close(readFd)

  var status: Int32 = 0
  var usage = rusage()
  while wait4(pid, &status, 0, &usage) < 0 {
    if errno != EINTR {
      record.failure = "wait4 failed: errno \(errno)"
      return record
    }
  }
  record.wallSeconds = monotonicNow() - start
  record.userSeconds = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) * 1e-6
  record.systemSeconds = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) * 1e-6
  record.maxRSSKiB = Int(usage.ru_maxrss)
  record.output = otherLines.joined(separator: "\n")
  if otherBytes > 0 && otherLines.count == 60 { record.output = "[...]\n" + record.output }

  let termSignal = status & 0x7f
  if termSignal == 0 {
    record.exitCode = (status >> 8) & 0xff
  } else if termSignal != 0x7f {
    record.signal = termSignal
  }
  if let line = resultLine {
    let f = parseFields(line.split(separator: " ").dropFirst().map { $0 })
    record.result = f
    record.seconds = f["seconds"].flatMap(Double.init)
    record.ops = f["ops"].flatMap(Int.init)
    record.checksum = f["checksum"]
  }
  if killedForTimeout {
    record.failure = "timeout after \(Int(spec.timeoutSeconds)) s (killed)"
  } else if let sig = record.signal {
    let name = String(cString: strsignal(sig))
    record.failure = "killed by signal \(sig) (\(name))"
  } else if let code = record.exitCode, code != 0 {
    record.failure = "exit status \(code)"
  } else if resultLine == nil {
    record.failure = "no RESULT line"
  } else if record.seconds == nil {
    record.failure = "RESULT line without seconds"
  }
  if record.failure != nil, let first = otherLines.last(where: { $0.contains("FAILED") }) ?? otherLines.last {
    record.failure! += ": " + first
  }
  record.ok = record.failure == nil
  return record
}

// MARK: - Summaries

struct Cell: Codable {
  var workload: String
  var allocator: String
  var runs: Int
  var failed: Int
  var failure: String?
  var medianSeconds: Double?
  var minSeconds: Double?
  var maxSeconds: Double?
  var ratioToFastestPeer: Double?
  var ratioToGlibc: Double?
  var medianMaxRSSKiB: Int?
  var opsPerSecond: Double?
}

struct IdleSummary: Codable {
  var allocator: String
  var liveBytes: Int?
  var peakLiveBytes: Int?
  var peakRSSKiB: Int?
  var rssAtIdleKiB: Int?
  var rssIdlePlus1sKiB: Int?
  var rssIdlePlus10sKiB: Int?
  var rssAtWakeKiB: Int?
}

struct Report: Codable {
  var tool = "arena-bench"
  var version = 1
  var mode: Mode
  var date: String
  var host: [String: String]
  var commandLine: [String]
  var allocators: [AllocatorInfo]
  var workloads: [WorkloadSpec]
  var runs: [RunRecord]
  var cells: [Cell]
  var spikeIdle: [IdleSummary]
  var geomeanArenaOverMimalloc: Double?
  var geomeanArenaOverFastestPeer: Double?
  var geomeanArenaOverGlibc: Double?
  var failures: [String]
}

func summarize(runs: [RunRecord], workload: String, allocator: String) -> Cell {
  let rs = runs.filter { $0.workload == workload && $0.allocator == allocator }
  let ok = rs.filter { $0.ok }
  let times = ok.compactMap { $0.seconds }
  var c = Cell(workload: workload, allocator: allocator, runs: rs.count, failed: rs.count - ok.count)
  c.failure = rs.first(where: { !$0.ok })?.failure
  if !times.isEmpty && c.failed == 0 {
    c.medianSeconds = median(times)
    c.minSeconds = times.min()
    c.maxSeconds = times.max()
    c.medianMaxRSSKiB = Int(median(ok.map { Double($0.peakRSSKiB) }))
    let opsMedian = median(ok.compactMap { $0.ops.map(Double.init) })
    if let m = c.medianSeconds, m > 0, !opsMedian.isNaN { c.opsPerSecond = opsMedian / m }
  }
  return c
}

/// RSS (KiB) of the first sample at or after `t` seconds since spawn.
func rssAt(_ run: RunRecord, _ t: Double) -> Int? {
  guard let s = run.rssSamples.first(where: { $0[0] >= t - 0.001 }) else { return nil }
  // A sample more than 0.5 s late (child already gone) does not count.
  if s[0] - t > 0.5 { return nil }
  return Int(s[1])
}

func idleSummary(_ run: RunRecord) -> IdleSummary {
  var s = IdleSummary(allocator: run.allocator)
  s.liveBytes = run.result["live_bytes"].flatMap(Int.init)
  s.peakLiveBytes = run.result["peak_live_bytes"].flatMap(Int.init)
  s.peakRSSKiB = run.peakRSSKiB
  if let idle = run.idleStart {
    s.rssAtIdleKiB = run.phases.first(where: { $0.name == "idle" })?.fields["rss_kib"].flatMap(Int.init) ?? rssAt(run, idle)
    let idleLength = run.phases.first(where: { $0.name == "wake" }).map { $0.time - idle } ?? 0
    if idleLength >= 1 { s.rssIdlePlus1sKiB = rssAt(run, idle + 1) }
    if idleLength >= 10 { s.rssIdlePlus10sKiB = rssAt(run, idle + 10) }
    s.rssAtWakeKiB = run.phases.first(where: { $0.name == "wake" })?.fields["rss_kib"].flatMap(Int.init)
  }
  return s
}

func geomean(_ xs: [Double]) -> Double? {
  let v = xs.filter { $0 > 0 && $0.isFinite }
  if v.isEmpty { return nil }
  return exp(v.map { log($0) }.reduce(0, +) / Double(v.count))
}

// MARK: - SVG

let palette: [String: String] = [
  "arena": "#e4572e", "glibc": "#8c8c8c", "jemalloc": "#4c78a8", "mimalloc": "#54a24b", "tcmalloc": "#b279a2",
  "arena-noscav": "#f2a488", "arena-hardened": "#9e2a10",
]

func xmlEscape(_ s: String) -> String {
  s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

func makeSVG(
  mode: Mode, workloads: [String], allocators: [String], cells: [Cell], spikeRuns: [RunRecord], subtitle: String
) -> String {
  let width = 1000.0
  let margin = 60.0
  var out: [String] = []
  func text(
    _ x: Double, _ y: Double, _ s: String, size: Double = 12, anchor: String = "start", weight: String = "normal",
    color: String = "#222", rotate: Double? = nil
  ) {
    let r = rotate.map { " transform=\"rotate(\(fmt($0, 0)) \(fmt(x, 1)) \(fmt(y, 1)))\"" } ?? ""
    out.append(
      "<text x=\"\(fmt(x, 1))\" y=\"\(fmt(y, 1))\" font-size=\"\(fmt(size, 0))\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(color)\"\(r)>\(xmlEscape(s))</text>"
    )
  }
  func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, color: String = "#999", dash: String? = nil, w: Double = 1) {
    let d = dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
    out.append(
      "<line x1=\"\(fmt(x1, 1))\" y1=\"\(fmt(y1, 1))\" x2=\"\(fmt(x2, 1))\" y2=\"\(fmt(y2, 1))\" stroke=\"\(color)\" stroke-width=\"\(fmt(w, 1))\"\(d)/>"
    )
  }
  func legend(_ x0: Double, _ y: Double) {
    var x = x0
    for a in allocators {
      out.append(
        "<rect x=\"\(fmt(x, 1))\" y=\"\(fmt(y - 10, 1))\" width=\"12\" height=\"12\" fill=\"\(palette[a] ?? "#000")\"/>")
      text(x + 16, y, a)
      x += 24 + Double(a.count) * 7.5
    }
  }

  // Chart 1: relative throughput per workload.
  let c1Top = 90.0, c1Height = 260.0
  let plotW = width - 2 * margin
  var y = 30.0
  text(width / 2, y, "ArenaAllocator vs. peers — throughput (\(mode.rawValue) mode)", size: 18, anchor: "middle", weight: "bold")
  y += 20
  text(width / 2, y, subtitle, size: 11, anchor: "middle", color: "#555")
  legend(margin, 75)
  text(width - margin, 75, "bars: throughput relative to the fastest allocator (1.0 = fastest; higher is better)",
    size: 11, anchor: "end", color: "#555")
  let base = c1Top + c1Height
  for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
    let ty = base - tick * c1Height
    line(margin, ty, width - margin, ty, color: tick == 0 ? "#444" : "#ddd")
    text(margin - 6, ty + 4, fmt(tick, 2), size: 10, anchor: "end", color: "#555")
  }
  let groupW = plotW / Double(max(1, workloads.count))
  let barW = min(26, (groupW - 14) / Double(max(1, allocators.count)))
  for (wi, w) in workloads.enumerated() {
    let gx = margin + Double(wi) * groupW
    let wc = cells.filter { $0.workload == w }
    let best = wc.compactMap { $0.medianSeconds }.min()
    let startX = gx + (groupW - barW * Double(allocators.count)) / 2
    for (ai, a) in allocators.enumerated() {
      let x = startX + Double(ai) * barW
      guard let c = wc.first(where: { $0.allocator == a }) else { continue }
      if let m = c.medianSeconds, let b = best, m > 0 {
        let rel = b / m
        let h = rel * c1Height
        out.append(
          "<rect x=\"\(fmt(x + 1, 1))\" y=\"\(fmt(base - h, 1))\" width=\"\(fmt(barW - 2, 1))\" height=\"\(fmt(h, 1))\" fill=\"\(palette[a] ?? "#000")\"><title>\(xmlEscape("\(w) / \(a): median \(fmt(m, 3)) s, \(fmt(rel, 2)) of fastest"))</title></rect>"
        )
        text(x + barW / 2, base - h - 3, fmt(rel, 2), size: 8, anchor: "middle", color: "#333")
      } else if c.runs > 0 {
        text(x + barW / 2, base - 6, "✗", size: 14, anchor: "middle", weight: "bold", color: "#c00")
        text(x + barW / 2, base - 22, "failed", size: 8, anchor: "middle", color: "#c00", rotate: -90)
      }
    }
    // With many workloads the groups get narrow: smaller names, and the ops/s lines staggered.
    let narrow = groupW < 100
    text(gx + groupW / 2, base + 16, w, size: min(12, groupW / 6.5), anchor: "middle", weight: "bold")
    if let b = wc.filter({ $0.medianSeconds == best }).first, let ops = b.opsPerSecond {
      let s = ops >= 1e6 ? "\(fmt(ops / 1e6, 1)) M ops/s" : ops >= 1e3 ? "\(fmt(ops / 1e3, 1)) k ops/s" : "\(fmt(ops, 0)) ops/s"
      text(gx + groupW / 2, base + 30 + (narrow && wi % 2 == 1 ? 11 : 0), "best: \(s)", size: 9, anchor: "middle", color: "#555")
    }
  }

  // Chart 2: RSS over time for spike-idle.
  var height = base + 60
  if !spikeRuns.isEmpty {
    let c2Top = base + 90, c2Height = 300.0
    text(width / 2, c2Top - 30, "spike-idle — resident set size over time", size: 16, anchor: "middle", weight: "bold")
    legend(margin, c2Top - 8)
    // x: seconds relative to the idle start; y: MiB.
    var tMin = 0.0, tMax = 1.0, rMax = 1.0
    var liveMiB: Double? = nil
    for r in spikeRuns {
      let idle = r.idleStart ?? 0
      for s in r.rssSamples {
        tMin = min(tMin, s[0] - idle)
        tMax = max(tMax, s[0] - idle)
        rMax = max(rMax, s[1] / 1024)
      }
      if let lb = r.result["live_bytes"].flatMap(Double.init) { liveMiB = lb / 1_048_576 }
    }
    rMax *= 1.08
    let x0 = margin + 10, x1 = width - margin
    func px(_ t: Double) -> Double { x0 + (t - tMin) / (tMax - tMin) * (x1 - x0) }
    func py(_ r: Double) -> Double { c2Top + c2Height - r / rMax * c2Height }
    // Grid.
    let yStep = niceStep(rMax / 5)
    for v in stride(from: 0.0, through: rMax, by: yStep) {
      line(x0, py(v), x1, py(v), color: v == 0 ? "#444" : "#e3e3e3")
      text(x0 - 6, py(v) + 4, "\(fmt(v, 0))", size: 10, anchor: "end", color: "#555")
    }
    text(margin - 42, c2Top + c2Height / 2, "RSS (MiB)", size: 11, anchor: "middle", color: "#555", rotate: -90)
    let xStep = niceStep((tMax - tMin) / 10)
    var tx = (tMin / xStep).rounded(.down) * xStep
    while tx <= tMax {
      if tx >= tMin {
        line(px(tx), c2Top + c2Height, px(tx), c2Top + c2Height + 4, color: "#444")
        text(px(tx), c2Top + c2Height + 16, fmt(tx, xStep < 1 ? 1 : 0), size: 10, anchor: "middle", color: "#555")
      }
      tx += xStep
    }
    text((x0 + x1) / 2, c2Top + c2Height + 34, "seconds since the free phase ended (idle starts at 0)", size: 11,
      anchor: "middle", color: "#555")
    for (mark, label) in [(0.0, "idle"), (1.0, "+1 s"), (10.0, "+10 s")] where mark <= tMax {
      line(px(mark), c2Top, px(mark), c2Top + c2Height, color: "#777", dash: "4,3")
      text(px(mark) + 3, c2Top + 12, label, size: 10, color: "#555")
    }
    if let live = liveMiB, live < rMax {
      line(x0, py(live), x1, py(live), color: "#222", dash: "2,4")
      text(x1 - 4, py(live) - 4, "live data \(fmt(live, 0)) MiB", size: 10, anchor: "end", color: "#222")
    }
    for r in spikeRuns {
      let idle = r.idleStart ?? 0
      let pts = r.rssSamples.map { "\(fmt(px($0[0] - idle), 1)),\(fmt(py($0[1] / 1024), 1))" }.joined(separator: " ")
      if pts.isEmpty { continue }
      out.append(
        "<polyline fill=\"none\" stroke=\"\(palette[r.allocator] ?? "#000")\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"\(pts)\"><title>\(xmlEscape(r.allocator))</title></polyline>"
      )
    }
    height = c2Top + c2Height + 50
  }
  let header =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(fmt(width, 0))\" height=\"\(fmt(height, 0))\" viewBox=\"0 0 \(fmt(width, 0)) \(fmt(height, 0))\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
  return header + "\n" + out.joined(separator: "\n") + "\n</svg>\n"
}

func niceStep(_ raw: Double) -> Double {
  if raw <= 0 || !raw.isFinite { return 1 }
  let p = pow(10, floor(log10(raw)))
  let f = raw / p
  let n: Double = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10
  return n * p
}

// MARK: - Main

func main() -> Int32 {
  let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
  let buildDir = executableDirectory()
  let allSpecs = workloadSpecs(
    mode: options.mode, repsOverride: options.reps, idleOverride: options.idle, timeoutOverride: options.timeout)
  var specs = allSpecs.filter { options.workloads?.contains($0.name) ?? true }
  let infos = allocatorInfos(buildDir: buildDir)
  let wanted = infos.filter { options.allocators?.contains($0.name) ?? $0.byDefault }

  if options.list {
    print("build directory: \(buildDir)")
    for a in infos {
      print("allocator \(pad(a.name, 9)) \(a.available ? (a.library ?? "(no preload)") : "MISSING: \(a.note)")")
    }
    for s in allSpecs {
      let env = (s.environment ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\(shellQuote($0.value)) " }.joined()
      print("workload  \(pad(s.name, 11)) reps=\(s.reps)  \(env)\(s.executable) \(s.arguments.map(shellQuote).joined(separator: " "))")
      print("          \(s.summary)")
      if let prog = s.requiresProgram, findInPath(prog) == nil { print("          MISSING: \(prog) not found in PATH") }
    }
    return 0
  }

  // Workloads that run an outside program (python3, swiftc) are skipped when it is not installed.
  specs = specs.filter { spec in
    guard let prog = spec.requiresProgram, findInPath(prog) == nil else { return true }
    writeStderr("arena-bench: skipping workload \(spec.name): \(prog) not found in PATH\n")
    return false
  }
  if specs.isEmpty { fatal("no workload to run", code: 1) }

  // Preconditions: our library and the workload executables.
  if let arena = wanted.first(where: { $0.name == "arena" }), !arena.available {
    fatal(
      "\(arena.library ?? "libArenaMalloc.so") not found.\nBuild it first: swift build -c release --product ArenaMalloc",
      code: 1)
  }
  for exe in Set(specs.map { $0.executable }) where !isExecutable("\(buildDir)/\(exe)") {
    fatal("\(buildDir)/\(exe) not found.\nBuild it first: swift build -c release --product \(exe)", code: 1)
  }
  let allocators = wanted.filter { $0.available }
  for a in wanted where !a.available {
    writeStderr("arena-bench: skipping \(a.name): \(a.note)\n")
  }
  if allocators.isEmpty { fatal("no allocator to run", code: 1) }

  // Never two benchmarks at once on this machine.
  let lockFd = open("/tmp/arena-bench.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o666)
  if lockFd >= 0 && flock(lockFd, LOCK_EX | LOCK_NB) != 0 {
    writeStderr("arena-bench: another arena-bench is running; waiting for it to finish...\n")
    flock(lockFd, LOCK_EX)
  }
  prepareInputs(specs: specs, mode: options.mode)
  defer { try? FileManager.default.removeItem(atPath: scratchDirectory) }

  // Timings are only comparable on a quiet machine: say so when something else is busy.
  let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
  var busyAtStart: Double? = nil
  if let a = machineCPUSeconds() {
    usleep(500_000)
    if let b = machineCPUSeconds(), b.total > a.total {
      busyAtStart = (b.busy - a.busy) / (b.total - a.total)
      if busyAtStart! > 0.15 {
        writeStderr(
          "arena-bench: note: the machine is \(Int(busyAtStart! * 100))% busy before starting (\(cpus) CPUs): timings will be noisy\n"
        )
      }
    }
  }
  let cpuAtStart = machineCPUSeconds()
  let selfAtStart = selfCPUSeconds()

  let total = specs.reduce(0) { $0 + $1.reps * allocators.count }
  let progress = Progress()
  var runs: [RunRecord] = []
  var sequence = 0
  let benchStart = monotonicNow()
  writeStderr(
    "arena-bench: \(options.mode.rawValue) mode, \(specs.count) workloads × \(allocators.count) allocators (\(allocators.map { $0.name }.joined(separator: ", "))), \(total) runs, one at a time\n"
  )

  for spec in specs {
    progress.step(
      "arena-bench: \(spec.name): \(spec.reps) rep(s) × \(allocators.count) allocators (\(Int(monotonicNow() - benchStart)) s elapsed)")
    for rep in 0..<spec.reps {
      // Round-robin: every allocator once per repetition, starting point rotated each time.
      for k in 0..<allocators.count {
        let a = allocators[(k + rep) % allocators.count]
        sequence += 1
        let elapsed = Int(monotonicNow() - benchStart)
        let prefix =
          "[\(sequence)/\(total)] \(String(format: "%d:%02d", elapsed / 60, elapsed % 60)) \(spec.name) · \(a.name) · rep \(rep + 1)/\(spec.reps)"
        progress.show(prefix)
        let r = runChild(
          spec: spec, allocator: a, buildDir: buildDir, rep: rep, sequence: sequence, progress: progress,
          progressPrefix: prefix, verbose: options.verbose)
        if !r.ok { progress.line("FAILED \(spec.name) / \(a.name) (rep \(rep + 1)): \(r.failure ?? "?")\n  command: \(r.command)") }
        runs.append(r)
      }
    }
    // The checksum depends only on the workload's parameters: every allocator must agree.
    let okRuns = runs.indices.filter { runs[$0].workload == spec.name && runs[$0].ok }
    var reference: String? = nil
    if let g = okRuns.first(where: { runs[$0].allocator == "glibc" }) {
      reference = runs[g].checksum
    } else {
      var counts: [String: Int] = [:]
      for i in okRuns { counts[runs[i].checksum ?? "", default: 0] += 1 }
      reference = counts.max(by: { $0.value < $1.value })?.key
    }
    if let ref = reference {
      for i in okRuns where runs[i].checksum != ref {
        runs[i].ok = false
        runs[i].failure = "wrong checksum \(runs[i].checksum ?? "none") (expected \(ref), as glibc computes it)"
        progress.line("FAILED \(spec.name) / \(runs[i].allocator): \(runs[i].failure!)\n  command: \(runs[i].command)")
      }
    }
  }
  progress.clear()
  let benchSeconds = monotonicNow() - benchStart
  // CPU time other processes took from the machine while we ran (a noise indicator).
  var othersShare: Double? = nil
  if let a = cpuAtStart, let b = machineCPUSeconds(), b.total > a.total {
    let ours = runs.reduce(0.0) { $0 + $1.userSeconds + $1.systemSeconds } + (selfCPUSeconds() - selfAtStart)
    othersShare = max(0, (b.busy - a.busy) - ours) / (b.total - a.total)
  }

  // Summaries.
  let names = allocators.map { $0.name }
  var cells: [Cell] = []
  for spec in specs {
    var row = names.map { summarize(runs: runs, workload: spec.name, allocator: $0) }
    let fastestPeer = row.filter { peerNames.contains($0.allocator) }.compactMap { $0.medianSeconds }.min()
    let glibc = row.first(where: { $0.allocator == "glibc" })?.medianSeconds
    for i in row.indices {
      if let m = row[i].medianSeconds {
        if let f = fastestPeer, f > 0 { row[i].ratioToFastestPeer = m / f }
        if let g = glibc, g > 0 { row[i].ratioToGlibc = m / g }
      }
    }
    cells += row
  }

  // Table: time.
  let labelW = 12, cellW = 19
  var lines: [String] = []
  let reference = names.contains(where: { peerNames.contains($0) }) ? "fastest peer" : "none"
  lines.append(
    "Time: median of the workload's own timing; ×: median / \(reference)'s median (lower is better); ±: half the min–max range"
  )
  lines.append(pad("workload", labelW) + names.map { pad($0, cellW, left: true) }.joined())
  for spec in specs {
    var l = pad(spec.name, labelW)
    for n in names {
      let c = cells.first { $0.workload == spec.name && $0.allocator == n }!
      var s: String
      if let m = c.medianSeconds {
        let spread = (c.maxSeconds! - c.minSeconds!) / 2 / max(m, 1e-9) * 100
        s = "\(fmt(m, m < 10 ? 3 : 1))s"
        if let r = c.ratioToFastestPeer { s += " \(fmt(r, 2))×" }
        if c.runs > 1 { s += " ±\(fmt(spread, 0))%" }
      } else if c.runs == 0 {
        s = "—"
      } else {
        let f = c.failure ?? ""
        s =
          f.hasPrefix("timeout") ? "TIMEOUT"
          : f.hasPrefix("wrong checksum") ? "FAILED checksum"
          : f.hasPrefix("killed by signal") ? "FAILED sig \(f.split(separator: " ")[3])"
          : f.hasPrefix("exit status") ? "FAILED exit \(f.split(separator: " ")[2].prefix(while: { $0.isNumber }))"
          : "FAILED"
      }
      l += pad(s, cellW, left: true)
    }
    lines.append(l)
  }
  lines.append("")
  lines.append("Peak RSS (median of the child's VmHWM, which is at most wait4's ru_maxrss)")
  lines.append(pad("workload", labelW) + names.map { pad($0, cellW, left: true) }.joined())
  for spec in specs {
    var l = pad(spec.name, labelW)
    for n in names {
      let c = cells.first { $0.workload == spec.name && $0.allocator == n }!
      l += pad(c.medianMaxRSSKiB.map { mib($0) } ?? (c.runs == 0 ? "—" : "FAILED"), cellW, left: true)
    }
    lines.append(l)
    if spec.name == "server" {
      var l2 = pad("  idle RSS", labelW)
      for n in names {
        let ok = runs.filter { $0.workload == "server" && $0.allocator == n && $0.ok }
        let v = ok.compactMap { $0.result["idle_rss_kib"].flatMap(Double.init) }
        l2 += pad(v.isEmpty ? "—" : mib(Int(median(v))), cellW, left: true)
      }
      lines.append(l2)
    }
  }

  // Spike-idle.
  var idleSummaries: [IdleSummary] = []
  var spikeRunsForChart: [RunRecord] = []
  if let spike = specs.first(where: { $0.name == "spike-idle" }) {
    lines.append("")
    let idleLen = spike.idleSeconds ?? 0
    lines.append(
      "spike-idle: RSS after the free phase (idle \(fmt(idleLen, 1)) s, sampled every 50 ms); ×: multiple of live bytes"
    )
    let cols = ["live", "peak RSS", "at idle", "idle +1 s", "idle +10 s", "end of idle"]
    lines.append(pad("allocator", labelW) + cols.map { pad($0, 17, left: true) }.joined())
    for n in names {
      let rs = runs.filter { $0.workload == "spike-idle" && $0.allocator == n }
      guard !rs.isEmpty else { continue }
      guard let r = rs.first(where: { $0.ok }) else {
        lines.append(pad(n, labelW) + pad("FAILED: \(rs.first?.failure ?? "?")", 17 * cols.count, left: false))
        idleSummaries.append(IdleSummary(allocator: n))
        continue
      }
      // Median over repetitions for each column.
      let sums = rs.filter { $0.ok }.map(idleSummary)
      func med(_ k: KeyPath<IdleSummary, Int?>) -> Int? {
        let v = sums.compactMap { $0[keyPath: k] }.map(Double.init)
        return v.isEmpty ? nil : Int(median(v))
      }
      var s = IdleSummary(allocator: n)
      s.liveBytes = med(\.liveBytes)
      s.peakLiveBytes = med(\.peakLiveBytes)
      s.peakRSSKiB = med(\.peakRSSKiB)
      s.rssAtIdleKiB = med(\.rssAtIdleKiB)
      s.rssIdlePlus1sKiB = med(\.rssIdlePlus1sKiB)
      s.rssIdlePlus10sKiB = med(\.rssIdlePlus10sKiB)
      s.rssAtWakeKiB = med(\.rssAtWakeKiB)
      idleSummaries.append(s)
      spikeRunsForChart.append(r)
      let live = s.liveBytes.map { Double($0) / 1024 }
      func cell(_ kib: Int?) -> String {
        guard let k = kib else { return "n/a" }
        if let l = live, l > 0 { return "\(mib(k)) (\(fmt(Double(k) / l, 1))×)" }
        return mib(k)
      }
      lines.append(
        pad(n, labelW) + pad(s.liveBytes.map { mib($0 / 1024) } ?? "?", 17, left: true)
          + [s.peakRSSKiB, s.rssAtIdleKiB, s.rssIdlePlus1sKiB, s.rssIdlePlus10sKiB, s.rssAtWakeKiB].map {
            pad(cell($0), 17, left: true)
          }.joined())
    }
    if idleLen < 10 { lines.append("(idle shorter than 10 s in this mode: +10 s is n/a)") }
  }

  // Geometric means.
  func ratios(_ other: (String) -> Double?) -> [Double] {
    specs.compactMap { spec -> Double? in
      guard let a = cells.first(where: { $0.workload == spec.name && $0.allocator == "arena" })?.medianSeconds,
        let o = other(spec.name), o > 0
      else { return nil }
      return a / o
    }
  }
  let vsMimalloc = ratios { w in cells.first { $0.workload == w && $0.allocator == "mimalloc" }?.medianSeconds }
  let vsFastest = ratios { w in
    cells.filter { $0.workload == w && peerNames.contains($0.allocator) }.compactMap { $0.medianSeconds }.min()
  }
  let vsGlibc = ratios { w in cells.first { $0.workload == w && $0.allocator == "glibc" }?.medianSeconds }
  let gMim = geomean(vsMimalloc), gFast = geomean(vsFastest), gGlibc = geomean(vsGlibc)
  lines.append("")
  if let g = gMim {
    lines.append("Geometric mean of time arena / mimalloc: \(fmt(g, 3)) over \(vsMimalloc.count) workloads (< 1: arena faster)")
  } else if names.contains("arena") {
    lines.append("Geometric mean of time arena / mimalloc: n/a (mimalloc or arena has no successful workload)")
  }
  if let g = gFast { lines.append("Geometric mean of time arena / fastest peer: \(fmt(g, 3)) over \(vsFastest.count) workloads") }
  if let g = gGlibc { lines.append("Geometric mean of time arena / glibc: \(fmt(g, 3)) over \(vsGlibc.count) workloads") }
  let vsOff = specs.compactMap { spec -> (String, Double)? in
    guard let a = cells.first(where: { $0.workload == spec.name && $0.allocator == "arena" })?.medianSeconds,
      let o = cells.first(where: { $0.workload == spec.name && $0.allocator == "arena-noscav" })?.medianSeconds, o > 0
    else { return nil }
    return (spec.name, a / o)
  }
  if let g = geomean(vsOff.map(\.1)) {
    let each = vsOff.map { "\($0.0) \(fmt($0.1, 3))" }.joined(separator: ", ")
    lines.append("Time arena / arena-noscav (scavenger off): geometric mean \(fmt(g, 3)); \(each)")
  }
  let vsHardened = specs.compactMap { spec -> (String, Double)? in
    guard let a = cells.first(where: { $0.workload == spec.name && $0.allocator == "arena" })?.medianSeconds, a > 0,
      let h = cells.first(where: { $0.workload == spec.name && $0.allocator == "arena-hardened" })?.medianSeconds
    else { return nil }
    return (spec.name, h / a)
  }
  if let g = geomean(vsHardened.map(\.1)) {
    let each = vsHardened.map { "\($0.0) \(fmt($0.1, 3))" }.joined(separator: ", ")
    lines.append("Time arena-hardened / arena (cost of hardened:on): geometric mean \(fmt(g, 3)); \(each)")
  }

  let failedRuns = runs.filter { !$0.ok }
  let failures = failedRuns.map { "\($0.workload) / \($0.allocator) rep \($0.rep + 1): \($0.failure ?? "?")\n    \($0.command)" }
  if !failures.isEmpty {
    lines.append("")
    lines.append("FAILURES (\(failures.count)):")
    for f in failures { lines.append("  " + f) }
    for r in failedRuns.prefix(5) where !r.output.isEmpty {
      lines.append("  --- output of \(r.workload) / \(r.allocator) ---")
      for l in r.output.split(separator: "\n", omittingEmptySubsequences: false).suffix(12) { lines.append("  | " + l) }
    }
  }
  if let o = othersShare, o > 0.05 {
    lines.append("")
    lines.append(
      "Note: other processes used \(Int(o * 100))% of the machine's CPU time during the benchmark; timings are noisy.")
  }
  print(lines.joined(separator: "\n"))

  // JSON and SVG.
  var uts = utsname()
  uname(&uts)
  func cstr<T>(_ t: T) -> String {
    withUnsafeBytes(of: t) { raw in String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self) }
  }
  let host: [String: String] = [
    "kernel": cstr(uts.release), "machine": cstr(uts.machine), "nodename": cstr(uts.nodename),
    "cpus": String(cpus), "benchSeconds": fmt(benchSeconds, 1),
    "cpuBusyBeforeStart": busyAtStart.map { fmt($0, 3) } ?? "?",
    "cpuShareOfOtherProcesses": othersShare.map { fmt($0, 3) } ?? "?",
  ]
  let iso = ISO8601DateFormatter()
  let report = Report(
    mode: options.mode, date: iso.string(from: Date()), host: host, commandLine: CommandLine.arguments,
    allocators: wanted, workloads: specs, runs: runs, cells: cells, spikeIdle: idleSummaries,
    geomeanArenaOverMimalloc: gMim, geomeanArenaOverFastestPeer: gFast, geomeanArenaOverGlibc: gGlibc,
    failures: failures)
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
  do {
    let data = try encoder.encode(report)
    try data.write(to: URL(fileURLWithPath: options.jsonPath))
  } catch {
    writeStderr("arena-bench: could not write \(options.jsonPath): \(error)\n")
  }
  let subtitle =
    "\(cstr(uts.machine)), \(host["cpus"]!) CPUs, Linux \(cstr(uts.release)) · median of \(specs.first?.reps ?? 1) run(s) · "
    + (gMim.map { "geomean time arena/mimalloc \(fmt($0, 3))" } ?? "")
  let svg = makeSVG(
    mode: options.mode, workloads: specs.map { $0.name }, allocators: names, cells: cells,
    spikeRuns: spikeRunsForChart, subtitle: subtitle)
  do {
    try svg.write(toFile: options.svgPath, atomically: true, encoding: .utf8)
  } catch {
    writeStderr("arena-bench: could not write \(options.svgPath): \(error)\n")
  }
  writeStderr("arena-bench: \(runs.count) runs in \(fmt(benchSeconds, 1)) s; wrote \(options.jsonPath) and \(options.svgPath)\n")
  if !failures.isEmpty {
    writeStderr("arena-bench: \(failures.count) run(s) FAILED\n")
    return 1
  }
  return 0
}

exit(main())
