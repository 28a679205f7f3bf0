/// The port-scan rule, exactly: for each (source, destination) pair, a scan is detected when SYNs from the source
/// reached more than ``ScanRule/portThreshold`` distinct destination ports within the previous
/// ``ScanRule/window``.
///
/// - A source is counted as its unit (``SourceUnits``): an IPv4 address, an IPv6 source's block prefix (/64 by
///   default). A scan is reported with the address of the SYN that crossed the threshold and the ports its unit
///   reached.
/// - The window ending at a SYN at time *t* is (*t* − window, *t*]: a port last reached exactly one window ago no
///   longer counts.
/// - A pair is reported once, when its count first goes over the threshold, with the distinct ports of the window
///   in ascending order. It is reported again only after it has been quiet (no SYN from that source to that
///   destination) for a whole window.
/// - A SYN to one of ``ScanRule/ignoredPorts`` is not seen at all: it neither counts, nor is listed, nor keeps
///   the pair active.
/// - Memory is bounded: at most ``ScanRule/maxTrackedPairs`` pairs, the least recently active evicted first, and
///   `portThreshold + 1` ports per pair. With the default threshold a pair costs ``bytesPerPair(portThreshold:)``
///   bytes (160: a cache line of key and state, one of ports, and its buckets), so a million pairs need 160 MB.
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
    /// What a source is counted as.
    public let units: SourceUnits
    private let windowNanoseconds: Int64
    private let portsPerPair: Int
    /// Per pair: how many ports are held, and whether the pair has been reported in its current active spell.
    struct PairState {
        var portCount: UInt16 = 0
        var reported = false
    }

    private let table: RecencyTable<Pair, PairState>
    /// Per slot, one record of `portsPerPair` times (when each port was last reached) followed by the ports,
    /// padded to whole cache lines so a pair's ports cost one miss. Reserved for every slot up front; pages are
    /// committed only as slots are handed out.
    private let portRecords: UnsafeMutableRawPointer
    private let portRecordStride: Int
    public private(set) var evictedPairs = 0
    /// The bitmap of ``ScanRule/ignoredPorts``, `nil` when none are: one well-predicted branch per SYN then.
    private let ignoredPorts: UnsafeMutablePointer<UInt64>?
    /// Folds the loads made by ``warm(_:)`` so the optimiser cannot drop them.
    private var warmSink: Int64 = 0


    /// Bytes used per tracked pair at a given threshold, counting the hash table at its highest load.
    public static func bytesPerPair(portThreshold: Int) -> Int {
        // A 64-byte entry (key, last seen, links, state), up to 4 buckets of 8 bytes, and the port record.
        64 + 4 * 8 + portRecordStride(portsPerPair: portThreshold + 1)
    }

    private static func portRecordStride(portsPerPair: Int) -> Int {
        (portsPerPair * (MemoryLayout<Int64>.stride + MemoryLayout<UInt16>.stride) + 63) & ~63
    }

    /// A detector of `rule`, counting sources by `units` (by default IPv6 /64s, only loopback allowlisted).
    public init(rule: ScanRule = ScanRule(), units: SourceUnits = SourceUnits()) {
        precondition(rule.portThreshold >= 0 && rule.portThreshold <= ScanRule.maxPortThreshold)
        self.rule = rule
        self.units = units
        self.windowNanoseconds = rule.window.nanosecondsClamped
        self.portsPerPair = rule.portThreshold + 1
        self.table = RecencyTable(capacity: rule.maxTrackedPairs)
        portRecordStride = Self.portRecordStride(portsPerPair: portsPerPair)
        portRecords = TableMemory.allocateZeroed(byteCount: rule.maxTrackedPairs * portRecordStride)
        if rule.ignoredPorts.isEmpty {
            ignoredPorts = nil
        } else {
            let bitmap = UnsafeMutablePointer<UInt64>.allocate(capacity: PortSet.wordCount)
            bitmap.initialize(from: rule.ignoredPorts.bitmap, count: PortSet.wordCount)
            ignoredPorts = bitmap
        }
    }

    deinit {
        ignoredPorts?.deallocate()
        TableMemory.deallocate(portRecords, byteCount: rule.maxTrackedPairs * portRecordStride)
    }

    /// When each port of a slot's record was last reached.
    @inline(__always)
    private func portTimes(_ slot: Int) -> UnsafeMutablePointer<Int64> {
        (portRecords + slot * portRecordStride).bindMemory(to: Int64.self, capacity: portsPerPair)
    }

    /// The ports of a slot's record.
    @inline(__always)
    private func ports(_ slot: Int) -> UnsafeMutablePointer<UInt16> {
        (portRecords + slot * portRecordStride + portsPerPair * MemoryLayout<Int64>.stride)
            .bindMemory(to: UInt16.self, capacity: portsPerPair)
    }

    public var trackedPairs: Int { table.count }

    /// The pair `attempt` counts for: its source's unit (the unit's first address) and its destination, or the
    /// unspecified address (`::`) standing for every destination when the rule counts by host.
    @inline(__always)
    private func pair(of attempt: ConnectionAttempt) -> Pair {
        let source = attempt.source.isIPv4 ? attempt.source : units.unit(of: attempt.source).address
        let destination = rule.destinationUnit == .host ? IPAddress(high: 0, low: 0) : attempt.destination
        return Pair(source: source, destination: destination)
    }

    public func warm(_ attempts: UnsafeBufferPointer<ConnectionAttempt>) {
        withUnsafeTemporaryAllocation(of: Pair.self, capacity: attempts.count) { keys in
            for (index, attempt) in attempts.enumerated() {
                keys.initializeElement(at: index, to: pair(of: attempt))
            }
            var folded: Int64 = 0
            table.warm(UnsafeBufferPointer(keys)) { slot in
                // The first time and the first port: one line with the default threshold, two from 6 ports up.
                folded &+= portTimes(Int(slot)).pointee &+ Int64(ports(Int(slot)).pointee)
            }
            warmSink &+= folded
        }
    }

    public func observe(_ attempt: ConnectionAttempt) -> PortScan? {
        if let ignoredPorts {
            let port = attempt.destinationPort
            if ignoredPorts[Int(port &>> 6)] & (1 &<< UInt64(port & 63)) != 0 { return nil }
        }
        let now = attempt.time.nanoseconds
        let key = pair(of: attempt)
        let slot: Int32
        if let found = table.find(key) {
            slot = found
            if now &- table.lastSeen(slot) >= windowNanoseconds {
                // Quiet for a whole window: everything it reached before has aged out, and it may be reported anew.
                table.value(slot).pointee = PairState()
            }
            table.touch(found, at: now)
        } else {
            let inserted = table.insert(key, value: PairState(), at: now)
            if inserted.evicted != nil { evictedPairs += 1 }
            slot = inserted.slot
        }
        defer { expire(nanoseconds: now) }
        let state = table.value(slot)
        guard !state.pointee.reported else { return nil }
        return recordPort(attempt.destinationPort, at: now, slot: Int(slot), state: state, attempt: attempt)
    }

    private func recordPort(
        _ port: UInt16,
        at now: Int64,
        slot: Int,
        state: UnsafeMutablePointer<PairState>,
        attempt: ConnectionAttempt
    ) -> PortScan? {
        let ports = ports(slot)
        let portTimes = portTimes(slot)
        var count = Int(state.pointee.portCount)
        var seen = false
        var index = 0
        // Drop ports that left the window, and refresh this port if it is already held.
        while index < count {
            if now &- portTimes[index] >= windowNanoseconds {
                count -= 1
                ports[index] = ports[count]
                portTimes[index] = portTimes[count]
                continue
            }
            if ports[index] == port {
                portTimes[index] = max(portTimes[index], now)
                seen = true
            }
            index += 1
        }
        if !seen {
            ports[count] = port
            portTimes[count] = now
            count += 1
        }
        guard count > rule.portThreshold else {
            state.pointee.portCount = UInt16(count)
            return nil
        }
        // No port list is needed until the pair has been quiet for a window.
        state.pointee = PairState(portCount: 0, reported: true)
        let reached = UnsafeBufferPointer(start: ports, count: count).sorted()
        let earliest = UnsafeBufferPointer(start: portTimes, count: count).min() ?? now
        return PortScan(
            time: attempt.time,
            source: attempt.source,
            destination: attempt.destination,
            ports: reached,
            firstSeen: Timestamp(nanoseconds: earliest)
        )
    }

    public func expire(now: Timestamp) {
        expire(nanoseconds: now.nanoseconds)
    }

    private func expire(nanoseconds now: Int64) {
        while table.oldest >= 0, now &- table.lastSeen(table.oldest) >= windowNanoseconds {
            table.remove(slot: table.oldest)
        }
    }
}

/// Confined to its pipeline's capture thread.
@available(*, unavailable)
extension SlidingWindowScanDetector: Sendable {}
