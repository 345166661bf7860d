// Safe points: the only places where the allocator creates anything process-wide.
//
// libc calls malloc, free and realloc with its own locks held: thread teardown frees DTVs under the
// stack-cache lock that pthread_create needs (pthread_join, a detached thread's exit), dlopen holds
// the loader's lock, stdio holds FILE locks, atexit and setenv hold theirs. So nothing
// process-wide is created inside the malloc family: no thread, no signal handler, no alternate
// signal stack, no file. Such setup happens only here:
//
// - Load: the library's ELF constructor (malloc.c), before main, on the only thread there is
//   (constructors run single-threaded, with no libc lock held by the code calling them; a
//   library loaded later by dlopen runs it under the loader's lock, which everything done here
//   takes recursively or not at all). Options are read, fork handlers registered and, only when
//   ARENA_OPTIONS asks for it (fault_handler:on, commit_probe:on), the SIGSEGV/SIGBUS handler and
//   the main thread's alternate stack installed. No thread is started: a program that never
//   creates one stays single-threaded, as under glibc (unshare(CLONE_NEWUSER) still works, and
//   libc and libstdc++ keep their single-threaded fast paths).
// - Thread creation: the library's `pthread_create` wrapper, right after it created the
//   program's thread (first, so that under RLIMIT_NPROC the program's thread is not the one
//   refused). The program is calling pthread_create itself, so it holds none of the locks
//   pthread_create takes (it would deadlock under glibc too), and the scavenger thread can be
//   created the same way. This is where the scavenger starts: once per process, and again in a
//   fork child once the child creates a thread. With fault_handler:on the new thread gets its
//   alternate stack first thing, and gives it back when it exits. The scavenger stops itself
//   when the program is single-threaded again (its threads joined), and starts again with the
//   next thread.
// - The Swift API (`Arena.default`, `Arena(reserving:)`): called by the program, never by libc.
//
// Where no safe point after load is reached (single-threaded programs, fork children that create
// no thread, `scavenger:off`, a scavenger thread that could not be created because the commit
// charge ran out), the free paths release memory themselves (Scavenger.releaseInline).
import CSystemShims

enum SafePoint {
  /// At load: options, fork handlers, and the fault handler when asked for. Starts no thread.
  static func atLoad() {
    _ = Scavenger.options
    arena_atfork_install(forkPrepare, forkParent, forkChild)
    _ = arena_thread_exit_prepare(threadExit)
    Faults.installIfAsked(mainThread: true)
    arena_atomic_store32(&arena_globals_pointer().pointee.load_setup_done, 1)
  }

  /// The program has created a thread, or calls the Swift API of the default arena:
  /// everything `atLoad` does (if it has not run), and the scavenger thread.
  @inline(__always)
  static func atThreadCreation() {
    let g = arena_globals_pointer()
    if arena_atomic_load32(&g.pointee.scavenger_state) != 0 { return }
    enter()
  }

  /// With no scavenger running (`scavenger:off`, or it stopped) this runs at every safe point:
  /// the load-time setup only once (it may cost a system call per call otherwise).
  @inline(never)
  static func enter() {
    if arena_atomic_load32(&arena_globals_pointer().pointee.load_setup_done) == 0 { atLoad() }
    Scavenger.start()
  }
}

/// The load-time safe point (the library's ELF constructor).
@c(arena_safe_point_load)
public func arenaSafePointLoad() { SafePoint.atLoad() }

/// The thread-creation safe point (the library's pthread_create wrapper).
@c(arena_safe_point_thread)
public func arenaSafePointThread() { SafePoint.atThreadCreation() }

/// A thread created through the pthread_create wrapper starts: it takes its cache now, which
/// registers its thread-exit hook before the program's code runs. A cache created later, by a free
/// on the thread's exit path after the hooks ran, could never be handed back.
@c(arena_thread_started)
public func arenaThreadStarted() {
  if let h = Heaps.defaultHeap { _ = ThreadCaches.enterOrCreate(h) }
  ThreadCaches.leave()
}

/// Whether new threads get an alternate signal stack (fault_handler:on).
@c(arena_wants_thread_alt_stack)
public func arenaWantsThreadAltStack() -> Int32 { Scavenger.options.fault_handler != 0 ? 1 : 0 }
