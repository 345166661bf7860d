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
// - Pacing. The thread wakes every decay/4 (between 20 and 250 ms). Each pass is bounded by a
//   CPU budget: a token bucket filled at 5% of a core (50 ms per second of wall time) holding at
//   most 250 ms, so a burst of freed memory (1 GiB after a spike) is released within about a
//   second while the long-run average stays at or below 5% of one core; a steady workload that
//   reuses its memory leaves the scavenger almost nothing to do (measured in the benchmark).
// - Locks. The scavenger never holds a lock that allocating threads wait on during a system call:
//   runs are claimed under the lock, released outside it and inserted back (Release.swift).
//
// It is a pthread (not Swift concurrency: it must work inside the preload library), started on
// the first release of memory to the default heap, the first overflow of a thread cache or the
// creation of a second thread's cache, with every signal blocked. ARENA_OPTIONS
// controls it: `decay_ms:N,decommit_ms:N,hot_reserve_kb:N,scavenger:off,purge:free`.
// Private arenas are not scavenged in the background: `Arena.scavenge()` releases theirs.
import CSystemShims

enum Scavenger {
  @inline(__always) static var options: arena_options_t {
    let g = arena_globals_pointer()
    if arena_atomic_load32(&g.pointee.options_state) != 2 { arena_options_load() }
    return g.pointee.options
  }

  /// Starts the scavenger thread once, if enabled. Cheap when already started; call without locks.
  @inline(__always)
  static func ensureStarted() {
    let g = arena_globals_pointer()
    if arena_atomic_load32(&g.pointee.scavenger_state) != 0 { return }
    start()
  }

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
    policy.decommitBefore = now &- min(now, UInt(o.decommit_ns))
    policy.keepDirtyBytes = Int(o.hot_reserve_bytes)
    policy.reserveExpiresBefore = now &- min(now, max(UInt(o.decommit_ns), reserveExpiryNs))
    policy.cpuDeadline = cpuDeadline
    policy.lazy = o.lazy_free != 0
    // A cache is first seen quiet up to a tick after its owner's last refill or flush: taking it a
    // tick early lets its blocks join the same sweep as the frees that came before them.
    _ = ThreadCaches.reclaimIdle(h, quietBefore: policy.purgeBefore &+ tickNs(o), idleBefore: policy.purgeBefore, now: now)
    Release.releaseEmptyRuns(h, quietBefore: policy.purgeBefore)
    var outcome = Release.releaseFree(h, policy)
    var c = 1
    while c <= SizeClass.count && !Release.overBudget(policy) {
      outcome.purgedBytes &+= Release.purgeFreeBlocks(h, c, quietBefore: policy.purgeBefore, policy: policy)
      c &+= 1
    }
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
    let now = arena_sys_now_ns()
    bucket = min(bucketLimit, bucket &+ (now &- last) / rate)
    last = now
    guard let h = Heaps.defaultHeapIfCreated, bucket > 1_000_000 else { continue }
    let cpu0 = arena_sys_thread_cpu_ns()
    _ = Scavenger.pass(h, now: UInt(now), cpuDeadline: cpu0 &+ bucket)
    let used = arena_sys_thread_cpu_ns() &- cpu0
    bucket = used >= bucket ? 0 : bucket &- used
    _ = arena_atomic_add64(&g.pointee.scavenger_cpu_ns, used)
    _ = arena_atomic_add64(&g.pointee.scavenger_passes, 1)
  }
}
