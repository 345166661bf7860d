// Hardened mode (ARENA_OPTIONS guard_pages:on): a guard page after every page run and every small
// run, so an overrun past the end of a run faults (and the fault handler names the guard page)
// instead of corrupting the next run. Guards use MADV_GUARD_INSTALL where the kernel has it, so
// they add no VMAs; the run's descriptor counts the guard page, its usable size does not. Guards
// are installed and removed outside every lock.
import CSystemShims

enum Guards {
  /// Marks a page run that carries a guard page (in `RunDescriptor.sizeClass`, unused by page runs).
  @inline(__always) static var guardedRunMark: UInt8 { 0xFF }

  @inline(__always) static var enabled: Bool { Scavenger.options.guard_pages != 0 }

  /// Guard pages a page run of this descriptor carries (0 or 1).
  @inline(__always)
  static func pages(ofLargeRun d: DescriptorPointer) -> Int { d.pointee.sizeClass == guardedRunMark ? 1 : 0 }

  /// Whether a small run of class `c` with this descriptor carries a guard page.
  @inline(__always)
  static func smallRunIsGuarded(_ d: DescriptorPointer, _ c: Int) -> Bool {
    Int(d.pointee.pageCount) > ClassTable.runPages(c)
  }

  /// Installs the guard on the last page of a run.
  static func install(_ d: DescriptorPointer) {
    let last = d.pointee.start &+ UInt((Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift)
    _ = arena_sys_guard_install(UnsafeMutableRawPointer(bitPattern: last), Layout.pageSize)
  }

  /// Removes the guard on the last page of a run before the run goes back to the page heap.
  static func remove(_ d: DescriptorPointer) {
    let last = d.pointee.start &+ UInt((Int(d.pointee.pageCount) &- 1) &<< Layout.pageShift)
    _ = arena_sys_guard_remove(UnsafeMutableRawPointer(bitPattern: last), Layout.pageSize)
  }
}
