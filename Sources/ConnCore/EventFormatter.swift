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
        switch format {
        case .text: appendText(event, to: &buffer)
        case .json: appendJSON(event, to: &buffer)
        }
        buffer.append(UInt8(ascii: "\n"))
    }

    /// The line for `event`, without its newline.
    public mutating func line(for event: ConnEvent) -> String {
        var buffer: [UInt8] = []
        append(event, to: &buffer)
        buffer.removeLast()
        return String(decoding: buffer, as: UTF8.self)
    }

    // MARK: Text

    private mutating func appendText(_ event: ConnEvent, to buffer: inout [UInt8]) {
        clock.appendLocal(event.time, to: &buffer)
        buffer.append(contentsOf: ": ".utf8)
        switch event {
        case .newConnection(let attempt):
            buffer.append(contentsOf: "New connection: ".utf8)
            appendEndpoint(attempt.source, attempt.sourcePort, to: &buffer)
            buffer.append(contentsOf: " -> ".utf8)
            appendEndpoint(attempt.destination, attempt.destinationPort, to: &buffer)
        case .portScan(let scan):
            buffer.append(contentsOf: "Port scan detected: ".utf8)
            scan.source.appendText(to: &buffer)
            buffer.append(contentsOf: " -> ".utf8)
            scan.destination.appendText(to: &buffer)
            buffer.append(contentsOf: " on ports ".utf8)
            for (index, port) in scan.ports.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                appendDecimal(UInt32(port), to: &buffer)
            }
        case .blocked(let entry, _):
            buffer.append(contentsOf: "Blocked: ".utf8)
            buffer.append(contentsOf: entry.prefix.compactDescription.utf8)
            buffer.append(contentsOf: " (".utf8)
            buffer.append(contentsOf: entry.reason.rawValue.replacing("_", with: " ").utf8)
            if entry.origin == .fleet { buffer.append(contentsOf: ", from fleet".utf8) }
            if let expires = entry.expires {
                buffer.append(contentsOf: ", until ".utf8)
                clock.appendLocal(expires, to: &buffer)
            } else {
                buffer.append(contentsOf: ", permanent".utf8)
            }
            buffer.append(UInt8(ascii: ")"))
        case .unblocked(let prefix, let reason, _):
            buffer.append(contentsOf: "Unblocked: ".utf8)
            buffer.append(contentsOf: prefix.compactDescription.utf8)
            buffer.append(contentsOf: " (\(reason.rawValue))".utf8)
        case .notBlocked(let source, let reason, _):
            buffer.append(contentsOf: "Not blocked: ".utf8)
            source.appendText(to: &buffer)
            buffer.append(contentsOf: " (\(reason))".utf8)
        }
    }

    private func appendEndpoint(_ address: IPAddress, _ port: UInt16, to buffer: inout [UInt8]) {
        if address.isIPv4 {
            address.appendText(to: &buffer)
        } else {
            buffer.append(UInt8(ascii: "["))
            address.appendText(to: &buffer)
            buffer.append(UInt8(ascii: "]"))
        }
        buffer.append(UInt8(ascii: ":"))
        appendDecimal(UInt32(port), to: &buffer)
    }

    // MARK: JSON

    private mutating func appendJSON(_ event: ConnEvent, to buffer: inout [UInt8]) {
        buffer.append(contentsOf: #"{"time":""#.utf8)
        clock.appendRFC3339(event.time, to: &buffer)
        switch event {
        case .newConnection(let attempt):
            buffer.append(contentsOf: #"","event":"new_connection","src":""#.utf8)
            attempt.source.appendText(to: &buffer)
            buffer.append(contentsOf: #"","src_port":"#.utf8)
            appendDecimal(UInt32(attempt.sourcePort), to: &buffer)
            buffer.append(contentsOf: #","dst":""#.utf8)
            attempt.destination.appendText(to: &buffer)
            buffer.append(contentsOf: #"","dst_port":"#.utf8)
            appendDecimal(UInt32(attempt.destinationPort), to: &buffer)
            buffer.append(UInt8(ascii: "}"))
        case .portScan(let scan):
            buffer.append(contentsOf: #"","event":"port_scan","src":""#.utf8)
            scan.source.appendText(to: &buffer)
            buffer.append(contentsOf: #"","dst":""#.utf8)
            scan.destination.appendText(to: &buffer)
            buffer.append(contentsOf: #"","ports":["#.utf8)
            for (index, port) in scan.ports.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                appendDecimal(UInt32(port), to: &buffer)
            }
            buffer.append(contentsOf: "]}".utf8)
        case .blocked(let entry, _):
            buffer.append(contentsOf: #"","event":"blocked","src":""#.utf8)
            buffer.append(contentsOf: entry.prefix.description.utf8)
            buffer.append(contentsOf: #"","reason":""#.utf8)
            buffer.append(contentsOf: entry.reason.rawValue.utf8)
            buffer.append(contentsOf: #"","origin":""#.utf8)
            buffer.append(contentsOf: entry.origin.rawValue.utf8)
            buffer.append(contentsOf: #"","expires":"#.utf8)
            if let expires = entry.expires {
                buffer.append(UInt8(ascii: "\""))
                clock.appendRFC3339(expires, to: &buffer)
                buffer.append(contentsOf: "\"}".utf8)
            } else {
                buffer.append(contentsOf: "null}".utf8)
            }
        case .unblocked(let prefix, let reason, _):
            buffer.append(contentsOf: #"","event":"unblocked","src":""#.utf8)
            buffer.append(contentsOf: prefix.description.utf8)
            buffer.append(contentsOf: #"","reason":""#.utf8)
            buffer.append(contentsOf: reason.rawValue.utf8)
            buffer.append(contentsOf: "\"}".utf8)
        case .notBlocked(let source, let reason, _):
            buffer.append(contentsOf: #"","event":"not_blocked","src":""#.utf8)
            source.appendText(to: &buffer)
            buffer.append(contentsOf: #"","reason":""#.utf8)
            appendJSONEscaped(reason, to: &buffer)
            buffer.append(contentsOf: "\"}".utf8)
        }
    }

    private func appendJSONEscaped(_ text: String, to buffer: inout [UInt8]) {
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                buffer.append(UInt8(ascii: "\\"))
                buffer.append(byte)
            case 0..<0x20:
                buffer.append(contentsOf: "\\u00".utf8)
                appendHex(UInt16(byte >> 4), to: &buffer)
                appendHex(UInt16(byte & 0xF), to: &buffer)
            default:
                buffer.append(byte)
            }
        }
    }
}
