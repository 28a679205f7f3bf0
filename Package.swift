// swift-tools-version:6.2

import PackageDescription

let package = Package(
    name: "conntrackr",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ConnCore", targets: ["ConnCore"]),
        .library(name: "ConnCapture", targets: ["ConnCapture"]),
        .library(name: "ConnBlock", targets: ["ConnBlock"]),
        .library(name: "ConnXDP", targets: ["ConnXDP"]),
        .library(name: "ConnMetrics", targets: ["ConnMetrics"]),
        .library(name: "ConnTesting", targets: ["ConnTesting"]),
        .library(name: "ConnFleet", targets: ["ConnFleet"]),
        .library(name: "ConnSettings", targets: ["ConnSettings"]),
        .library(name: "ConnLogging", targets: ["ConnLogging"]),
        .executable(name: "conntrackr", targets: ["conntrackr"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Pure Swift: addresses, frames, parser, tracker, detector, events, protocols, pipeline.
        .target(
            name: "ConnCore",
            dependencies: [.product(name: "Logging", package: "swift-log")]
        ),
        // libpcap, as a system library found through pkg-config.
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        // libnftables, nftables changes made in process (no nft process per change).
        .systemLibrary(
            name: "CNftables",
            pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]
        ),
        // libnftnl and libmnl (which libnftnl's pkg-config file names privately): nf_tables messages and netlink.
        .systemLibrary(
            name: "CNftnl",
            pkgConfig: "libnftnl",
            providers: [.apt(["libnftnl-dev", "libmnl-dev"])]
        ),
        // Set elements written over netlink (one batch per change), without libnftables' parser and cache.
        .target(
            name: "CNftElements",
            dependencies: ["CNftnl"],
            cSettings: [.enableWarning("all")],
            // libnftnl's pkg-config file names libmnl only as a private requirement, so it is not linked from there.
            linkerSettings: [.linkedLibrary("mnl")]
        ),
        // zlib, as a system library found through pkg-config.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        // zstd, as a system library found through pkg-config.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // Compressed captures: a stdio stream (fopencookie) that tells gzip and zstd by their magic bytes and
        // decompresses them, passing anything else through, for libpcap to read.
        .target(
            name: "CDecompress",
            dependencies: ["CZlib", "CZstd"],
            cSettings: [.enableWarning("all")]
        ),
        // The BPF loader: a narrow C surface over libbpf and the generated skeleton.
        .target(
            name: "CXDP",
            cSettings: [.enableWarning("all"), .disableWarning("unused-function")],
            linkerSettings: [.linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        // The XDP program's scan rule (bpf/scan_rule.h) built for the host, for the differential test.
        .target(name: "CScanRule"),
        // Capability dropping: prctl and capset are variadic or unwrapped in Swift's Glibc.
        .target(name: "CPrivileges"),
        .target(name: "CAddressWatch"),
        // The one home of XDP: the BPF object (program, pinned maps) and the only importer of CXDP.
        .target(
            name: "ConnXDP",
            dependencies: ["ConnCore", "CXDP"]
        ),
        .target(
            name: "ConnCapture",
            dependencies: [
                "ConnCore", "CPcap", "CDecompress", "ConnXDP", "CAddressWatch",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "ConnBlock",
            dependencies: ["ConnCore", "ConnXDP", "CNftables", "CNftElements", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "ConnMetrics",
            dependencies: [
                "ConnCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // swift-log handlers that keep one record on one line: text with escaped metadata, and JSON.
        .target(
            name: "ConnLogging",
            dependencies: ["ConnCore", .product(name: "Logging", package: "swift-log")]
        ),
        // Settings declared once, from which flags, configuration file keys and help derive.
        .target(
            name: "ConnSettings",
            dependencies: ["ConnCore", .product(name: "Yams", package: "Yams")]
        ),
        // Fleet mode: blocks shared across hosts through etcd's v3 JSON gateway.
        .target(
            name: "ConnFleet",
            dependencies: [
                "ConnCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Test kit for embedders and our own tests: frame builders, a pcap writer, in-memory sinks.
        .target(
            name: "ConnTesting",
            dependencies: ["ConnCore"]
        ),
        .executableTarget(
            name: "conntrackr",
            dependencies: [
                "ConnCore", "ConnCapture", "ConnBlock", "ConnXDP", "ConnMetrics", "ConnFleet", "ConnSettings", "ConnLogging", "CPrivileges",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // Writes synthetic captures for benchmarks and tests.
        .executableTarget(
            name: "conntrackr-synth",
            dependencies: ["ConnCore", "ConnTesting"]
        ),
        // Fuzzing (Tests/Fuzz/run-fuzz.sh): the properties the targets check, one libFuzzer executable per
        // surface, and the generator of the committed seed corpus.
        .target(
            name: "FuzzSupport",
            dependencies: ["ConnCore", "ConnBlock", "ConnTesting"],
            path: "Sources/Fuzz/FuzzSupport"
        ),
        .executableTarget(name: "FuzzFrameParser", dependencies: ["FuzzSupport"], path: "Sources/Fuzz/FuzzFrameParser"),
        .executableTarget(name: "FuzzPipeline", dependencies: ["FuzzSupport"], path: "Sources/Fuzz/FuzzPipeline"),
        .executableTarget(name: "FuzzAllowlist", dependencies: ["FuzzSupport"], path: "Sources/Fuzz/FuzzAllowlist"),
        .executableTarget(
            name: "FuzzSeeds",
            dependencies: ["FuzzSupport", "ConnCore", "ConnTesting", "CPcap"],
            path: "Sources/Fuzz/FuzzSeeds"
        ),
        .testTarget(
            name: "ConnCoreTests",
            dependencies: [
                "ConnCore", "ConnTesting", "FuzzSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "ConnCaptureTests",
            dependencies: ["ConnCore", "ConnCapture", "ConnXDP", "ConnTesting", "CZstd"],
            resources: [.copy("Captures")]
        ),
        .testTarget(
            name: "ConnXDPTests",
            dependencies: ["ConnCore", "ConnXDP", "ConnFleet", "ConnTesting", "FuzzSupport", "CScanRule"]
        ),
        .testTarget(
            name: "conntrackrTests",
            dependencies: [
                "conntrackr", "ConnBlock", "ConnCore", "ConnFleet", "ConnMetrics", "ConnTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "ConnBlockTests",
            dependencies: ["ConnCore", "ConnBlock", "ConnXDP", "ConnTesting"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "ConnLoggingTests",
            dependencies: ["ConnLogging", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "ConnFleetTests", dependencies: ["ConnCore", "ConnFleet", "ConnTesting"]),
        .testTarget(
            name: "ConnMetricsTests",
            dependencies: [
                "ConnCore", "ConnMetrics", "ConnTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)

for target in package.targets where [.executable, .test, .regular].contains(target.type) {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    settings.append(.enableUpcomingFeature("MemberImportVisibility"))
    settings.append(.enableUpcomingFeature("InternalImportsByDefault"))
    if target.type == .regular {
        // Every public type says whether it is Sendable. (No unsafe flags anywhere: SwiftPM before 6.2 refuses a
        // tagged dependency that has them, and embedding the library is the point of the split.)
        settings.append(.treatWarning("ExplicitSendable", as: .warning))
    }
    target.swiftSettings = settings
}
