// Layer: the preload library in real programs. Each test starts real programs with
// LD_PRELOAD=.build/release/libArenaMalloc.so (as `timeout -s KILL <s> env LD_PRELOAD=… prog`, so
// `timeout` itself is not preloaded), checks their output and exit status against an unpreloaded run
// or a fixture's own verdict, and proves the allocator really served them: C fixtures and python3
// print `arena_malloc_is_active()`, other programs run with LD_DEBUG=bindings and must bind
// `malloc` to libArenaMalloc.so.
//
// Needs the release build: `swift build -c release && swift test`. The C fixtures in
// Tests/Fixtures/ are compiled here with `cc -O2 -pthread`.
import Foundation
import Testing

@Suite(.serialized) struct PreloadTests {
  // MARK: - Programs the README promises

  @Test func lsListsTheSameWithAndWithoutTheAllocator() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let args = ["ls", "-la", "/usr/lib"]
    let (mine, theirs) = try env.runBoth(args, seconds: 20, proveBinding: true)
    mine.expectSuccess()
    theirs.expectSuccess()
    #expect(!mine.stdout.isEmpty)
    #expect(mine.stdout == theirs.stdout, "ls -la /usr/lib output differs when preloaded:\n\(firstDifference(mine.stdout, theirs.stdout))")
  }

  @Test func sortOf200kLinesMatches() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    // 200,000 generated lines: words, numbers, repeated keys (deterministic).
    var rng = XorShift(seed: 20_240_601)
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_")
    var text = ""
    text.reserveCapacity(200_000 * 40)
    for i in 0..<200_000 {
      var word = ""
      for _ in 0..<(4 + rng.below(20)) { word.append(alphabet[rng.below(alphabet.count)]) }
      text += "\(word),\(rng.below(1_000_000)),\(i % 977),\(String(repeating: "x", count: rng.below(30)))\n"
    }
    let input = env.scratch.appendingPathComponent("lines.txt")
    try text.write(to: input, atomically: false, encoding: .utf8)
    for args in [["sort", input.path],
                 ["sort", "-S", "1M", "--parallel=2", "-T", env.scratch.path, "-t,", "-k2,2n", "-k3,3nr", "-k1,1", input.path]] {
      let (mine, theirs) = try env.runBoth(args, seconds: 40, proveBinding: true)
      mine.expectSuccess()
      theirs.expectSuccess()
      #expect(mine.stdout.utf8.count == text.utf8.count, "\(args.joined(separator: " ")): output has \(mine.stdout.utf8.count) bytes, input \(text.utf8.count)")
      #expect(mine.stdout == theirs.stdout, "\(args.joined(separator: " ")) output differs when preloaded:\n\(firstDifference(mine.stdout, theirs.stdout))")
    }
  }

  @Test func gitInitAddCommitLogMatches() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    guard let git = findExecutable("git") else {
      Issue.record("git is not installed: the git preload test could not run (apt-get install git)")
      return
    }
    func session(preloaded: Bool) throws -> String {
      let repo = env.scratch.appendingPathComponent(preloaded ? "repo-preloaded" : "repo-plain")
      try FileManager.default.createDirectory(at: repo.appendingPathComponent("src/deep"), withIntermediateDirectories: true)
      var rng = XorShift(seed: 7)
      for i in 0..<40 {
        let lines = (0..<(20 + rng.below(200))).map { "line \($0) of file \(i): \(rng.next())" }
        try lines.joined(separator: "\n").write(to: repo.appendingPathComponent(i % 3 == 0 ? "src/deep/f\(i).txt" : "src/f\(i).txt"), atomically: false, encoding: .utf8)
      }
      try String(repeating: "big file line\n", count: 50_000).write(to: repo.appendingPathComponent("big.txt"), atomically: false, encoding: .utf8)
      let gitEnv = [
        "HOME": env.scratch.path, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "Arena Test", "GIT_AUTHOR_EMAIL": "arena@example.invalid",
        "GIT_COMMITTER_NAME": "Arena Test", "GIT_COMMITTER_EMAIL": "arena@example.invalid",
        "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z", "TZ": "UTC",
      ]
      var log = ""
      let steps: [[String]] = [
        [git, "init", "-q", "-b", "main", "."],
        [git, "add", "."],
        [git, "commit", "-q", "-m", "first commit"],
        [git, "mv", "src/f1.txt", "src/renamed.txt"],
        [git, "rm", "-q", "src/f2.txt"],
        [git, "add", "."],
        [git, "commit", "-q", "-m", "second commit: rename, delete"],
        [git, "log", "--stat"],
        [git, "gc", "-q"],
        [git, "fsck", "--strict"],
        [git, "log", "--stat", "--format=%s"],
      ]
      for (index, step) in steps.enumerated() {
        if index == 5 {
          try "changed\n".write(to: repo.appendingPathComponent("src/f4.txt"), atomically: false, encoding: .utf8)
        }
        let result = try env.run(step, preload: preloaded, seconds: 30, directory: repo, environment: gitEnv,
                                 proveBinding: preloaded && index == 2)
        result.expectSuccess()
        log += "$ \(step.dropFirst().joined(separator: " "))\n\(result.stdout)"
      }
      return log
    }
    let mine = try session(preloaded: true)
    let theirs = try session(preloaded: false)
    // Hashes and dates are pinned (fixed dates and identities), so the logs match exactly; strip
    // them anyway so the comparison is about content.
    func normalized(_ s: String) -> String {
      s.split(separator: "\n", omittingEmptySubsequences: false)
        .filter { !$0.hasPrefix("commit ") && !$0.hasPrefix("Date:") }
        .joined(separator: "\n")
    }
    #expect(mine.contains("first commit") && mine.contains("second commit") && mine.contains("files changed"), "\(mine)")
    #expect(normalized(mine) == normalized(theirs), "git output differs when preloaded:\n\(firstDifference(normalized(mine), normalized(theirs)))")
  }

  @Test func python3WorkloadGivesTheSameChecksum() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    guard let python = findExecutable("python3") else {
      Issue.record("python3 is not installed: the python3 preload test could not run (apt-get install python3)")
      return
    }
    let script = env.scratch.appendingPathComponent("workload.py")
    try Self.pythonWorkload.write(to: script, atomically: false, encoding: .utf8)
    let (mine, theirs) = try env.runBoth([python, script.path], seconds: 60, environment: ["PYTHONHASHSEED": "0"])
    mine.expectSuccess()
    theirs.expectSuccess()
    #expect(mine.stdout.contains("arena_malloc_is_active=1"), "python3 did not run on the arena allocator:\n\(mine.stdout)")
    #expect(theirs.stdout.contains("arena_malloc_is_active=0"), "the unpreloaded python3 sees the allocator:\n\(theirs.stdout)")
    let checksum = { (s: String) in s.split(separator: "\n").filter { !$0.hasPrefix("arena_malloc_is_active=") } }
    #expect(mine.stdout.contains("checksum "), "\(mine.stdout)")
    #expect(checksum(mine.stdout) == checksum(theirs.stdout), "python3 results differ:\npreloaded:\n\(mine.stdout)\nplain:\n\(theirs.stdout)")
  }

  // MARK: - C fixtures

  @Test func glibcContractsHold() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let contract = try env.compileFixture("contract")
    // The fixture against glibc first: a check that glibc itself fails is a broken check.
    let plain = try env.run([contract], preload: false, seconds: 120)
    let glibcPasses = plain.succeeded && plain.stdout.contains(" passed, 0 failed")
    #expect(plain.stdout.contains("arena_malloc_is_active=0"))
    #expect(glibcPasses, "the contract fixture fails against glibc (a broken check):\n\(plain.summary)")

    let result = try env.run([contract], preload: true, seconds: 120)
    #expect(result.stdout.contains("arena_malloc_is_active=1"), "not running on the arena allocator:\n\(result.summary)")
    // One issue per failed check, then the verdict.
    let failures = result.stdout.split(separator: "\n").filter { $0.hasPrefix("FAIL") }
    for line in failures { Issue.record("contract.c under LD_PRELOAD: \(line)") }
    let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
    let passed = result.succeeded && last.hasSuffix(" passed, 0 failed")
    if failures.isEmpty || !last.contains(" passed, ") {
      #expect(passed, "\(result.summary)")
    } else {
      #expect(passed, "contract.c: \(last)")
    }
  }

  /// Compiles a C fixture, runs it preloaded, and checks that it ran on the arena and that its
  /// last line of output passes `lastLineIsOK`.
  func runFixture(_ name: String, seconds: Int, lastLineIsOK: (String) -> Bool) throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let fixture = try env.compileFixture(name)
    let result = try env.run([fixture], preload: true, seconds: seconds)
    #expect(result.stdout.contains("arena_malloc_is_active=1"), "not running on the arena allocator:\n\(result.summary)")
    let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
    #expect(result.succeeded && lastLineIsOK(last), "\(result.summary)")
  }

  @Test func threadsWithCrossThreadFrees() throws {
    try runFixture("threads", seconds: 60) { $0 == "threads ok" }
  }

  @Test func threadExitHandsCachesBack() throws {
    try runFixture("short_threads", seconds: 60) { $0.hasPrefix("short threads ok ") }
  }

  @Test func forkWhileThreadsAllocate() throws {
    try runFixture("fork", seconds: 90) { $0 == "fork ok" }
  }

  // MARK: - A Swift program

  @Test func swiftWorkloadRunsPreloaded() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let workload = env.root.appendingPathComponent(".build/release/arena-swift-workload").path
    try #require(FileManager.default.isExecutableFile(atPath: workload),
                 "\(workload) is missing: run `swift build -c release` first")
    let (mine, theirs) = try env.runBoth([workload], seconds: 60, proveBinding: true)
    mine.expectSuccess()
    theirs.expectSuccess()
    let result = { (run: ChildRun) in run.stdout.split(separator: "\n").first { $0.hasPrefix("RESULT") }.map(String.init) }
    if mine.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "todo" {
      Issue.record("arena-swift-workload is still a placeholder (prints \"todo\"): nothing Swift-specific was exercised")
      return
    }
    #expect(result(mine) != nil, "preloaded run printed no RESULT line:\n\(mine.summary)")
    #expect(result(theirs) != nil, "plain run printed no RESULT line:\n\(theirs.summary)")
    // Same seed, same model: the checksums must agree (timings may not).
    let checksum = { (line: String?) in line?.split(separator: " ").first { $0.hasPrefix("checksum=") }.map(String.init) }
    if let a = checksum(result(mine)), let b = checksum(result(theirs)) {
      #expect(a == b, "checksums differ: preloaded \(a), plain \(b)")
    }
  }

  // MARK: - The python3 workload

  static let pythonWorkload = #"""
    import ctypes, hashlib, json, random, re, sys

    lib = ctypes.CDLL(None)
    try:
        active = lib.arena_malloc_is_active()
    except AttributeError:
        active = 0
    print("arena_malloc_is_active=%d" % active, flush=True)

    rng = random.Random(1234)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) for _ in range(5000)]

    # Dicts and lists: ~50 MB of JSON.
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 70))) for _ in range(2000)]
    records = []
    for i in range(100000):
        records.append({
            "id": i,
            "name": rng.choice(words) + " " + rng.choice(words),
            "tags": rng.sample(words, i % 7),
            "score": rng.random() * 1000,
            "text": rng.choice(sentences),
            "nested": {"a": list(range(i % 17)), "b": {"k%d" % (i % 7): rng.choice(words)}},
        })
    text = json.dumps(records)
    back = json.loads(text)
    assert back == records, "json round trip changed the data"
    print("json bytes %d" % len(text))

    # Dict churn: counts, deletions, rebuilds.
    counts = {}
    for r in back:
        for t in r["tags"]:
            counts[t] = counts.get(t, 0) + 1
    for k in list(counts):
        if counts[k] % 3 == 0:
            del counts[k]
    index = {r["id"]: r for r in back if r["id"] % 5 != 0}

    # Regular expressions over the whole text.
    names = re.findall(r'"name": "([a-z]+) ([a-z]+)"', text)
    scores = [float(m) for m in re.findall(r'"score": ([0-9.e+-]+)', text)]
    rewritten = re.sub(r'"k([0-9])"', r'"key\1"', text[:5000000])

    # Sorting.
    by_score = sorted(back, key=lambda r: (r["score"], r["id"]))
    by_name = sorted(names)
    top_tags = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:50]

    h = hashlib.sha256()
    h.update(text.encode())
    h.update(rewritten.encode())
    h.update(",".join(str(r["id"]) for r in by_score).encode())
    h.update(repr(by_name[:1000]).encode())
    h.update(repr(top_tags).encode())
    h.update(repr(sum(scores)).encode())
    h.update(repr(len(index)).encode())
    print("records %d names %d tags %d" % (len(back), len(names), len(counts)))
    print("checksum " + h.hexdigest())
    """#
}

// MARK: - Running children

/// The package root, the preload library and a scratch directory for one test.
struct PreloadEnvironment {
  let root: URL
  let library: String
  let scratch: URL

  init() throws {
    root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    library = root.appendingPathComponent(".build/release/libArenaMalloc.so").path
    try #require(FileManager.default.fileExists(atPath: library),
                 "\(library) is missing: run `swift build -c release` first (the preload tests need the release build)")
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("arena-preload-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  }

  func cleanUp() { try? FileManager.default.removeItem(at: scratch) }

  /// Compiles Tests/Fixtures/<name>.c with `cc -O2 -pthread` into the scratch directory.
  func compileFixture(_ name: String) throws -> String {
    let source = root.appendingPathComponent("Tests/Fixtures/\(name).c").path
    try #require(FileManager.default.fileExists(atPath: source), "fixture \(source) is missing")
    let cc = try #require(findExecutable("cc"), "no C compiler (`cc`) on PATH: the fixtures cannot be built (apt-get install gcc)")
    let output = scratch.appendingPathComponent(name).path
    let result = try run([cc, "-O2", "-pthread", "-o", output, source], preload: false, seconds: 120)
    try #require(result.succeeded, "compiling \(name).c failed:\n\(result.summary)")
    return output
  }

  /// Runs `argv` as `timeout -s KILL <seconds> env [LD_PRELOAD=<library>] argv…`, stdout and stderr
  /// into files. With `proveBinding`, also LD_DEBUG=bindings into the scratch directory and checks
  /// that `malloc` was bound to the preload library.
  func run(_ argv: [String], preload: Bool, seconds: Int, directory: URL? = nil,
           environment: [String: String] = [:], proveBinding: Bool = false) throws -> ChildRun {
    try start(argv, preload: preload, seconds: seconds, directory: directory, environment: environment,
              proveBinding: proveBinding).wait()
  }

  /// Runs `argv` preloaded and plain at the same time (the machine has two cores), returns both.
  func runBoth(_ argv: [String], seconds: Int, directory: URL? = nil, environment: [String: String] = [:],
               proveBinding: Bool = false) throws -> (preloaded: ChildRun, plain: ChildRun) {
    let a = try start(argv, preload: true, seconds: seconds, directory: directory, environment: environment, proveBinding: proveBinding)
    let b = try start(argv, preload: false, seconds: seconds, directory: directory, environment: environment, proveBinding: false)
    return (try a.wait(), try b.wait())
  }

  func start(_ argv: [String], preload: Bool, seconds: Int, directory: URL?, environment: [String: String],
             proveBinding: Bool) throws -> StartedChild {
    let id = UUID().uuidString.prefix(8)
    let out = scratch.appendingPathComponent("out-\(id)"), err = scratch.appendingPathComponent("err-\(id)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: findExecutable("timeout") ?? "/usr/bin/timeout")
    var envArgs: [String] = []
    var debugDir: URL? = nil
    if preload {
      envArgs.append("LD_PRELOAD=\(library)")
      if proveBinding {
        let dir = scratch.appendingPathComponent("lddebug-\(id)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        envArgs += ["LD_DEBUG=bindings", "LD_DEBUG_OUTPUT=\(dir.path)/ld"]
        debugDir = dir
      }
    }
    process.arguments = ["-s", "KILL", "\(seconds)", "env"] + envArgs + argv
    var childEnvironment = ProcessInfo.processInfo.environment
    for key in ["LD_PRELOAD", "LD_DEBUG", "LD_DEBUG_OUTPUT", "MALLOC_CHECK_", "MALLOC_PERTURB_"] { childEnvironment[key] = nil }
    childEnvironment["LC_ALL"] = "C"
    for (key, value) in environment { childEnvironment[key] = value }
    process.environment = childEnvironment
    if let directory { process.currentDirectoryURL = directory }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    return StartedChild(process: process, command: (preload ? ["LD_PRELOAD=\(library)"] : []) + argv, seconds: seconds,
                        out: out, err: err, debugDir: debugDir, library: library)
  }
}

struct StartedChild {
  let process: Process
  let command: [String]
  let seconds: Int
  let out: URL, err: URL
  let debugDir: URL?
  let library: String

  func wait() throws -> ChildRun {
    process.waitUntilExit()
    let run = ChildRun(
      command: command.joined(separator: " "), seconds: seconds, reason: process.terminationReason,
      status: process.terminationStatus,
      stdout: String(decoding: (try? Data(contentsOf: out)) ?? Data(), as: UTF8.self),
      stderr: String(decoding: (try? Data(contentsOf: err)) ?? Data(), as: UTF8.self))
    if let debugDir { run.expectMallocBound(to: library, debugDir: debugDir) }
    return run
  }
}

/// One finished child.
struct ChildRun {
  let command: String
  let seconds: Int
  let reason: Process.TerminationReason
  let status: Int32
  let stdout: String
  let stderr: String

  /// `timeout -s KILL` kills the child and then itself with SIGKILL.
  var timedOut: Bool { (reason == .uncaughtSignal && status == SIGKILL) || (reason == .exit && status == 128 + SIGKILL) }
  var succeeded: Bool { reason == .exit && status == 0 }

  var verdict: String {
    if timedOut { return "killed after \(seconds) s (hang or far too slow)" }
    if reason == .uncaughtSignal { return "killed by signal \(status)" }
    if status > 128 { return "exit status \(status) (signal \(status - 128) in the child)" }
    return "exit status \(status)"
  }

  var summary: String {
    "$ \(command)\n\(verdict)\n--- stdout (tail) ---\n\(tail(stdout))\n--- stderr (tail) ---\n\(tail(stderr))"
  }

  func expectSuccess(sourceLocation: SourceLocation = #_sourceLocation) {
    let ok = succeeded
    #expect(ok, "\(summary)", sourceLocation: sourceLocation)
  }

  /// Proof that the allocator served the program: the dynamic linker bound `malloc` to the library.
  func expectMallocBound(to library: String, debugDir: URL, sourceLocation: SourceLocation = #_sourceLocation) {
    let files = (try? FileManager.default.contentsOfDirectory(at: debugDir, includingPropertiesForKeys: nil)) ?? []
    var bound = false
    for file in files {
      guard let text = try? String(contentsOf: file, encoding: .utf8) else { continue }
      if text.split(separator: "\n").contains(where: { $0.contains("symbol `malloc'") && $0.contains(" to \(library) ") }) {
        bound = true
        break
      }
    }
    #expect(bound, "LD_DEBUG=bindings shows no `malloc` bound to \(library) in \(command) (\(files.count) debug files)",
            sourceLocation: sourceLocation)
  }
}

private func tail(_ s: String, lines: Int = 30) -> String {
  let all = s.split(separator: "\n", omittingEmptySubsequences: false)
  return all.suffix(lines).joined(separator: "\n")
}

/// The first differing line of two outputs, for failure messages.
func firstDifference(_ a: String, _ b: String) -> String {
  let x = a.split(separator: "\n", omittingEmptySubsequences: false)
  let y = b.split(separator: "\n", omittingEmptySubsequences: false)
  for i in 0..<max(x.count, y.count) {
    let l = i < x.count ? String(x[i]) : "<end>", r = i < y.count ? String(y[i]) : "<end>"
    if l != r { return "line \(i + 1):\n  preloaded: \(l.prefix(300))\n  plain:     \(r.prefix(300))\n(\(x.count) vs \(y.count) lines)" }
  }
  return "(no line differs)"
}

/// The absolute path of `name` on PATH, or nil.
func findExecutable(_ name: String) -> String? {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
  for dir in path.split(separator: ":") {
    let candidate = "\(dir)/\(name)"
    if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
  }
  return nil
}
