// swift-tools-version: 6.1
import PackageDescription

// The preload library is the core compiled a second time as Embedded Swift (runtime-free, libc
// only), with the libc names defined in C and only those exported (version script).
let exportsMap = Context.packageDirectory + "/Sources/ArenaMallocPreload/exports.map"

let package = Package(
  name: "ArenaAllocator",
  products: [
    .library(name: "ArenaAllocator", targets: ["ArenaAllocator"]),
    .library(name: "ArenaMalloc", type: .dynamic, targets: ["ArenaMallocPreload"]),
    .executable(name: "arena-bench", targets: ["arena-bench"]),
    .executable(name: "arena-workload", targets: ["arena-workload"]),
    .executable(name: "arena-swift-workload", targets: ["arena-swift-workload"]),
  ],
  targets: [
    .target(name: "CSystemShims", path: "CSystemShims"),
    .target(name: "ArenaCore", dependencies: ["CSystemShims"]),
    .target(name: "ArenaAllocator", dependencies: ["ArenaCore", "CSystemShims"]),
    .target(
      name: "ArenaCoreEmbedded", dependencies: ["CSystemShims"],
      swiftSettings: [.enableExperimentalFeature("Embedded"), .unsafeFlags(["-Xfrontend", "-disable-stack-protector"])]),
    .target(
      name: "ArenaMallocPreload", dependencies: ["ArenaCoreEmbedded"],
      linkerSettings: [.unsafeFlags([
        "-Xlinker", "--version-script=\(exportsMap)", "-Xlinker", "--gc-sections",
        "-enable-experimental-feature", "Embedded",
      ])]),
    .executableTarget(name: "arena-bench", dependencies: ["ArenaAllocator"], path: "Benchmarks/arena-bench"),
    .executableTarget(name: "arena-workload", path: "Benchmarks/arena-workload"),
    .executableTarget(name: "arena-swift-workload", path: "Benchmarks/arena-swift-workload"),
    .testTarget(name: "ArenaAllocatorTests", dependencies: ["ArenaAllocator", "ArenaCore", "CSystemShims"]),
  ]
)
