/// Lines of a blocklist listing (`conntrackr blocklist list`): one per entry, in text or JSON, and a text total.
///
/// Text: `198.51.100.56/32  port_scan  local  until 2021-04-28 15:29:11  12 packets dropped`. JSON: one object per
/// line with `src`, `reason`, `origin`, `since`, `expires` (RFC 3339 UTC, or null) and `dropped_packets`.
public struct BlocklistFormatter: Sendable {
    public let format: OutputFormat
    private var clock = TimeFormatter()

    public init(format: OutputFormat) {
        self.format = format
    }

    /// The line for `entry`, without its newline.
    public mutating func line(for entry: BlockEntry) -> String {
        switch format {
        case .text:
            let until = entry.expires.map { "until " + text($0, local: true) } ?? "permanent"
            return "\(entry.prefix)  \(entry.reason.rawValue)  \(entry.origin.rawValue)  \(until)  "
                + "\(entry.droppedPackets) packets dropped"
        case .json:
            let expires = entry.expires.map { "\"\(text($0, local: false))\"" } ?? "null"
            return #"{"src":"\#(entry.prefix)","reason":"\#(entry.reason.rawValue)","origin":"\#(entry.origin.rawValue)","#
                + #""since":"\#(text(entry.since, local: false))","expires":\#(expires),"dropped_packets":\#(entry.droppedPackets)}"#
        }
    }

    /// The closing line of a text listing (`3 blocked, 120 packets dropped`); `nil` in JSON, whose lines are
    /// entries only.
    public func summary(of entries: [BlockEntry]) -> String? {
        guard format == .text else { return nil }
        let total = entries.reduce(UInt64(0)) { $0 &+ $1.droppedPackets }
        return "\(entries.count) blocked, \(total) packets dropped"
    }

    private mutating func text(_ time: Timestamp, local: Bool) -> String {
        var bytes: [UInt8] = []
        if local { clock.appendLocal(time, to: &bytes) } else { clock.appendRFC3339(time, to: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
