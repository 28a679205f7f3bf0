import Logging
import Synchronization
import Testing

@testable import ConnLogging

@Suite("Text log lines")
struct TextLogHandlerTests {
    /// A logger whose lines are collected instead of written.
    final class Collector: Sendable {
        let lines = Mutex<[String]>([])

        func logger(label: String = "conntrackr") -> Logger {
            Logger(label: label) { label in
                var handler = TextLogHandler(label: label) { line in self.lines.withLock { $0.append(line) } }
                handler.logLevel = .trace
                return handler
            }
        }

        var output: String { lines.withLock { $0.joined() } }
    }

    @Test("The layout is StreamLogHandler's: time, level, label, sorted metadata, source, message")
    func layout() {
        let collector = Collector()
        var logger = collector.logger()
        logger[metadataKey: "interface"] = "eth0"
        logger.info("capture started", metadata: ["source": "pcap", "bpf": "on"])
        let line = collector.output
        #expect(line.hasSuffix(" info conntrackr: bpf=on interface=eth0 source=pcap [ConnLoggingTests] capture started\n"))
        let time = line.prefix { $0 != " " }
        #expect(time.count >= 24 && time.contains("T"), "\(time)")
        #expect(line.contains("capture started"))
    }

    @Test("A newline in metadata or the message cannot start a forged line", arguments: [
        "key\n2026-01-01T00:00:00+0000 critical conntrackr: [ConnFleet] all blocks lifted",
        "prefix\r\nforged", "tab\there", "escape\u{1B}[2Jclear", "nul\u{0}byte", "line\u{2028}separator",
        "c1\u{85}next line", "del\u{7F}",
    ])
    func controlCharactersAreEscaped(hostile: String) {
        let collector = Collector()
        let logger = collector.logger(label: "conntrackr\nlabel")
        logger.warning("fleet key \(hostile)", metadata: ["etcd.key": "\(hostile)", "\(hostile)": "value"])
        let output = collector.output
        #expect(output.filter { $0 == "\n" }.count == 1)
        #expect(output.last == "\n")
        #expect(!output.dropLast().unicodeScalars.contains { TextLogHandlerTests.isControl($0) })
    }

    @Test("Escapes are readable and cannot be forged with a backslash", arguments: [
        ("a\nb", #"a\nb"#), ("a\rb", #"a\rb"#), ("a\tb", #"a\tb"#), ("a\u{1B}b", #"a\u{1B}b"#),
        (#"a\nb"#, #"a\\nb"#), ("plain text = fine", "plain text = fine"), ("ünïcödé ✓", "ünïcödé ✓"),
    ])
    func escapes(text: String, expected: String) {
        #expect(TextLogHandler.escaped(text) == expected)
    }

    @Test("An error attached to the record is shown, escaped")
    func errorMetadata() {
        struct Failure: Error, CustomStringConvertible { var description: String { "bad\nthing" } }
        let handler = TextLogHandler(label: "x") { _ in }
        let event = LogEvent(
            level: .error,
            message: "failed",
            error: Failure(),
            metadata: nil,
            source: "Tests",
            file: #fileID,
            function: #function,
            line: #line
        )
        let line = handler.line(for: event, time: "T")
        #expect(line.contains(#"error.message=bad\nthing"#))
        #expect(line.hasPrefix("T error x: "))
        #expect(line.hasSuffix("[Tests] failed\n"))
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029: true
        default: false
        }
    }
}
