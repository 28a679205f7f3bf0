/// Scanners a limit refused to block (the per-minute budget, a full blocklist), waiting for it to lift: a scanner
/// that first spends the budget with forged scans, then scans at leisure, is blocked at its first SYN once the
/// budget allows, as the XDP program does with kernel enforcement.
///
/// Bounded: at most ``capacity`` scanners wait, the oldest forgotten first; each is retried at most once per
/// ``retryInterval``, at its own SYNs only. Confined to its pipeline's capture thread.
struct RefusedScanners {
    struct Waiting {
        var scan: PortScan
        var lastTry: Int64
    }

    let capacity: Int
    let retryInterval: Int64
    private var waiting: [IPPrefix: Waiting] = [:]
    /// Units in the order they started waiting; a unit may outlive its entry here (blocked since).
    private var order: [IPPrefix] = []
    private var oldest = 0

    init(capacity: Int = 4096, retryInterval: Duration = .seconds(1)) {
        self.capacity = max(capacity, 1)
        self.retryInterval = retryInterval.nanosecondsClamped
    }

    var isEmpty: Bool { waiting.isEmpty }
    var count: Int { waiting.count }

    /// Remembers that blocking `unit` for `scan` was refused by a limit at `scan.time`.
    mutating func add(_ unit: IPPrefix, _ scan: PortScan) {
        if waiting[unit] == nil {
            while waiting.count >= capacity, oldest < order.count {
                waiting[order[oldest]] = nil
                oldest += 1
            }
            if oldest > capacity {
                order.removeFirst(oldest)
                oldest = 0
            }
            order.append(unit)
        }
        waiting[unit] = Waiting(scan: scan, lastTry: scan.time.nanoseconds)
    }

    /// The scan to retry for `unit` at `now`, when it waits and was last tried a ``retryInterval`` ago or more.
    mutating func due(_ unit: IPPrefix, at now: Timestamp) -> PortScan? {
        guard var entry = waiting[unit], now.nanoseconds &- entry.lastTry >= retryInterval else { return nil }
        entry.lastTry = now.nanoseconds
        waiting[unit] = entry
        return entry.scan
    }

    /// Forgets `unit` (blocked, or refused for a reason that does not lift).
    mutating func remove(_ unit: IPPrefix) {
        waiting[unit] = nil
        if waiting.isEmpty {
            order.removeAll(keepingCapacity: true)
            oldest = 0
        }
    }
}
