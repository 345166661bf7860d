// Discardable memory in the Swift API: offer a block the program can regenerate, reclaim it later
// and learn whether its contents survived.
import ArenaCore
import CSystemShims

/// What reclaiming an offered block found.
public enum ReclaimResult: Sendable, Equatable {
  /// Every byte survived.
  case intact
  /// At least one page was discarded by the kernel; discarded pages read as zero, the rest kept
  /// their data. The block is usable again either way.
  case discarded
}

/// Why an offer or a reclaim was refused.
public enum OfferError: Error, Sendable, Equatable {
  /// The block has no whole pages to offer: only page runs (requests above
  /// `ArenaSizeClasses.smallLimit`) and huge blocks can be offered.
  case notOfferable
  /// `offer` on a block that is already offered.
  case alreadyOffered
  /// `reclaim` on a block that is not offered.
  case notOffered
}

extension Arena {
  /// Offers the whole pages of a block to the kernel (MADV_FREE): under memory pressure they may
  /// be discarded instead of the program being killed. The block stays allocated; it must not be
  /// read or written until `reclaim(_:)`; it may be deallocated. Cost: one store per page plus one
  /// madvise call.
  public func offer(_ pointer: UnsafeMutableRawPointer) throws(OfferError) {
    let smallBlock = usableSize(of: pointer) <= ArenaSizeClasses.smallLimit
    if HeapHandle.offer(heap, pointer) != 0 { throw smallBlock ? .notOfferable : .alreadyOffered }
  }

  /// Takes an offered block back and says whether every byte survived.
  public func reclaim(_ pointer: UnsafeMutableRawPointer) throws(OfferError) -> ReclaimResult {
    switch HeapHandle.reclaim(heap, pointer) {
    case 1: return .intact
    case 0: return .discarded
    default: throw .notOffered
    }
  }
}

/// A buffer of `count` elements whose contents the program can regenerate, offered to the kernel
/// while unused. `withContents` reclaims it (regenerating the contents if the kernel discarded any
/// of them) and runs the body; `offer()` hands it back. A render cache or a decoded image is the
/// intended use.
public final class DiscardableBuffer<Element: BitwiseCopyable>: @unchecked Sendable {
  /// Number of elements.
  public let count: Int
  private let arena: Arena
  private let base: UnsafeMutablePointer<Element>
  private let regenerate: (UnsafeMutableBufferPointer<Element>) -> Void
  private var isOffered = false
  /// How many times the contents were regenerated after a discard.
  public private(set) var regenerations = 0

  /// Allocates the buffer (at least one page run, so it can be offered) and fills it with
  /// `regenerate`. Returns nil when memory cannot be had.
  public init?(count: Int, arena: Arena = .default,
               regenerate: @escaping (UnsafeMutableBufferPointer<Element>) -> Void) {
    let bytes = max(count * MemoryLayout<Element>.stride, ArenaSizeClasses.smallLimit + 1)
    guard count >= 0, let raw = arena.allocate(byteCount: bytes, alignment: max(16, MemoryLayout<Element>.alignment)) else {
      return nil
    }
    self.count = count
    self.arena = arena
    self.base = raw.bindMemory(to: Element.self, capacity: count)
    self.regenerate = regenerate
    regenerate(UnsafeMutableBufferPointer(start: base, count: count))
  }

  deinit { arena.deallocate(UnsafeMutableRawPointer(base)) }

  /// Offers the contents to the kernel until the next `withContents`. Offering twice is harmless.
  public func offer() {
    guard !isOffered else { return }
    try? arena.offer(UnsafeMutableRawPointer(base))
    isOffered = true
  }

  /// Reclaims the contents (regenerating them if any page was discarded) and runs `body` on them.
  public func withContents<R, E: Error>(_ body: (UnsafeMutableBufferPointer<Element>) throws(E) -> R) throws(E) -> R {
    let buffer = UnsafeMutableBufferPointer(start: base, count: count)
    if isOffered {
      isOffered = false
      if (try? arena.reclaim(UnsafeMutableRawPointer(base))) == .discarded {
        regenerate(buffer)
        regenerations += 1
      }
    }
    return try body(buffer)
  }
}
