import ConnCapture
import ConnCore
import CZstd
import ConnTesting
import Foundation
import Testing

@Suite("Replay of several files as one timeline, and of gzip and zstd files")
struct MergedPcapFileSourceTests {
    typealias Scene = PcapFileSourceTests

    /// A capture's records, split into pieces of `sizes` records (the rest in the last), each a capture of its own.
    static func split(link: LinkLayer, sizes: [Int]) -> [[UInt8]] {
        var frames: [([UInt8], Timestamp)] = []
        var time = Scene.start
        for port: UInt16 in 1...6 {
            frames.append((FrameBuilder.tcp(from: Scene.client, 40000 + port, to: Scene.victim, 80, link: link), time))
            time = time + .milliseconds(50)
            frames.append((FrameBuilder.tcp(from: Scene.attacker, 55555, to: Scene.victim, port, link: link), time))
            time = time + .milliseconds(50)
        }
        frames.append((FrameBuilder.tcp(from: Scene.client, 40001, to: Scene.victim, 80, link: link), time))  // retransmission
        var pieces: [[UInt8]] = []
        var rest = frames[...]
        for size in sizes + [Int.max] where !rest.isEmpty {
            var writer = PcapWriter(linkType: link.linkType)
            for (frame, at) in rest.prefix(size) { writer.write(frame, at: at) }
            rest = rest.dropFirst(min(size, rest.count))
            pieces.append(writer.bytes)
        }
        return pieces
    }

    func replay(_ paths: [String]) throws -> (events: [ConnEvent], statistics: ConnectionPipeline.Statistics, failures: [ConntrackrError]) {
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: sink)
        let source = MergedPcapFileSource(paths: paths)
        try source.run(into: pipeline)
        return (sink.events, pipeline.statistics, source.failures)
    }

    func single(_ bytes: [UInt8]) throws -> [ConnEvent] {
        let file = TemporaryFile(bytes)
        let sink = CollectingEventSink()
        try PcapFileSource(path: file.path).run(into: ConnectionPipeline(events: sink))
        return sink.events
    }

    @Test("A capture cut in pieces, given in any order, replays exactly as the whole", arguments: [[0, 1, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0]])
    func rotation(order: [Int]) throws {
        let whole = Self.split(link: .ethernet(), sizes: [])[0]
        let expected = try single(whole)
        #expect(expected.count == 13)  // 12 new connections and the scan
        let pieces = Self.split(link: .ethernet(), sizes: [4, 5]).map { TemporaryFile($0) }
        let (events, statistics, failures) = try replay(order.map { pieces[$0].path })
        #expect(failures.isEmpty)
        #expect(events == expected)
        #expect(statistics.frames == 13)
        // The retransmission in the last piece is known as one: state runs across files.
        #expect(statistics.newConnections == 12)
    }

    @Test("Records of equal time split across two pieces keep the whole capture's order, pieces given in reverse")
    func equalTimesAtTheCut() throws {
        let times: [Int64] = [0, 1, 2, 2, 2, 2, 3]
        var whole = PcapWriter(linkType: LinkType.ethernet)
        var first = PcapWriter(linkType: LinkType.ethernet)
        var second = PcapWriter(linkType: LinkType.ethernet)
        for (index, milliseconds) in times.enumerated() {
            let frame = FrameBuilder.tcp(from: Scene.client, 40000 + UInt16(index), to: Scene.victim, 80)
            let time = Scene.start + .milliseconds(milliseconds)
            whole.write(frame, at: time)
            if index < 4 { first.write(frame, at: time) } else { second.write(frame, at: time) }
        }
        let expected = try single(whole.bytes)
        let pieces = [TemporaryFile(first.bytes), TemporaryFile(second.bytes)]
        let (events, _, failures) = try replay([pieces[1].path, pieces[0].path])
        #expect(failures.isEmpty)
        #expect(events == expected)
    }

    @Test("Files of different link types that overlap in time are merged in time order, each with its link type")
    func interleavedLinkTypes() throws {
        var ethernet = PcapWriter(linkType: LinkType.ethernet)
        var cooked = PcapWriter(linkType: LinkType.linuxCooked2, format: .pcapng)
        for port: UInt16 in 1...4 {
            let time = Scene.start + .milliseconds(Int64(port) * 10)
            if port % 2 == 1 {
                ethernet.write(FrameBuilder.tcp(from: Scene.attacker, 55555, to: Scene.victim, port), at: time)
            } else {
                cooked.write(FrameBuilder.tcp(from: Scene.attacker, 55555, to: Scene.victim, port, link: .linuxCooked2), at: time)
            }
        }
        let files = [TemporaryFile(cooked.bytes, suffix: ".pcapng"), TemporaryFile(ethernet.bytes)]
        let (events, statistics, failures) = try replay(files.map(\.path))
        #expect(failures.isEmpty)
        #expect(statistics.malformedFrames == 0)
        let ports = events.compactMap { if case .newConnection(let attempt) = $0 { attempt.destinationPort } else { nil } }
        #expect(ports == [1, 2, 3, 4])
        let scans = events.compactMap { if case .portScan(let scan) = $0 { scan } else { nil } }
        #expect(scans.map(\.ports) == [[1, 2, 3, 4]])
        #expect(scans.first?.firstSeen == Scene.start + .milliseconds(10))
    }

    @Test("An unreadable file among good ones is named with its reason; the others are replayed")
    func unreadableAmongGood() throws {
        let pieces = Self.split(link: .ethernet(), sizes: [6]).map { TemporaryFile($0) }
        let text = TemporaryFile(Array("not a capture at all, just some text\n".utf8))
        let cut = TemporaryFile(Array(Self.split(link: .ethernet(), sizes: [])[0].dropLast(10)))
        let (events, _, failures) = try replay([pieces[0].path, text.path, "/nonexistent/x.pcap", pieces[1].path])
        #expect(failures.count == 2)
        #expect(failures.map(\.code) == [.unreadableCapture, .unreadableCapture])
        #expect(failures[0].message.contains(text.path))
        #expect(failures[1].message.contains("/nonexistent/x.pcap"))
        #expect(failures.allSatisfy { !$0.message.contains("\n") })
        #expect(events.count == 13)
        // A file cut inside its last record delivers its complete records and is named.
        let (cutEvents, _, cutFailures) = try replay([cut.path, pieces[1].path])
        #expect(cutFailures.map(\.code) == [.truncatedCapture])
        #expect(cutFailures.first?.message.contains(cut.path) == true)
        #expect(cutEvents.count == 13)
    }

    @Test("Empty captures and a single file go through the merge like any other")
    func emptyAndSingle() throws {
        let empty = TemporaryFile(PcapWriter(linkType: LinkType.ethernet).bytes)
        let whole = TemporaryFile(Self.split(link: .ethernet(), sizes: [])[0])
        let (events, _, failures) = try replay([empty.path, whole.path, empty.path])
        #expect(failures.isEmpty)
        #expect(events == (try single(Self.split(link: .ethernet(), sizes: [])[0])))
    }

    // MARK: gzip

    /// `bytes` compressed by the gzip command.
    static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        let input = TemporaryFile(bytes)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "gzip -c -n '\(input.path)' > '\(input.path).gz'"]
        try process.run()
        process.waitUntilExit()
        defer { unlink(input.path + ".gz") }
        return Array(try Data(contentsOf: URL(fileURLWithPath: input.path + ".gz")))
    }

    static let hasGzip = FileManager.default.isExecutableFile(atPath: "/bin/gzip")
        || FileManager.default.isExecutableFile(atPath: "/usr/bin/gzip")

    @Test("A gzip capture replays as the plain one, whatever its name", .enabled(if: hasGzip))
    func gzipCapture() throws {
        let plain = Scene.scene(link: .ethernet(), format: .pcapng)
        let expected = try single(plain)
        let compressed = try Self.gzip(plain)
        #expect(compressed.prefix(2) == [0x1F, 0x8B])
        #expect(try single(compressed) == expected)  // named .pcap: told by its magic
        // Two gzip members one after the other (as `cat a.gz b.gz`) are one stream.
        let half = plain.count / 2
        let members = try Self.gzip(Array(plain[..<half])) + Self.gzip(Array(plain[half...]))
        #expect(try single(members) == expected)
    }

    @Test("A damaged or cut gzip capture fails with one line and no crash", .enabled(if: hasGzip))
    func badGzip() throws {
        let plain = Scene.scene(link: .ethernet(), format: .pcap(nanosecond: false))
        let compressed = try Self.gzip(plain)
        var damaged = compressed
        for index in stride(from: 30, to: damaged.count - 8, by: 7) { damaged[index] ^= 0x5A }
        let cases: [(String, [UInt8])] = [
            ("damaged", damaged), ("cut", Array(compressed.prefix(compressed.count * 2 / 3))),
            ("header only", Array(compressed.prefix(5))), ("magic only", [0x1F, 0x8B]),
        ]
        for (name, bytes) in cases {
            let file = TemporaryFile(bytes, suffix: ".pcap.gz")
            let sink = CollectingEventSink()
            let error = #expect(throws: ConntrackrError.self, "\(name)") {
                try PcapFileSource(path: file.path).run(into: ConnectionPipeline(events: sink))
            }
            #expect(error?.message.contains(file.path) == true, "\(name)")
            #expect(error?.message.contains("\n") == false, "\(name)")
        }
        // The cut file's complete records came first, and the message says what happened.
        let cut = TemporaryFile(Array(compressed.prefix(compressed.count * 2 / 3)), suffix: ".gz")
        let error = #expect(throws: ConntrackrError.self) {
            try PcapFileSource(path: cut.path).run(into: ConnectionPipeline(events: CollectingEventSink()))
        }
        #expect(error?.code == .truncatedCapture)
        #expect(error?.message == "\(cut.path): gzip: unexpected end of file")
    }

    // MARK: zstd

    /// `bytes` compressed in-process by libzstd as one frame with a checksum, as the zstd command writes it.
    static func zstd(_ bytes: [UInt8]) -> [UInt8] {
        let context = ZSTD_createCCtx()
        defer { ZSTD_freeCCtx(context) }
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let written = output.withUnsafeMutableBytes { out in
            bytes.withUnsafeBytes { ZSTD_compress2(context, out.baseAddress, out.count, $0.baseAddress, $0.count) }
        }
        precondition(ZSTD_isError(written) == 0, "ZSTD_compress2: \(String(cString: ZSTD_getErrorName(written)))")
        return Array(output.prefix(written))
    }

    @Test("A zstd capture replays as the plain one, whatever its name, alone or in a set")
    func zstdCapture() throws {
        let plain = Scene.scene(link: .ethernet(), format: .pcapng)
        let expected = try single(plain)
        let compressed = Self.zstd(plain)
        #expect(compressed.prefix(4) == [0x28, 0xB5, 0x2F, 0xFD])
        #expect(try single(compressed) == expected)  // named .pcap: told by its magic
        // Two frames one after the other (as `cat a.zst b.zst`) are one stream.
        let half = plain.count / 2
        #expect(try single(Self.zstd(Array(plain[..<half])) + Self.zstd(Array(plain[half...]))) == expected)
        // Pieces of a rotation, compressed or not, merge as the plain ones do.
        let pieces = Self.split(link: .ethernet(), sizes: [4, 5])
        let files = [TemporaryFile(Self.zstd(pieces[2])), TemporaryFile(pieces[0]), TemporaryFile(Self.zstd(pieces[1]))]
        let (events, statistics, failures) = try replay(files.map(\.path))
        #expect(failures.isEmpty)
        #expect(statistics.frames == 13)
        #expect(events == (try single(Self.split(link: .ethernet(), sizes: [])[0])))
    }

    @Test("A damaged or cut zstd capture fails with one line and no crash")
    func badZstd() throws {
        let plain = Scene.scene(link: .ethernet(), format: .pcap(nanosecond: false))
        let compressed = Self.zstd(plain)
        var damaged = compressed
        for index in stride(from: 12, to: damaged.count - 4, by: 5) { damaged[index] ^= 0x5A }
        var badChecksum = compressed
        badChecksum[badChecksum.count - 1] ^= 0xFF
        let cases: [(String, [UInt8])] = [
            ("damaged", damaged), ("bad checksum", badChecksum),
            ("cut", Array(compressed.prefix(compressed.count * 2 / 3))),
            ("header only", Array(compressed.prefix(6))), ("magic only", [0x28, 0xB5, 0x2F, 0xFD]),
            ("garbage after the frame", compressed + [0x28, 0xB5, 0x2F, 0xFD, 1, 2, 3, 4, 5, 6, 7, 8]),
        ]
        for (name, bytes) in cases {
            let file = TemporaryFile(bytes, suffix: ".pcap.zst")
            let sink = CollectingEventSink()
            let error = #expect(throws: ConntrackrError.self, "\(name)") {
                try PcapFileSource(path: file.path).run(into: ConnectionPipeline(events: sink))
            }
            #expect(error?.message.contains(file.path) == true, "\(name)")
            #expect(error?.message.contains("zstd: ") == true, "\(name): \(error?.message ?? "")")
            #expect(error?.message.contains("\n") == false, "\(name)")
        }
        // A file cut inside its second frame: the first frame's records come first, then the one-line reason.
        let half = plain.count / 2
        let first = Self.zstd(Array(plain[..<half]))
        let second = Self.zstd(Array(plain[half...]))
        let cut = TemporaryFile(first + second.prefix(second.count / 2), suffix: ".zst")
        let sink = CollectingEventSink()
        let error = #expect(throws: ConntrackrError.self) {
            try PcapFileSource(path: cut.path).run(into: ConnectionPipeline(events: sink))
        }
        #expect(error?.code == .truncatedCapture)
        #expect(error?.message == "\(cut.path): zstd: unexpected end of file")
        #expect(!sink.events.isEmpty)
    }

    @Test("Progress is reported with the bytes and frames read")
    func progress() throws {
        let bytes = Scene.scene(link: .ethernet(), format: .pcap(nanosecond: false))
        let file = TemporaryFile(bytes)
        let seen = ProgressLog()
        try PcapFileSource(path: file.path, progress: { seen.append($0) })
            .run(into: ConnectionPipeline(events: CollectingEventSink()))
        #expect(seen.last == CaptureReadProgress(bytesRead: Int64(bytes.count), frames: 16))
        let merged = ProgressLog()
        try MergedPcapFileSource(paths: [file.path, file.path], progress: { merged.append($0) })
            .run(into: ConnectionPipeline(events: CollectingEventSink()))
        #expect(merged.last == CaptureReadProgress(bytesRead: Int64(2 * bytes.count), frames: 32))
        #expect(PcapFileSource.fileSize(of: file.path) == Int64(bytes.count))
    }
}

final class ProgressLog: @unchecked Sendable {
    // @unchecked: appended from the one thread running the source in these tests.
    private(set) var entries: [CaptureReadProgress] = []
    var last: CaptureReadProgress? { entries.last }
    func append(_ progress: CaptureReadProgress) { entries.append(progress) }
}
