/// The scanners of a replay, gathered from its events for the table printed at the end (`replay --summary`).
///
/// A row is a (source, destination) pair that crossed the scan rule. It holds:
/// - the distinct ports: those of the window that detected the scan, then the port of every later new connection
///   of the pair (counted exactly, up to all 65,536);
/// - first seen: the earliest SYN of the detecting window (``PortScan/firstSeen``), else the detection;
///   last seen: the pair's latest new connection;
/// - SYNs: one per port of the detecting window, then one per later new connection (retransmissions are not
///   counted, and repeats of a port before the detection are not known): a lower bound;
/// - when the rule would have blocked it: the time of the SYN that crossed it (replay blocks nothing).
///
/// Memory is bounded: at most ``maxRows`` rows (detections of further pairs are counted in ``omittedDetections``),
/// and per row a sorted list of up to 256 ports, or past that an 8 KiB bitmap.
///
/// Feed it every event, before any filter of the written kinds (``FilteringEventSink``). Capture thread only.
public final class ScanSummary: EventSink {
    /// One scanner.
    public struct Row: Hashable, Sendable {
        public var source: IPAddress
        public var destination: IPAddress
        public var ports: PortTally
        public var firstSeen: Timestamp
        public var lastSeen: Timestamp
        public var syns: Int
        /// The time of the SYN that first crossed the rule: when `--block` would have blocked the source.
        public var blockedAt: Timestamp
        /// How many times the pair was reported (again after a quiet window).
        public var detections: Int
    }

    private struct Pair: Hashable {
        var source: IPAddress
        var destination: IPAddress
    }

    /// The most rows kept.
    public let maxRows: Int
    /// The scanners, in the order they were detected.
    public private(set) var rows: [Row] = []
    /// Detections of pairs that found the table full.
    public private(set) var omittedDetections = 0
    private var index: [Pair: Int] = [:]

    public init(maxRows: Int = 10_000) {
        self.maxRows = max(0, maxRows)
    }

    public func emit(_ event: ConnEvent) {
        switch event {
        case .newConnection(let attempt):
            guard !index.isEmpty, let row = index[Pair(source: attempt.source, destination: attempt.destination)]
            else { return }
            rows[row].ports.insert(attempt.destinationPort)
            rows[row].lastSeen = max(rows[row].lastSeen, attempt.time)
            rows[row].syns += 1
        case .portScan(let scan):
            let pair = Pair(source: scan.source, destination: scan.destination)
            if let row = index[pair] {
                for port in scan.ports { rows[row].ports.insert(port) }
                rows[row].detections += 1
                rows[row].lastSeen = max(rows[row].lastSeen, scan.time)
                return
            }
            guard rows.count < maxRows else {
                omittedDetections += 1
                return
            }
            var ports = PortTally()
            for port in scan.ports { ports.insert(port) }
            index[pair] = rows.count
            rows.append(
                Row(
                    source: scan.source,
                    destination: scan.destination,
                    ports: ports,
                    firstSeen: min(scan.firstSeen ?? scan.time, scan.time),
                    lastSeen: scan.time,
                    syns: scan.ports.count,
                    blockedAt: scan.time,
                    detections: 1
                )
            )
        case .blocked, .unblocked, .notBlocked:
            break
        }
    }

    public func flush() {}
}

@available(*, unavailable)
extension ScanSummary: Sendable {}

/// A set of ports that stays small while it is: a sorted list up to 256 ports (512 bytes), then a 65,536-bit
/// bitmap (8 KiB). Counts are exact.
public struct PortTally: Hashable, Sendable {
    private var sorted: [UInt16] = []
    private var bitmap: [UInt64]?
    /// The number of distinct ports.
    public private(set) var count = 0

    static let listLimit = 256

    public init() {}

    /// Adds a port; nothing changes if it is there already.
    public mutating func insert(_ port: UInt16) {
        if bitmap != nil {
            let word = Int(port &>> 6)
            let bit = UInt64(1) &<< UInt64(port & 63)
            if bitmap![word] & bit == 0 {
                bitmap![word] |= bit
                count += 1
            }
            return
        }
        var low = 0
        var high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < port { low = middle + 1 } else { high = middle }
        }
        if low < sorted.count, sorted[low] == port { return }
        sorted.insert(port, at: low)
        count += 1
        if sorted.count > Self.listLimit {
            var words = [UInt64](repeating: 0, count: PortSet.wordCount)
            for held in sorted { words[Int(held &>> 6)] |= UInt64(1) &<< UInt64(held & 63) }
            bitmap = words
            sorted = []
        }
    }

    /// The lowest `limit` ports, ascending.
    public func first(_ limit: Int) -> [UInt16] {
        guard let bitmap else { return Array(sorted.prefix(max(0, limit))) }
        var result: [UInt16] = []
        for (word, bits) in bitmap.enumerated() where bits != 0 {
            var remaining = bits
            while remaining != 0, result.count < limit {
                let bit = remaining.trailingZeroBitCount
                result.append(UInt16(word * 64 + bit))
                remaining &= remaining &- 1
            }
            if result.count >= limit { break }
        }
        return result
    }
}

/// What a replay read, for the end of its summary.
public struct ReplayTotals: Hashable, Sendable {
    /// Files given.
    public var files: Int
    /// Files that could not be read, or not to their end.
    public var failedFiles: Int
    public var statistics: ConnectionPipeline.Statistics
    /// Malformed frames by reason.
    public var malformed: [MalformedReason: Int]

    public init(files: Int, failedFiles: Int, statistics: ConnectionPipeline.Statistics, malformed: [MalformedReason: Int]) {
        self.files = files
        self.failedFiles = failedFiles
        self.statistics = statistics
        self.malformed = malformed
    }
}

/// Renders a replay's summary: a table of scanners, then totals (text), or one JSON object
/// `{"kind":"summary",...}` (the shape is in the README, "Replay summary").
public struct SummaryFormatter: Sendable {
    public let format: OutputFormat
    /// Ports listed per row; the count is always exact.
    public static let listedPorts = 10
    private var clock = TimeFormatter()

    public init(format: OutputFormat) { self.format = format }

    /// The summary's text, ending in a newline.
    public mutating func render(_ summary: ScanSummary, totals: ReplayTotals) -> String {
        switch format {
        case .text: text(summary, totals)
        case .json: json(summary, totals)
        }
    }

    private mutating func local(_ time: Timestamp) -> String {
        var bytes: [UInt8] = []
        clock.appendLocal(time, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private mutating func utc(_ time: Timestamp) -> String {
        var bytes: [UInt8] = []
        clock.appendRFC3339(time, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func portList(_ ports: PortTally) -> [UInt16] { ports.first(listedPorts) }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    private mutating func text(_ summary: ScanSummary, _ totals: ReplayTotals) -> String {
        var out = "\nScanners: \(summary.rows.count)"
        if summary.omittedDetections > 0 { out += " (and \(summary.omittedDetections) more detections not tabulated)" }
        out += "\n"
        if !summary.rows.isEmpty {
            let columns = [
                ("source", 0), ("destination", 0), ("ports", 7), ("first seen", 21), ("last seen", 21), ("SYNs", 8),
                ("would block at", 21),
            ]
            let addressWidth = summary.rows.reduce(11) { max($0, $1.source.description.count, $1.destination.description.count) } + 2
            func line(_ cells: [String]) -> String {
                var text = ""
                for (index, cell) in cells.enumerated() {
                    let width = index < 2 ? addressWidth : (index < columns.count ? columns[index].1 : 0)
                    text += index < columns.count ? Self.pad(cell, width) : cell
                }
                return text
            }
            out += line(columns.map(\.0) + ["port list"]) + "\n"
            for row in summary.rows {
                let listed = Self.portList(row.ports)
                var list = listed.map(String.init).joined(separator: ",")
                if row.ports.count > listed.count { list += ",…" }
                out += line([
                    row.source.description, row.destination.description, String(row.ports.count),
                    local(row.firstSeen), local(row.lastSeen), String(row.syns), local(row.blockedAt), list,
                ]) + "\n"
            }
        }
        let s = totals.statistics
        func count(_ value: Int, _ noun: String) -> String { "\(value) \(noun)\(value == 1 ? "" : "s")" }
        out += "Totals: \(count(totals.files, "file"))"
        if totals.failedFiles > 0 { out += " (\(totals.failedFiles) failed)" }
        out += ", \(count(s.frames, "frame")), \(count(s.attempts, "attempt")), "
        out += "\(count(s.newConnections, "new connection")), \(count(s.portScans, "port scan")), "
        out += "\(count(s.malformedFrames, "malformed frame"))"
        let reasons = MalformedReason.allCases.compactMap { reason in
            totals.malformed[reason].map { "\(reason.rawValue) \($0)" }
        }
        if !reasons.isEmpty { out += " (\(reasons.joined(separator: ", ")))" }
        return out + "\n"
    }

    private mutating func json(_ summary: ScanSummary, _ totals: ReplayTotals) -> String {
        let s = totals.statistics
        var out = #"{"kind":"summary","files":\#(totals.files),"files_failed":\#(totals.failedFiles)"#
        out += #","frames":\#(s.frames),"attempts":\#(s.attempts),"new_connections":\#(s.newConnections)"#
        out += #","port_scans":\#(s.portScans),"malformed_frames":\#(s.malformedFrames),"malformed":{"#
        out += MalformedReason.allCases.map { #""\#($0.rawValue)":\#(totals.malformed[$0] ?? 0)"# }
            .joined(separator: ",")
        out += #"},"scanners":["#
        for (index, row) in summary.rows.enumerated() {
            if index > 0 { out += "," }
            let listed = Self.portList(row.ports).map(String.init).joined(separator: ",")
            out += #"{"src":"\#(row.source)","dst":"\#(row.destination)","ports":\#(row.ports.count)"#
            out += #","port_list":[\#(listed)],"first_seen":"\#(utc(row.firstSeen))","last_seen":"\#(utc(row.lastSeen))""#
            out += #","syns":\#(row.syns),"detections":\#(row.detections),"would_block_at":"\#(utc(row.blockedAt))"}"#
        }
        out += #"],"scanners_omitted":\#(summary.omittedDetections)}"#
        return out + "\n"
    }
}
