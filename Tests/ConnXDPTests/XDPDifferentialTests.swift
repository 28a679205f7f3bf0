import ConnCore
import ConnTesting
import ConnXDP
import Foundation
import FuzzSupport
import Testing

/// User space against the kernel: the same Ethernet frames go through ``FrameParser`` (the reference for what a
/// frame means) and through the XDP program with `BPF_PROG_TEST_RUN`, and both must agree on whether each frame is
/// a connection attempt, with the same addresses and ports, or malformed, or neither.
///
/// The frames are the committed ones (the FuzzFrameParser seed corpus and regressions, and every frame of the lab
/// captures), then random well-formed, mutated and malformed frames from a seed that is printed, so a failure can
/// be replayed with `CONNTRACKR_DIFF_SEED=<seed>`. `CONNTRACKR_DIFF_FRAMES` sets how many frames (default 200,000).
@Suite(.enabled(if: geteuid() == 0, "loading BPF programs needs root"))
struct XDPDifferentialTests {
    /// Frames of other link types are carried over to Ethernet with the same network-layer bytes.
    static func committedFrames() throws -> [[UInt8]] {
        var frames: [[UInt8]] = []
        let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz")
        for kind in ["Corpus", "Regressions"] {
            let directory = fuzz.appendingPathComponent(kind).appendingPathComponent("FuzzFrameParser")
            guard FileManager.default.fileExists(atPath: directory.path) else { continue }
            for name in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
                let bytes = Array(try Data(contentsOf: directory.appendingPathComponent(name)))
                guard let selector = bytes.first else { continue }
                let linkType = FuzzLinkTypes.all[Int(selector) % FuzzLinkTypes.all.count]
                if let frame = DifferentialFrames.ethernet(Array(bytes.dropFirst()), linkType: linkType) {
                    frames.append(frame)
                }
            }
        }
        // The lab captures are ConnCaptureTests' resource; read them from the source tree.
        let captures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../ConnCaptureTests/Captures").standardized
        for name in try FileManager.default.contentsOfDirectory(atPath: captures.path).sorted()
        where name.hasSuffix(".pcap") {
            let capture = try #require(
                CaptureFile.frames(atPath: captures.appendingPathComponent(name).path),
                "\(name)"
            )
            frames += capture.frames.compactMap { DifferentialFrames.ethernet($0, linkType: capture.linkType) }
        }
        return frames
    }

    /// What one side made of a frame.
    enum Outcome: Hashable, CustomStringConvertible {
        case attempt(IPAddress, UInt16, IPAddress, UInt16)
        case other
        case malformed
        /// A TCP fragment that splits the header's first bytes: Swift reassembles it, the program drops it.
        case fragment
        /// An IPv6 chain longer than either follows: Swift counts it malformed, the program drops it.
        case longChain

        var description: String {
            switch self {
            case .attempt(let source, let sourcePort, let destination, let destinationPort):
                "attempt \(source) port \(sourcePort) -> \(destination) port \(destinationPort)"
            case .other: "other"
            case .malformed: "malformed"
            case .fragment: "fragment"
            case .longChain: "long chain"
            }
        }
    }

    static func swiftOutcome(_ frame: [UInt8]) -> Outcome {
        let limit = FrameParser.maxIPv6ExtensionHeaders  // the program's: it drops longer chains
        let verdict = frame.withUnsafeBytes { FrameParser.classify($0, linkType: .ethernet, ipv6HeaderLimit: limit) }
        return switch verdict {
        case .attempt(let source, let sourcePort, let destination, let destinationPort):
            .attempt(source, sourcePort, destination, destinationPort)
        case .other: .other
        case .malformed(.headerChainTooLong) where !DifferentialFrames.hasTooManyVLANTags(frame): .longChain
        case .malformed: .malformed
        case .fragment: .fragment
        }
    }

    /// The program's outcome from its ring buffer records and the change in its counters; `nil` when they
    /// contradict each other (a record and a malformed count at once, or a verdict other than pass).
    static func kernelOutcome(
        _ program: XDPProgram, _ frame: [UInt8], malformedSoFar: inout UInt64, tinyFragmentsSoFar: inout UInt64,
        longChainsSoFar: inout UInt64
    ) throws
        -> Outcome?
    {
        let verdict = try program.testRun(frame)
        var records: [XDPRecord] = []
        try program.poll(timeout: .zero) { records.append($0) }
        let statistics = try program.statistics()
        let malformed = statistics.malformed
        defer {
            malformedSoFar = malformed
            tinyFragmentsSoFar = statistics.tinyFragments
            longChainsSoFar = statistics.longHeaderChains
        }
        if statistics.longHeaderChains != longChainsSoFar {
            return verdict == .drop && records.isEmpty && malformed == malformedSoFar
                && statistics.tinyFragments == tinyFragmentsSoFar ? .longChain : nil
        }
        let wasMalformed = malformed != malformedSoFar
        let wasTinyFragment = statistics.tinyFragments != tinyFragmentsSoFar
        if wasTinyFragment {
            return verdict == .drop && records.isEmpty && !wasMalformed ? .fragment : nil
        }
        guard verdict == .pass, records.count <= 1, !(wasMalformed && !records.isEmpty) else { return nil }
        if let record = records.first {
            return .attempt(record.source, record.sourcePort, record.destination, record.destinationPort)
        }
        return wasMalformed ? .malformed : .other
    }

    @Test("The XDP program and FrameParser agree on committed, random, mutated and malformed frames")
    func kernelAgreesWithSwiftParser() throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["CONNTRACKR_DIFF_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0 ... .max)
        let count = environment["CONNTRACKR_DIFF_FRAMES"].flatMap { Int($0) } ?? 200_000
        print("XDP differential: \(count) frames from seed \(seed) (replay: CONNTRACKR_DIFF_SEED=\(seed))")

        let committed = try Self.committedFrames()
        #expect(committed.count > 500)
        var frames = DifferentialFrames(seed: seed, committed: committed)
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        var malformedSoFar = try program.statistics().malformed
        var tinyFragmentsSoFar: UInt64 = 0
        var longChainsSoFar: UInt64 = 0

        var tally: [DifferentialFrames.Kind: [String: Int]] = [:]
        var disagreements: [String] = []
        for index in 0..<count {
            let (kind, frame) = frames.next()
            let expected = Self.swiftOutcome(frame)
            let kernel = try Self.kernelOutcome(
                program, frame, malformedSoFar: &malformedSoFar, tinyFragmentsSoFar: &tinyFragmentsSoFar,
                longChainsSoFar: &longChainsSoFar
            )
            let label: String =
                switch expected {
                case .attempt: "attempt"
                case .other: "other"
                case .malformed: "malformed"
                case .fragment: "fragment"
                case .longChain: "long chain"
                }
            tally[kind, default: [:]][label, default: 0] += 1
            guard kernel != expected else { continue }
            let kernelText = kernel.map(\.description) ?? "inconsistent (a record and a malformed count, or a drop)"
            disagreements.append(
                "frame \(index) (\(kind.rawValue)): Swift \(expected), XDP \(kernelText), frame \(hex(frame))"
            )
            if disagreements.count == 20 { break }
        }
        for kind in DifferentialFrames.Kind.allCases {
            print("XDP differential: \(kind.rawValue): \(tally[kind, default: [:]].sorted { $0.key < $1.key })")
        }
        #expect(disagreements.isEmpty, "seed \(seed):\n\(disagreements.joined(separator: "\n"))")
        // Every kind of frame and every outcome must really have been exercised (the committed frames are
        // mostly well-formed: a few dozen of them are malformed).
        if disagreements.isEmpty && count >= 100_000 {
            for kind in DifferentialFrames.Kind.allCases {
                for label in ["attempt", "other", "malformed"] {
                    let least = kind == .committed ? 10 : 1000
                    #expect(tally[kind, default: [:]][label, default: 0] >= least, "\(kind.rawValue) \(label)")
                }
            }
        }
    }
}
