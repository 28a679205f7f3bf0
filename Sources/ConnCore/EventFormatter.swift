/// The output formats of event lines.
public enum OutputFormat: String, Hashable, Sendable, CaseIterable {
    /// `2021-04-28 15:28:05: New connection: 198.51.100.56:5973 -> 203.0.113.5:80`, local time.
    case text
    /// One JSON object per line, UTC times with microseconds.
    case json
}

/// Renders events as lines of bytes, without Foundation and with one cached calendar conversion per second.
public struct EventFormatter: Sendable {
    public let format: OutputFormat
    private var clock = TimeFormatter()

    public init(format: OutputFormat) {
        self.format = format
    }

    /// Appends `event` and a newline to `buffer`.
    public mutating func append(_ event: ConnEvent, to buffer: inout [UInt8]) {
        var line = LineBuffer(capacity: 256)
        append(event, to: &line)
        buffer.append(contentsOf: line.bytes)
    }

    /// The line for `event`, without its newline.
    public mutating func line(for event: ConnEvent) -> String {
        var line = LineBuffer(capacity: 256)
        switch format {
        case .text: appendText(event, to: &line)
        case .json: appendJSON(event, to: &line)
        }
        return line.text
    }

    /// Appends `event` and a newline to `buffer`.
    @inline(__always)
    mutating func append(_ event: ConnEvent, to buffer: inout LineBuffer) {
        switch format {
        case .text: appendText(event, to: &buffer)
        case .json: appendJSON(event, to: &buffer)
        }
        buffer.append(UInt8(ascii: "\n"))
    }

    // MARK: Text

    private mutating func appendText(_ event: ConnEvent, to buffer: inout LineBuffer) {
        clock.appendLocal(event.time, to: &buffer)
        buffer.append(": ")
        switch event {
        case .newConnection(let attempt):
            buffer.append("New connection: ")
            appendEndpoint(attempt.source, attempt.sourcePort, to: &buffer)
            buffer.append(" -> ")
            appendEndpoint(attempt.destination, attempt.destinationPort, to: &buffer)
        case .portScan(let scan):
            buffer.append("Port scan detected: ")
            scan.source.appendText(to: &buffer)
            buffer.append(" -> ")
            scan.destination.appendText(to: &buffer)
            buffer.append(" on ports ")
            for (index, port) in scan.ports.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                buffer.appendDecimal(UInt32(port))
            }
        case .blocked(let entry, _):
            buffer.append("Blocked: ")
            buffer.append(contentsOf: entry.prefix.compactDescription)
            buffer.append(" (")
            buffer.append(contentsOf: entry.reason.rawValue.replacing("_", with: " "))
            if entry.origin == .fleet { buffer.append(", from fleet") }
            if let expires = entry.expires {
                buffer.append(", until ")
                clock.appendLocal(expires, to: &buffer)
            } else {
                buffer.append(", permanent")
            }
            buffer.append(UInt8(ascii: ")"))
        case .unblocked(let prefix, let reason, _):
            buffer.append("Unblocked: ")
            buffer.append(contentsOf: prefix.compactDescription)
            buffer.append(contentsOf: " (\(reason.rawValue))")
        case .notBlocked(let source, let reason, _):
            buffer.append("Not blocked: ")
            source.appendText(to: &buffer)
            buffer.append(contentsOf: " (\(reason))")
        }
    }

    private func appendEndpoint(_ address: IPAddress, _ port: UInt16, to buffer: inout LineBuffer) {
        if address.isIPv4 {
            address.appendText(to: &buffer)
        } else {
            buffer.append(UInt8(ascii: "["))
            address.appendText(to: &buffer)
            buffer.append(UInt8(ascii: "]"))
        }
        buffer.append(UInt8(ascii: ":"))
        buffer.appendDecimal(UInt32(port))
    }

    // MARK: JSON

    private mutating func appendJSON(_ event: ConnEvent, to buffer: inout LineBuffer) {
        buffer.append(#"{"time":""#)
        clock.appendRFC3339(event.time, to: &buffer)
        switch event {
        case .newConnection(let attempt):
            buffer.append(#"","event":"new_connection","src":""#)
            attempt.source.appendText(to: &buffer)
            buffer.append(#"","src_port":"#)
            buffer.appendDecimal(UInt32(attempt.sourcePort))
            buffer.append(#","dst":""#)
            attempt.destination.appendText(to: &buffer)
            buffer.append(#"","dst_port":"#)
            buffer.appendDecimal(UInt32(attempt.destinationPort))
            buffer.append(UInt8(ascii: "}"))
        case .portScan(let scan):
            buffer.append(#"","event":"port_scan","src":""#)
            scan.source.appendText(to: &buffer)
            buffer.append(#"","dst":""#)
            scan.destination.appendText(to: &buffer)
            buffer.append(#"","ports":["#)
            for (index, port) in scan.ports.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                buffer.appendDecimal(UInt32(port))
            }
            buffer.append("]}")
        case .blocked(let entry, _):
            buffer.append(#"","event":"blocked","src":""#)
            buffer.append(contentsOf: entry.prefix.description)
            buffer.append(#"","reason":""#)
            buffer.append(contentsOf: entry.reason.rawValue)
            buffer.append(#"","origin":""#)
            buffer.append(contentsOf: entry.origin.rawValue)
            buffer.append(#"","expires":"#)
            if let expires = entry.expires {
                buffer.append(UInt8(ascii: "\""))
                clock.appendRFC3339(expires, to: &buffer)
                buffer.append("\"}")
            } else {
                buffer.append("null}")
            }
        case .unblocked(let prefix, let reason, _):
            buffer.append(#"","event":"unblocked","src":""#)
            buffer.append(contentsOf: prefix.description)
            buffer.append(#"","reason":""#)
            buffer.append(contentsOf: reason.rawValue)
            buffer.append("\"}")
        case .notBlocked(let source, let reason, _):
            buffer.append(#"","event":"not_blocked","src":""#)
            source.appendText(to: &buffer)
            buffer.append(#"","reason":""#)
            appendJSONEscaped(reason.description, to: &buffer)
            buffer.append("\"}")
        }
    }

    private func appendJSONEscaped(_ text: String, to buffer: inout LineBuffer) {
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                buffer.append(UInt8(ascii: "\\"))
                buffer.append(byte)
            case 0..<0x20:
                buffer.append("\\u00")
                buffer.appendHex(UInt16(byte >> 4))
                buffer.appendHex(UInt16(byte & 0xF))
            default:
                buffer.append(byte)
            }
        }
    }
}
