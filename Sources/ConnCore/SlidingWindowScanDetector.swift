/// The port-scan rule, exactly: for each (source, destination) pair, a scan is detected when SYNs from the source
/// reached more than ``ScanRule/portThreshold`` distinct destination ports within the previous
/// ``ScanRule/window``.
///
/// - The window ending at a SYN at time *t* is (*t* − window, *t*]: a port last reached exactly one window ago no
///   longer counts.
/// - A pair is reported once, when its count first goes over the threshold, with the distinct ports of the window
///   in ascending order. It is reported again only after it has been quiet (no SYN from that source to that
///   destination) for a whole window.
/// - Memory is bounded: at most ``ScanRule/maxTrackedPairs`` pairs, the least recently active evicted first, and
///   `portThreshold + 1` ports per pair. With the default threshold a pair costs ``bytesPerPair(portThreshold:)``
///   bytes (about 130), so a million pairs need about 130 MB.
public final class SlidingWindowScanDetector: ScanDetector {
    struct Pair: RecencyKey {
        var source: IPAddress
        var destination: IPAddress

        func hash(seed: UInt64) -> UInt64 {
            var state = mixHash(seed, source.high)
            state = mixHash(state, source.low)
            state = mixHash(state, destination.high)
            return mixHash(state, destination.low)
        }
    }

    public let rule: ScanRule
    private let windowNanoseconds: Int64
    private let portsPerPair: Int
    private var table: RecencyTable<Pair>
    // Per slot: how many ports are held, and whether the pair has been reported in its current active spell.
    private var portCounts: [UInt16] = []
    private var reported: [Bool] = []
    // Per slot, `portsPerPair` entries each: the port and when it was last reached.
    private var ports: [UInt16] = []
    private var portTimes: [Int64] = []
    public private(set) var evictedPairs = 0

    /// Bytes used per tracked pair at a given threshold, counting the hash table at its highest load.
    public static func bytesPerPair(portThreshold: Int) -> Int {
        let key = MemoryLayout<Pair>.stride + 8 + 4 + 4 + 4 * 4  // key, last seen, links, buckets
        return key + 2 + 1 + (portThreshold + 1) * (2 + 8)
    }

    public init(rule: ScanRule = ScanRule()) {
        precondition(rule.portThreshold >= 0 && rule.portThreshold <= ScanRule.maxPortThreshold)
        self.rule = rule
        self.windowNanoseconds = rule.window.nanosecondsClamped
        self.portsPerPair = rule.portThreshold + 1
        self.table = RecencyTable(capacity: rule.maxTrackedPairs)
    }

    public var trackedPairs: Int { table.count }

    public func observe(_ attempt: ConnectionAttempt) -> PortScan? {
        let now = attempt.time.nanoseconds
        let key = Pair(source: attempt.source, destination: attempt.destination)
        let slot: Int
        if let found = table.find(key) {
            slot = Int(found)
            if now &- table.lastSeen[slot] >= windowNanoseconds {
                // Quiet for a whole window: everything it reached before has aged out, and it may be reported anew.
                portCounts[slot] = 0
                reported[slot] = false
            }
            table.touch(found, at: now)
        } else {
            let inserted = table.insert(key, at: now)
            if inserted.evicted != nil { evictedPairs += 1 }
            slot = Int(inserted.slot)
            if slot == portCounts.count {
                portCounts.append(0)
                reported.append(false)
                ports.append(contentsOf: repeatElement(0, count: portsPerPair))
                portTimes.append(contentsOf: repeatElement(0, count: portsPerPair))
            } else {
                portCounts[slot] = 0
                reported[slot] = false
            }
        }
        defer { expire(nanoseconds: now) }
        guard !reported[slot] else { return nil }
        return recordPort(attempt.destinationPort, at: now, slot: slot, attempt: attempt)
    }

    private func recordPort(_ port: UInt16, at now: Int64, slot: Int, attempt: ConnectionAttempt) -> PortScan? {
        let base = slot * portsPerPair
        var count = Int(portCounts[slot])
        var seen = false
        var index = 0
        // Drop ports that left the window, and refresh this port if it is already held.
        while index < count {
            if now &- portTimes[base + index] >= windowNanoseconds {
                count -= 1
                ports[base + index] = ports[base + count]
                portTimes[base + index] = portTimes[base + count]
                continue
            }
            if ports[base + index] == port {
                portTimes[base + index] = max(portTimes[base + index], now)
                seen = true
            }
            index += 1
        }
        if !seen {
            ports[base + count] = port
            portTimes[base + count] = now
            count += 1
        }
        guard count > rule.portThreshold else {
            portCounts[slot] = UInt16(count)
            return nil
        }
        reported[slot] = true
        portCounts[slot] = 0  // no port list is needed until the pair has been quiet for a window
        let reached = ports[base..<(base + count)].sorted()
        return PortScan(time: attempt.time, source: attempt.source, destination: attempt.destination, ports: reached)
    }

    public func expire(now: Timestamp) {
        expire(nanoseconds: now.nanoseconds)
    }

    private func expire(nanoseconds now: Int64) {
        while table.oldest >= 0, now &- table.lastSeen[Int(table.oldest)] >= windowNanoseconds {
            table.remove(slot: table.oldest)
        }
    }
}

/// Confined to its pipeline's capture thread.
@available(*, unavailable)
extension SlidingWindowScanDetector: Sendable {}
