// swift-tools-version: 6.1
import PackageDescription

// The preload library is the core compiled a second time as Embedded Swift (runtime-free, libc
// only), with the libc names defined in C and only those exported (version script).
let exportsMap = Context.packageDirectory + "/Sources/ArenaMallocPreload/exports.map"

// `ARENA_LINK_MALLOC=1 swift test` links the replacement into the test runner itself, so the whole
// test process (Swift runtime, Foundation, XCTest, Swift Testing) allocates from the arena.
let linkMallocIntoTests = Context.environment["ARENA_LINK_MALLOC"] == "1"

let package = Package(
  name: "ArenaAllocator",
  products: [
    .library(name: "ArenaAllocator", targets: ["ArenaAllocator"]),
    .library(name: "ArenaMalloc", type: .dynamic, targets: ["ArenaMallocPreload"]),
    // Link this into a Swift executable to serve the whole process's malloc from the arena.
    .library(name: "ArenaMallocLinked", targets: ["ArenaMallocLinked"]),
    .executable(name: "arena-bench", targets: ["arena-bench"]),
    .executable(name: "arena-workload", targets: ["arena-workload"]),
    .executable(name: "arena-swift-workload", targets: ["arena-swift-workload"]),
    .executable(name: "arena-stress", targets: ["arena-stress"]),
  ],
  targets: [
    .target(name: "CSystemShims", path: "CSystemShims"),
    .target(name: "ArenaCore", dependencies: ["CSystemShims"]),
    .target(name: "ArenaAllocator", dependencies: ["ArenaCore", "CSystemShims"]),
    .target(
      name: "ArenaCoreEmbedded", dependencies: ["CSystemShims"],
      swiftSettings: [.enableExperimentalFeature("Embedded")]),
    .target(
      name: "ArenaMallocPreload", dependencies: ["ArenaCoreEmbedded"],
      linkerSettings: [.unsafeFlags([
        "-Xlinker", "--version-script=\(exportsMap)", "-Xlinker", "--gc-sections",
        "-enable-experimental-feature", "Embedded",
      ])]),
    .target(name: "ArenaMallocLinked", dependencies: ["ArenaCore"], cSettings: [.define("ARENA_LINKED")]),
    .executableTarget(name: "arena-bench", dependencies: ["ArenaAllocator"], path: "Benchmarks/arena-bench"),
    .executableTarget(  // plain C: link like Embedded so only libc is loaded (no libswiftCore, no Swift backtracer)
      name: "arena-workload", path: "Benchmarks/arena-workload",
      linkerSettings: [.unsafeFlags(["-enable-experimental-feature", "Embedded"])]),
    .executableTarget(name: "arena-swift-workload", path: "Benchmarks/arena-swift-workload"),
    .executableTarget(name: "arena-stress", path: "Benchmarks/arena-stress"),
    .testTarget(
      name: "ArenaAllocatorTests",
      dependencies: ["ArenaAllocator", "ArenaCore", "CSystemShims"] + (linkMallocIntoTests ? ["ArenaMallocLinked"] : [])),
  ]
)
