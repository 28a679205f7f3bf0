import ConnCore
public import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes each log record to standard error as one JSON object per line, for log shippers.
public struct JSONLogHandler: LogHandler, Sendable {
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]

    /// A handler for the logger `label`.
    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var formatter = TimeFormatter()
        var line: [UInt8] = Array(#"{"time":""#.utf8)
        formatter.appendRFC3339(Timestamp(seconds: Int64(time.tv_sec), microseconds: Int64(time.tv_nsec) / 1000), to: &line)
        line += Array(#"","level":""#.utf8) + Array(event.level.rawValue.utf8)
        line += Array(#"","logger":"#.utf8) + Self.quoted(label)
        line += Array(#","message":"#.utf8) + Self.quoted("\(event.message)")
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += Array(",".utf8) + Self.quoted(key) + Array(":".utf8) + Self.quoted("\(value)")
        }
        line += Array("}\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    /// A JSON string literal for `text`.
    static func quoted(_ text: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += Array(#"\""#.utf8)
            case UInt8(ascii: "\\"): out += Array(#"\\"#.utf8)
            case UInt8(ascii: "\n"): out += Array(#"\n"#.utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array(#"\u00"#.utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }
}
