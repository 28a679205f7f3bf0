public import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes each log record to standard error as one line of text, in swift-log's `StreamLogHandler` layout
/// (`TIME LEVEL LABEL: KEY=VALUE ... [SOURCE] MESSAGE`), with control characters escaped.
///
/// `StreamLogHandler` writes message and metadata as they are, so a value taken from outside (an etcd key, a
/// prefix, a file name) that holds a newline would start a forged log line. Here every control character in the
/// label, message, metadata keys and values and source is written as an escape (`\n`, `\r`, `\t`, `\u{1B}`), and
/// a backslash as `\\`, so that one record is always exactly one line and an escape cannot be forged either.
public struct TextLogHandler: LogHandler, Sendable {
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    /// Where finished lines go; standard error unless a test collects them.
    private let output: @Sendable (String) -> Void

    /// A handler for the logger `label` that hands finished lines to `output` (standard error by default).
    public init(label: String, output: @escaping @Sendable (String) -> Void = TextLogHandler.writeToStandardError) {
        self.label = label
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        output(line(for: event, time: Self.localTimestamp()))
    }

    /// The line for `event` (with its newline), stamped `time`.
    func line(for event: LogEvent, time: String) -> String {
        var merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        var line = time + " \(event.level)"
        if !label.isEmpty { line += " " + Self.escaped(label) }
        line += ":"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + Self.escaped(key) + "=" + Self.escaped("\(value)")
        }
        line += " [" + Self.escaped(event.source) + "] " + Self.escaped("\(event.message)") + "\n"
        return line
    }

    /// `text` with backslashes doubled and control characters (C0, DEL, C1, and the Unicode line and paragraph
    /// separators) written as escapes.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = ""
        out.unicodeScalars.reserveCapacity(text.unicodeScalars.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += #"\\"#
            case "\n": out += #"\n"#
            case "\r": out += #"\r"#
            case "\t": out += #"\t"#
            case _ where needsEscape(scalar): out += #"\u{"# + String(scalar.value, radix: 16, uppercase: true) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x5C: true
        default: false
        }
    }

    /// The local time as `StreamLogHandler` prints it: `%Y-%m-%dT%H:%M:%S%z`.
    static func localTimestamp() -> String {
        var now = time(nil)
        var fields = tm()
        guard localtime_r(&now, &fields) != nil else { return "<unknown>" }
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &fields)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes `line` to standard error in one call, so that lines from several threads do not interleave.
    /// Writes `line` and a newline to standard error in one write.
    @Sendable public static func writeToStandardError(_ line: String) {
        let bytes = Array(line.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
