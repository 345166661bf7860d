// Layer: the SIGSEGV/SIGBUS handler. Each case faults on purpose in a child process and checks
// the diagnosis line and how the process ends.
import ArenaAllocator
import ArenaCore
import Foundation
import Testing

@Suite struct FaultTests {
  static func stderr(_ result: ExitTest.Result?) -> String {
    String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
  }

  @Test func faultOnANeverCommittedPageIsDiagnosed() async {
    let result = await #expect(processExitsWith: .signal(SIGSEGV), observing: [\.standardErrorContent]) {
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
      _ = Arena(reserving: 16 << 20)!
      let nowhere = UnsafeMutablePointer<UInt8>(bitPattern: 0x10)!
      nowhere.pointee = 1
    }
    #expect(!Self.stderr(result).contains("arena: fault"), "\(Self.stderr(result))")
  }

  @Test func faultsAreChainedToThePreviousHandler() async {
    let result = await #expect(processExitsWith: .exitCode(42), observing: [\.standardErrorContent]) {
      var action = sigaction()
      action.__sigaction_handler.sa_sigaction = { signal, _, _ in
        let text: StaticString = "previous handler ran\n"
        _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
        _exit(42)
      }
      action.sa_flags = SA_SIGINFO
      sigaction(SIGSEGV, &action, nil)
      let arena = Arena(reserving: 64 << 20)!  // installs the arena's handler on top
      let p = arena.allocate(byteCount: 64)!
      (p + (32 << 20)).storeBytes(of: 1, as: UInt8.self)
    }
    let text = Self.stderr(result)
    #expect(text.contains("previous handler ran"), "\(text)")
    // When the replacement is linked in, the arena's handler was installed before this one.
    if dlsym(dlopen(nil, RTLD_NOW), "arena_malloc_is_active") == nil {
      #expect(text.contains("never committed"), "\(text)")
    }
  }
}
