// Layer: the SIGSEGV/SIGBUS handler, installed only when ARENA_OPTIONS asks for it
// (fault_handler:on). Each case faults on purpose in a child process and checks the diagnosis line
// and how the process ends.
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

@Suite struct FaultTests {
  static func stderr(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
  }

  /// Asks for the fault handler in a child process (the library reads ARENA_OPTIONS at load).
  static func askForTheHandler(_ options: String = "fault_handler:on") {
    setenv("ARENA_OPTIONS", options, 1)
    HeapHandle.reloadOptions()
  }

  /// Asks for the arena's handler (installed on top of whatever the program has) and writes far
  /// beyond a fresh private arena's commit frontier: a fault in arena memory.
  static func faultInAnArenaUnderItsHandler() {
    askForTheHandler()
    let arena = Arena(reserving: 64 << 20)!
    let p = arena.allocate(byteCount: 64)!
    (p + (32 << 20)).storeBytes(of: 1, as: UInt8.self)
  }

  @Test func signalDispositionsAreLeftAloneByDefault() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      var before = sigaction(), after = sigaction()
      sigaction(SIGSEGV, nil, &before)
      let arena = Arena(reserving: 64 << 20)!
      let p = arena.allocate(byteCount: 64)!
      let q = Arena.default.allocate(byteCount: 100_000)!
      Arena.default.deallocate(q)
      arena.deallocate(p)
      sigaction(SIGSEGV, nil, &after)
      if unsafeBitCast(before.__sigaction_handler, to: UInt.self) != unsafeBitCast(after.__sigaction_handler, to: UInt.self) { exit(1) }
      var stack = stack_t()
      sigaltstack(nil, &stack)
      if stack.ss_flags & Int32(SS_DISABLE) == 0 && stack.ss_size == 65536 { exit(2) }
    }
  }

  @Test func faultOnANeverCommittedPageIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      FaultTests.askForTheHandler()
      let arena = Arena(reserving: 64 << 20)!
      let p = arena.allocate(byteCount: 64)!
      (p + (32 << 20)).storeBytes(of: 1, as: UInt8.self)  // far beyond the commit frontier
    }
    let text = Self.stderr(result)
    #expect(text.contains("arena: fault at 0x"), "\(text)")
    #expect(text.contains("never committed"), "\(text)")
  }

  @Test func faultOnADecommittedPageIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      FaultTests.askForTheHandler()
      let arena = Arena(reserving: 64 << 20)!
      let p = arena.allocate(byteCount: 8 << 20)!
      arena.deallocate(p)
      arena.scavenge()
      (p + (4 << 20)).storeBytes(of: 1, as: UInt8.self)
    }
    #expect(Self.stderr(result).contains("decommitted"), "\(Self.stderr(result))")
  }

  @Test func faultOutsideEveryArenaIsLeftToTheDefaultAction() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      FaultTests.askForTheHandler()
      _ = Arena(reserving: 16 << 20)!
      let nowhere = UnsafeMutablePointer<UInt8>(bitPattern: 0x10)!
      nowhere.pointee = 1
    }
    #expect(!Self.stderr(result).contains("arena: fault"), "\(Self.stderr(result))")
  }

  @Test func faultsGoToTheProgramsOwnHandlerSilently() async {
    let result = await #expect(processExitsWith: .exitCode(42), observing: [\.standardErrorContent]) {
      var action = sigaction()
      action.__sigaction_handler.sa_sigaction = { signal, _, _ in
        let text: StaticString = "previous handler ran\n"
        _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
        _exit(42)
      }
      action.sa_flags = SA_SIGINFO
      sigaction(SIGSEGV, &action, nil)
      FaultTests.faultInAnArenaUnderItsHandler()
    }
    let text = Self.stderr(result)
    #expect(text.contains("previous handler ran"), "\(text)")
    // The program handles its own faults: the arena adds nothing to its stderr.
    #expect(!text.contains("arena:"), "\(text)")
  }
}

extension FaultTests {
  /// raise(SIGSEGV) has no faulting instruction to run again: with the handler installed it must
  /// still end the process by SIGSEGV, not be swallowed.
  @Test func aSentSIGSEGVStillKillsTheProcess() async {
    await #expect(processExitsWith: .signal(SIGSEGV)) {
      FaultTests.askForTheHandler()
      HeapHandle.installFaultHandlerIfAsked()
      raise(SIGSEGV)
      exit(0)
    }
  }

  /// A program handler installed with SA_RESETHAND runs for the first fault only; the fault
  /// taken again then gets the default action (as under glibc), not the handler again and again.
  @Test func aResetHandHandlerRunsOnce() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      var action = sigaction()
      action.__sigaction_handler.sa_sigaction = { _, _, _ in
        let text: StaticString = "own handler\n"
        _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
      }
      action.sa_flags = SA_SIGINFO | Int32(bitPattern: UInt32(SA_RESETHAND))
      sigaction(SIGSEGV, &action, nil)
      FaultTests.faultInAnArenaUnderItsHandler()
    }
    let text = Self.stderr(result)
    #expect(text.components(separatedBy: "own handler").count - 1 == 1, "\(text.prefix(300))")
  }
}

@Suite struct GuardPageTests {
  @Test func overrunPastAPageRunHitsItsGuardPage() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      FaultTests.askForTheHandler("guard_pages:on,fault_handler:on")
      let arena = Arena(reserving: 64 << 20)!
      let p = arena.allocate(byteCount: 100_000)!
      let usable = arena.usableSize(of: p)
      if usable != 100_000 { exit(3) }  // a hardened run's usable size is the request (its slack is checked)
      memset(p, 1, usable)              // every usable byte is fine
      (p + 102_400).storeBytes(of: 1, as: UInt8.self)  // one past the run's last page
    }
    let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(text.contains("guard page after a page run"), "\(text)")
  }

  @Test func overrunPastTheLastBlockOfASmallRunHitsItsGuardPage() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
      FaultTests.askForTheHandler("guard_pages:on,fault_handler:on")
      let arena = Arena(reserving: 64 << 20)!
      // Fill one run of the 16 KiB class (a hardened block's last 8 bytes are its canary): the
      // highest block ends where the run ends.
      var blocks: [UnsafeMutableRawPointer] = []
      for _ in 0..<8 { blocks.append(arena.allocate(byteCount: 16_376)!) }
      let last = blocks.max(by: { UInt(bitPattern: $0) < UInt(bitPattern: $1) })!
      if arena.usableSize(of: last) != 16_376 { exit(3) }
      memset(last, 2, 16_376)
      (last + 16_384).storeBytes(of: 1, as: UInt8.self)
    }
    let text = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    #expect(text.contains("guard page after a small run"), "\(text)")
  }

  @Test func hardenedModeKeepsDataAndAddsNoVMAs() async {
    await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
      setenv("ARENA_OPTIONS", "guard_pages:on", 1)
      HeapHandle.reloadOptions()
      let arena = Arena(reserving: 256 << 20)!
      let before = ProcessMemory.mappingCount
      var rng = XorShift(seed: 9)
      var slots = [(UnsafeMutableRawPointer, Int, UInt8)?](repeating: nil, count: 1000)
      for step in 0..<100_000 {
        let i = rng.below(slots.count)
        if let (p, n, s) = slots[i] {
          if !Pattern.check(p, n, seed: s) { exit(1) }
          arena.deallocate(p)
          slots[i] = nil
        } else {
          let n = rng.below(4) == 0 ? rng.below(300_000) + 1 : rng.below(2000) + 1
          let p = arena.allocate(byteCount: n)!
          Pattern.fill(p, n, seed: UInt8(truncatingIfNeeded: step))
          slots[i] = (p, n, UInt8(truncatingIfNeeded: step))
        }
      }
      for case let (p, _, _)? in slots { arena.deallocate(p) }
      // MADV_GUARD_INSTALL (kernel 6.13+) adds no VMAs; the mprotect fallback would add many.
      let grown = ProcessMemory.mappingCount - before
      if grown > 16 { FileHandle.standardError.write(Data("VMAs grew by \(grown)\n".utf8)); exit(2) }
    }
  }
}
