// The background scavenger: gives an idle program's free memory back to the kernel, even while
// the program makes no allocator calls at all (the case every peer misses: mimalloc and jemalloc
// without its background thread only release memory when an allocating thread calls in).
//
// Policy
// - Decay. Memory that has stayed free for `decay_ms` (default 500 ms) is purged with
//   MADV_DONTNEED: RSS falls, the commit charge stays, the pages read as zero when reused. Memory
//   freed more recently is left dirty, so a steady workload reuses it without page faults.
// - Decommit. Whole 2 MiB granules that have stayed free for `decommit_ms` (default 5 s; 0 under
//   vm.overcommit_memory=2, where the commit charge is what runs out) are decommitted: the charge
//   is given back and the PROT_NONE ranges merge again.
// - Hot reserve. Up to `hot_reserve_kb` (default 4 MiB) of dirty free runs per reservation are
//   not purged, so a program that frees and reallocates in cycles does not fault every cycle. A
//   reserve run nobody has reused for `decommit_ms` (at least 5 s) is not hot: it is purged too.
// - Metadata. Purging or decommitting a free run also purges the page-map and run-descriptor
//   pages that only its interior pages use (12 MiB of descriptors per GiB of heap).
// - Empty runs. Each size class keeps an empty run for reuse; a class with no frees for the decay
//   time gives it back, since it would pin its granule's commit charge.
// - Partly used runs. A size class that has had no frees for the decay time also gives back the
//   pages only free blocks touch inside its partly used runs (see Release.swift).
// - Thread caches. A thread that has not refilled or flushed its cache for the decay time has its
//   cached blocks taken back (ThreadCache.swift: one membarrier per pass, no atomic operation on
//   the owner's fast path), so the runs they came from can empty and be released in turn.
// - Latency. Every piece of freed memory carries the time it was last in use (a page run its
//   free, a small run the last block given back to its class, an idle thread cache its owner's
//   last refill or flush), and a pass releases everything whose time is past the decay, whatever
//   path it took: caches are emptied, runs found empty and given to the page heap, and purged, all
//   in the same pass. So freed memory reaches the kernel within one decay period plus one tick of
//   its last use (plus the hot reserve, kept up to 5 s).
// - Pacing. The thread wakes every decay/4 (between 20 and 250 ms). Each pass is bounded by a
//   CPU budget: a token bucket filled at 5% of a core (50 ms per second of wall time) holding at
//   most 250 ms, so a burst of freed memory (1 GiB after a spike) is released within about a
//   second while the long-run average stays at or below 5% of one core; a steady workload that
//   reuses its memory leaves the scavenger almost nothing to do (measured in the benchmark).
// - Locks. The scavenger never holds a lock that allocating threads wait on during a system call:
//   runs are claimed under the lock, released outside it and inserted back (Release.swift).
//
// It is a pthread (not Swift concurrency: it must work inside the preload library) with every
// signal blocked, started only at a safe point (SafePoint.swift): when the program creates its
// first thread, or first uses `Arena.default` from Swift. Never from inside malloc or free.
//
// It stops itself, after a last pass, when the program is single-threaded again (its threads
// joined); the next pthread_create starts a new one.
//
// Inline release. A process with no scavenger thread (single-threaded, a fork child,
// `scavenger:off`, or commit too short to create one) runs the same pass on its free paths
// instead: at most once per tick, when memory reaches the page heap, within a CPU budget of 2 ms,
// taking no lock the caller can hold. Under strict overcommit (`decommit_ms` 0), or once a commit
// has failed, dirty free memory beyond the hot reserve is also decommitted at once, so a program
// that frees everything and sleeps gives its commit charge back. Memory freed within the last
// decay period before such a program stops calling the allocator stays until its next call (or
// `malloc_trim`).
//
// ARENA_OPTIONS controls it: `decay_ms:N,decommit_ms:N,hot_reserve_kb:N,scavenger:off,purge:free`.
// Private arenas are not scavenged in the background: `Arena.scavenge()` releases theirs.
import CSystemShims

enum Scavenger {
  @inline(__always) static var options: arena_options_t {
    let g = arena_globals_pointer()
    if arena_atomic_load32(&g.pointee.options_state) != 2 { arena_options_load() }
    return g.pointee.options
  }

  /// Whether the scavenger thread runs in this process.
  @inline(__always) static var isRunning: Bool {
    arena_atomic_load32(&arena_globals_pointer().pointee.scavenger_state) == 1
  }

  /// Starts the scavenger thread once, if enabled. Only at a safe point (SafePoint.swift).
  @inline(never)
  static func start() {
    let g = arena_globals_pointer()
    guard options.scavenger_enabled != 0 else { return }
    var expected: UInt32 = 0
    guard arena_atomic_cas32(&g.pointee.scavenger_state, &expected, 1) != 0 else { return }
    let saved = arena_get_errno()
    if arena_sys_thread_start(scavengerMain) != 0 { arena_atomic_store32(&g.pointee.scavenger_state, 0) }
    arena_set_errno(saved)
  }

  /// Whether the commit charge is scarce: strict overcommit (`decommit_ms` defaults to 0 there),
  /// or a commit has failed (RLIMIT_DATA, or a limit reached since start-up). Then free memory
  /// beyond the hot reserve is decommitted as soon as it is purged.
  @inline(__always) static func chargeIsScarce(_ o: arena_options_t) -> Bool {
    o.decommit_ns == 0 || arena_atomic_load32(&arena_globals_pointer().pointee.commit_scarce) != 0
  }

  /// Called by the scavenger thread each tick: when it is the only thread besides one other (the
  /// program's threads have been joined), it marks itself stopped and returns true, so the
  /// program is single-threaded again as under glibc; the next pthread_create starts a new one.
  static func processIsSingleThreadedAgain() -> Bool {
    guard arena_sys_thread_count() == 2 else { return false }
    let g = arena_globals_pointer()
    var running: UInt32 = 1
    guard arena_atomic_cas32(&g.pointee.scavenger_state, &running, 0) != 0 else { return true }
    if arena_sys_thread_count() == 2 { return true }
    // A thread was created meanwhile: run on, unless its creator already started a new scavenger.
    var stopped: UInt32 = 0
    return arena_atomic_cas32(&g.pointee.scavenger_state, &stopped, 1) == 0
  }

  /// CPU time one inline pass may use.
  @inline(__always) static var inlineBudgetNs: UInt64 { 2_000_000 }

  /// Inline release, called by the free paths of the default heap after memory reached the page
  /// heap, with no lock held: runs a pass when one is due and there is no scavenger thread, and
  /// under a scarce commit charge decommits dirty memory beyond the hot reserve at once.
  @inline(__always)
  static func releaseInline(_ h: HeapPointer) {
    guard h.pointee.isDefault, !isRunning else { return }
    releaseInlineSlow(h)
  }

  @inline(never)
  static func releaseInlineSlow(_ h: HeapPointer) {
    let g = arena_globals_pointer()
    let o = options
    let now = arena_sys_now_ns()
    let due = now >= arena_atomic_load64(&g.pointee.inline_release_next_ns)
    let scarce = chargeIsScarce(o)
    let cleanFloor = Int(arena_atomic_load64(&g.pointee.inline_clean_floor_pages))
    guard due || (scarce && Release.holdsChargeBeyondReserve(h, keep: Int(o.hot_reserve_bytes), cleanFloor: cleanFloor)) else { return }
    // One thread at a time, and never recursively (a pass frees runs itself).
    var expected: UInt32 = 0
    guard arena_atomic_cas32(&g.pointee.inline_release_busy, &expected, 1) != 0 else { return }
    let saved = arena_get_errno()
    if due {
      arena_atomic_store64(&g.pointee.inline_release_next_ns, now &+ UInt64(tickNs(o)))
      _ = pass(h, now: UInt(now), cpuDeadline: arena_sys_thread_cpu_ns() &+ inlineBudgetNs)
    }
    if scarce {
      // The caller's cached blocks and each class's kept empty run would pin their granules'
      // charge: they go too. (A cache is consistent whenever memory reaches the page heap.)
      if let tc = ThreadCaches.enter() { ThreadCaches.flushAll(tc) }
      ThreadCaches.leave()
      Release.releaseEmptyRuns(h, quietBefore: UInt.max)
      var policy = Release.Policy()
      policy.keepDirtyBytes = Int(o.hot_reserve_bytes)
      policy.lazy = o.lazy_free != 0
      _ = Release.releaseFree(h, policy)
      arena_atomic_store64(&g.pointee.inline_clean_floor_pages, UInt64(Release.cleanFreePages(h)))
    }
    arena_set_errno(saved)
    arena_atomic_store32(&g.pointee.inline_release_busy, 0)
  }

  /// The time between two passes.
  @inline(__always) static func tickNs(_ o: arena_options_t) -> UInt {
    UInt(min(max(o.decay_ns / 4, 20_000_000), 250_000_000))
  }

  /// The shortest time after which an unused hot reserve is purged.
  @inline(__always) static var reserveExpiryNs: UInt { 5_000_000_000 }

  /// One pass over the default heap with the given clock readings; returns what it released.
  static func pass(_ h: HeapPointer, now: UInt, cpuDeadline: UInt64) -> Release.Outcome {
    let o = options
    var policy = Release.Policy()
    policy.purgeBefore = now &- min(now, UInt(o.decay_ns))
    policy.decommitBefore = chargeIsScarce(o) ? now : now &- min(now, UInt(o.decommit_ns))
    policy.keepDirtyBytes = Int(o.hot_reserve_bytes)
    policy.reserveExpiresBefore = now &- min(now, max(UInt(o.decommit_ns), reserveExpiryNs))
    policy.cpuDeadline = cpuDeadline
    policy.lazy = o.lazy_free != 0
    // A cache is first seen quiet up to a tick after its owner's last refill or flush: taking it a
    // tick early lets its blocks join the same sweep as the frees that came before them.
    _ = ThreadCaches.reclaimIdle(h, quietBefore: policy.purgeBefore &+ tickNs(o), idleBefore: policy.purgeBefore, now: now)
    // Runs emptied by those blocks reach the page heap stamped with their last use, so they are
    // released in this same pass, and so are the runs emptied while partly used runs are swept.
    Release.releaseEmptyRuns(h, quietBefore: policy.purgeBefore)
    var outcome = Release.releaseFree(h, policy)
    var c = 1
    while c <= SizeClass.count && !Release.overBudget(policy) {
      outcome.purgedBytes &+= Release.purgeFreeBlocks(h, c, quietBefore: policy.purgeBefore, policy: policy)
      c &+= 1
    }
    let more = Release.releaseFree(h, policy)
    outcome.purgedBytes &+= more.purgedBytes
    outcome.decommittedBytes &+= more.decommittedBytes
    return outcome
  }
}

/// The scavenger thread's body (a C function pointer: no closure context).
func scavengerMain(_ unused: UnsafeMutableRawPointer?) {
  let g = arena_globals_pointer()
  let rate: UInt64 = 20         // budget: 1/20 of wall time (5% of one core)
  let bucketLimit: UInt64 = 250_000_000
  var bucket: UInt64 = bucketLimit
  var last = arena_sys_now_ns()
  while true {
    let o = Scavenger.options
    arena_sys_sleep_ns(UInt64(Scavenger.tickNs(o)))
    // When the program is single-threaded again this is the last pass, and it counts everything
    // freed so far (the joined threads' caches too) as past its decay: a quiet program may never
    // take a free path that would release it.
    let finalPass = Scavenger.processIsSingleThreadedAgain()
    let now = arena_sys_now_ns()
    bucket = min(bucketLimit, bucket &+ (now &- last) / rate)
    last = now
    if let h = Heaps.defaultHeapIfCreated, bucket > 1_000_000 || finalPass {
      let cpu0 = arena_sys_thread_cpu_ns()
      _ = Scavenger.pass(h, now: UInt(finalPass ? now &+ o.decay_ns : now), cpuDeadline: cpu0 &+ bucket)
      let used = arena_sys_thread_cpu_ns() &- cpu0
      bucket = used >= bucket ? 0 : bucket &- used
      _ = arena_atomic_add64(&g.pointee.scavenger_cpu_ns, used)
      _ = arena_atomic_add64(&g.pointee.scavenger_passes, 1)
    }
    if finalPass { return }
  }
}
