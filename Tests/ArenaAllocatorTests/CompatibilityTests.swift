// Layer: do no harm. Programs that nobody on the team wrote, rebuilt from public bug reports
// against allocators, run preloaded (C fixtures in Tests/Fixtures/compat_*.c, a Rust program when
// rustc is installed). Each proves one kind of harm a drop-in allocator must not do: hang a
// program, keep a per-thread resource after the thread, change its signal dispositions or its
// stderr, leak address space or commit charge, refuse memory it holds itself, hand out old bytes
// as zero, or keep freed memory resident long after the last free. Every fixture also passes
// with glibc (checked here too where it is cheap), so a failure is the allocator's.
//
// Needs the release build: `swift build -c release && swift test`.
import Foundation
import Testing

@Suite(.serialized) struct CompatibilityTests {
  /// Compiles fixture `name`, runs it preloaded (and, with `againstGlibc`, plain first: a fixture
  /// glibc fails is a broken fixture), and checks the arena served it and its last line.
  func runCompat(_ name: String, _ arguments: [String] = [], options: String? = nil, seconds: Int = 60,
                 againstGlibc: Bool = true) throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let fixture = try env.compileFixture(name)
    let environment = options.map { ["ARENA_OPTIONS": $0] } ?? [:]
    if againstGlibc {
      let plain = try env.run([fixture] + arguments, preload: false, seconds: seconds, environment: environment)
      #expect(plain.succeeded && plain.stdout.hasSuffix("\(name) ok\n"), "\(name) fails with glibc (a broken fixture):\n\(plain.summary)")
    }
    let result = try env.run([fixture] + arguments, preload: true, seconds: seconds, environment: environment)
    #expect(result.stdout.contains("arena_malloc_is_active=1"), "not running on the arena allocator:\n\(result.summary)")
    let failures = result.stdout.split(separator: "\n").filter { $0.hasPrefix("FAIL") }
    for line in failures { Issue.record("\(name) under LD_PRELOAD: \(line)") }
    #expect(result.succeeded && result.stdout.hasSuffix("\(name) ok\n"), "\(result.summary)")
  }

  /// ARENA_OPTIONS=stats:on prints the statistics once when the program exits; without it the
  /// program's stderr stays its own.
  @Test func statisticsAtExitOnlyWhenAsked() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let asked = try env.run(["/bin/echo", "hello"], preload: true, seconds: 30, environment: ["ARENA_OPTIONS": "stats:on"])
    #expect(asked.succeeded && asked.stdout == "hello\n", "\(asked.summary)")
    #expect(asked.stderr.hasPrefix("ArenaAllocator\nreserved bytes") && asked.stderr.contains("in use bytes"), "\(asked.summary)")
    #expect(asked.stderr.components(separatedBy: "ArenaAllocator").count == 2, "printed once: \(asked.summary)")
    let plain = try env.run(["/bin/echo", "hello"], preload: true, seconds: 30)
    #expect(plain.succeeded && plain.stderr.isEmpty, "\(plain.summary)")
  }

  /// pthread_join and a detached thread's exit free memory while glibc holds its stack-cache lock:
  /// nothing inside free may create a thread (it needs that lock). 6 x 60 joinable threads with
  /// 8 MiB stacks and 60 detached ones.
  @Test func threadJoinDoesNotHang() throws {
    try runCompat("compat_thread_join", seconds: 30)
  }

  /// glibc frees memory on a detached thread's exit path after its exit hooks ran; a thread
  /// cache created then would be left behind, and the allocator would later write into the dead
  /// thread's storage. 400 detached threads that only free, then malloc_trim around memory the
  /// program maps itself.
  @Test func freesOnAThreadsExitPathLeaveNothingBehind() throws {
    try runCompat("compat_thread_exit_frees", seconds: 60)
  }

  /// No alternate signal stack per thread, VmData flat over 5,000 threads, and 10,000 threads
  /// under RLIMIT_DATA leave room for a 16 MiB block.
  @Test func threadsLeaveNothingBehind() throws {
    try runCompat("compat_thread_resources", seconds: 90)
  }

  /// SIGSEGV/SIGBUS stay SIG_DFL after the first malloc; a program's own handler is never
  /// replaced; faults it takes on heap pages reach it and print nothing.
  @Test func signalDispositionsAndStderrAreUnchanged() throws {
    try runCompat("compat_signals")
  }

  /// posix_memalign with 512 MiB-2 GiB alignments, freed: flat VSZ, and 200 calls under a
  /// 16 GiB RLIMIT_AS.
  @Test func largeAlignmentsLeakNoAddressSpace() throws {
    try runCompat("compat_big_alignment")
  }

  /// Under RLIMIT_DATA, memory freed but still charged is given back before a large request is
  /// refused (page runs, small runs, huge blocks).
  @Test func aLargeRequestAfterFreeingIsServed() throws {
    try runCompat("compat_rlimit_huge")
  }

  /// With purge:free, pages purged with MADV_FREE keep their bytes: calloc must clear them.
  @Test func callocIsZeroAfterLazyPurge() throws {
    try runCompat("compat_calloc_lazy", options: "purge:free")
  }

  /// A single-threaded program that exhausts RLIMIT_DATA, frees everything and sleeps gives the
  /// charge back (VmData within 64 MiB of its start) and got at least 85% of the headroom.
  /// (.ci/run repeats this under vm.overcommit_memory=2, which needs root.)
  @Test func commitChargeComesBackInASingleThreadedProgram() throws {
    try runCompat("compat_commit_exhaustion", ["--limit-mib", "512"])
  }

  /// Two threads build and free ~200 MB six times, then idle: RSS is within 24 MiB of the
  /// malloc_trim floor one second after the last free (one decay period plus one tick).
  /// glibc keeps its memory, so this one is not checked against glibc.
  @Test func freedMemoryIsReleasedWithinASecond() throws {
    try runCompat("compat_release_latency", againstGlibc: false)
  }

  /// Rust installs its stack-overflow handler only where SIGSEGV is SIG_DFL: preloaded, a stack
  /// overflow must still print Rust's report and abort, in the main thread and in a spawned one.
  @Test(.enabled(if: findExecutable("rustc") != nil, "rustc is not installed: the Rust program is skipped"))
  func rustStackOverflowIsStillReported() throws {
    let env = try PreloadEnvironment()
    defer { env.cleanUp() }
    let source = env.root.appendingPathComponent("Tests/Fixtures/compat_stack_overflow.rs").path
    let binary = env.scratch.appendingPathComponent("compat_stack_overflow").path
    let build = try env.run([findExecutable("rustc")!, "-O", "-o", binary, source], preload: false, seconds: 180)
    try #require(build.succeeded, "rustc failed:\n\(build.summary)")
    for mode in ["main", "thread"] {
      let result = try env.run([binary, mode], preload: true, seconds: 30)
      #expect(result.stdout.contains("arena_malloc_is_active=1"), "not running on the arena allocator:\n\(result.summary)")
      #expect(result.stderr.contains("has overflowed its stack"), "no stack-overflow report (\(mode)):\n\(result.summary)")
      #expect(result.status == 128 + SIGABRT || (result.reason == .uncaughtSignal && result.status == SIGABRT),
              "expected death by SIGABRT (\(mode)):\n\(result.summary)")
    }
  }
}
