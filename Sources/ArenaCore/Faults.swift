// Diagnosing faults inside an arena. The SIGSEGV/SIGBUS handler lives in CSystemShims and is
// installed only when ARENA_OPTIONS asks for it (`fault_handler:on`, or `commit_probe:on`, which
// needs it to catch its probes), at a safe point (SafePoint.swift), never by malloc. It passes
// every fault to the program's own handler, silently; only a fault that is about to kill the
// process gets the one-line description. This is the part that knows the allocator's vocabulary. It runs inside a signal handler: it only reads memory
// (the registry, page map and descriptors, racily: a best-effort description), takes no lock,
// calls nothing but its own code and never allocates.
import CSystemShims

enum Faults {
  /// Installs the handler if ARENA_OPTIONS asks for it; with `fault_handler:on` also gives the
  /// calling thread an alternate stack when `mainThread` (other threads get theirs as they start).
  static func installIfAsked(mainThread: Bool) {
    let o = Scavenger.options
    guard o.fault_handler != 0 || o.commit_probe != 0 else { return }
    _ = arena_fault_handler_install(describeFault, Int32(o.fault_handler))
    if mainThread && o.fault_handler != 0 { _ = arena_thread_alt_stack() }
  }
}

/// Writes "arena: fault at <address> in reservation <base>: <state>" into `buffer`; 0 if the
/// address is in no reservation.
func describeFault(_ address: UInt, _ buffer: UnsafeMutablePointer<CChar>, _ capacity: Int) -> Int {
  guard capacity > 64 else { return 0 }
  let g = arena_globals_pointer()
  let table = arena_reservation_table()
  let count = Int(arena_atomic_load32(&g.pointee.reservation_count))
  var slot = 0
  var found: ReservationPointer? = nil
  while slot < count {
    if let raw = table[slot].reservation {
      let r = raw.assumingMemoryBound(to: Reservation.self)
      if address &- r.pointee.base < UInt(r.pointee.size) { found = r; break }
    }
    slot &+= 1
  }
  guard let r = found else { return 0 }
  var line = FaultLine(buffer: buffer, capacity: capacity)
  line.append("arena: fault at ")
  line.appendHex(address)
  line.append(" in reservation ")
  line.appendHex(r.pointee.base)
  line.append(": ")
  if address < r.pointee.dataStart {
    line.append("allocator metadata (header, page map or run descriptors)")
  } else if !r.contains(address) {
    line.append("reservation slack (never used)")
  } else {
    let page = r.pageIndex(address)
    if page >= r.pointee.frontier {
      line.append("never committed (beyond the commit frontier)")
    } else {
      // The run holding the page: its entry, or the nearest boundary entry before it.
      var p = page
      var entry = r.pointee.pageMap[p]
      var steps = 0
      while entry == 0 && p > 0 && steps < 65536 { p &-= 1; entry = r.pointee.pageMap[p]; steps &+= 1 }
      let tag = SmallRuns.tag(ofEntry: entry)
      if tag >= 2 {
        let start = Int(entry &>> 8)
        if page &- start >= ClassTable.runPages(tag &- 1) {
          line.append("guard page after a small run (overrun past its end), size class ")
        } else {
          line.append("committed page of a small run, size class ")
        }
        line.appendDecimal(UInt(SizeClass.size(ofClass: tag &- 1)))
        line.append(" B")
      } else if tag == 1 {
        let d = r.descriptor(Int(entry &>> 8))
        let last = Int(entry &>> 8) &+ Int(d.pointee.pageCount) &- 1
        if d.pointee.kind == RunKind.large && d.pointee.sizeClass == Guards.guardedRunMark && page == last {
          line.append("guard page after a page run (overrun past its end)")
        } else if d.pointee.kind == RunKind.free {
          switch Int(d.pointee.state) {
          case FreeState.decommitted: line.append("decommitted (free run, PROT_NONE)")
          case FreeState.clean: line.append("purged (free run, committed)")
          default: line.append("free run (committed, dirty)")
          }
        } else if d.pointee.inPartialList == Offer.offeredFlag {
          line.append("offered page run (reclaim it before use)")
        } else {
          line.append("committed page of a live page run of ")
          line.appendDecimal(UInt(d.pointee.pageCount))
          line.append(" pages")
        }
      } else {
        line.append("page in transition (being committed or released)")
      }
    }
  }
  line.append("\n")
  return line.length
}

/// A line built in a caller's buffer, for signal handlers (no String: it would allocate).
struct FaultLine {
  let buffer: UnsafeMutablePointer<CChar>
  let capacity: Int
  var length = 0

  init(buffer: UnsafeMutablePointer<CChar>, capacity: Int) {
    self.buffer = buffer
    self.capacity = capacity
  }

  mutating func append(_ text: StaticString) {
    var i = 0
    while i < text.utf8CodeUnitCount && length < capacity &- 1 {
      buffer[length] = CChar(bitPattern: text.utf8Start[i])
      length &+= 1
      i &+= 1
    }
  }

  mutating func appendHex(_ value: UInt) {
    append("0x")
    var shift = UInt.bitWidth &- 4
    var started = false
    while shift >= 0 && length < capacity &- 1 {
      let digit = Int((value &>> UInt(shift)) & 15)
      if digit != 0 || started || shift == 0 {
        started = true
        buffer[length] = CChar(digit < 10 ? 48 &+ digit : 87 &+ digit)
        length &+= 1
      }
      if shift == 0 { break }
      shift &-= 4
    }
  }

  mutating func appendDecimal(_ value: UInt) {
    var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                 UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
      (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    var n = 0
    var v = value
    withUnsafeMutableBytes(of: &digits) { d in
      repeat { d[n] = UInt8(48 &+ v % 10); v /= 10; n &+= 1 } while v != 0 && n < 20
      while n > 0 && length < capacity &- 1 { n &-= 1; buffer[length] = CChar(bitPattern: d[n]); length &+= 1 }
    }
  }
}
