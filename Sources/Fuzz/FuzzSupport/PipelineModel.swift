import ConnCore

/// A deliberately naive model of ``ConnectionPipeline`` without blocking, written from the documented rules of
/// ``RetransmitFilter`` and ``SlidingWindowScanDetector`` with plain dictionaries and arrays, so that the fuzzer
/// can compare the real pipeline's events and counts with it after every batch.
///
/// The retransmission rule keeps two generations of 4-tuples with their last-seen times: a new generation starts
/// once the current one has covered a whole window (both are dropped when two windows have passed), each holds at
/// most its cap and a SYN that finds its generation full counts as new and is not remembered. The detector's
/// table holds at most its cap of pairs and evicts the least recently active pair (the one touched longest ago)
/// when full, and forgets pairs from that end while their last-seen time is a whole window old; a touch never
/// moves a last-seen time backwards. The pipeline sweeps both at the end of a batch when a second or more has
/// passed since the previous sweep (the first batch always sweeps).
struct PipelineModel {
    /// A table with least-recently-active order: `order.first` is the oldest key.
    struct RecencyModel<Key: Hashable, Value> {
        let cap: Int
        var values: [Key: (lastSeen: Int64, value: Value)] = [:]
        var order: [Key] = []
        var evictions = 0

        init(cap: Int) { self.cap = cap }

        mutating func touch(_ key: Key, at time: Int64) {
            values[key]!.lastSeen = max(values[key]!.lastSeen, time)
            order.removeAll { $0 == key }
            order.append(key)
        }

        mutating func insert(_ key: Key, _ value: Value, at time: Int64) {
            if values.count == cap {
                values[order.removeFirst()] = nil
                evictions += 1
            }
            values[key] = (time, value)
            order.append(key)
        }

        mutating func expire(now: Int64, window: Int64) {
            while let oldest = order.first, now - values[oldest]!.lastSeen >= window {
                order.removeFirst()
                values[oldest] = nil
            }
        }
    }

    /// The retransmission filter's two generations.
    struct GenerationModel {
        let capacity: Int
        let window: Int64
        var current: [FourTuple: Int64] = [:]
        var previous: [FourTuple: Int64] = [:]
        var start: Int64?
        var evictions = 0

        var count: Int { current.count + previous.count }

        mutating func rotate(now: Int64) {
            guard let start else {
                self.start = now
                return
            }
            guard now - start >= window else { return }
            previous = now - start >= 2 * window ? [:] : current
            current = [:]
            self.start = now
        }

        mutating func isNew(_ tuple: FourTuple, now: Int64) -> Bool {
            rotate(now: now)
            if let last = current[tuple] {
                current[tuple] = max(last, now)
                return now - last >= window
            }
            let isNew = previous[tuple].map { now - $0 >= window } ?? true
            if current.count < capacity { current[tuple] = now } else { evictions += 1 }
            return isNew
        }
    }

    struct FourTuple: Hashable {
        var source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16
    }

    struct Pair: Hashable {
        var source: IPAddress, destination: IPAddress
    }

    /// The counts of ``ConnectionPipeline/Statistics`` the model keeps.
    struct Statistics: Hashable, CustomStringConvertible {
        var frames = 0, attempts = 0, newConnections = 0, portScans = 0, malformedFrames = 0

        init() {}

        init(_ real: ConnectionPipeline.Statistics) {
            frames = real.frames
            attempts = real.attempts
            newConnections = real.newConnections
            portScans = real.portScans
            malformedFrames = real.malformedFrames
        }

        var description: String {
            "frames \(frames), attempts \(attempts), new connections \(newConnections), port scans \(portScans), "
                + "malformed \(malformedFrames)"
        }
    }

    struct PairState {
        var reported = false
        /// Ports reached and when each was last reached.
        var ports: [UInt16: Int64] = [:]
    }

    /// The unit a source is counted as, with the default /64 and only loopback allowlisted: IPv4 and ::/64 (which
    /// holds ::1) sources count as themselves, other IPv6 sources as their /64.
    static func unit(of source: IPAddress) -> IPAddress {
        guard !source.isIPv4, source.high != 0 else { return source }
        return IPAddress(high: source.high, low: 0)
    }

    var fragments = FragmentedHeaderAssembler()
    let threshold: Int
    let scanWindow: Int64
    let retransmitWindow: Int64
    var connections: GenerationModel
    var pairs: RecencyModel<Pair, PairState>
    var lastSweep: Int64?
    var events: [ConnEvent] = []
    var statistics = Statistics()
    var malformed: [MalformedReason: Int] = [:]

    init(_ configuration: ConnectionPipeline.Configuration) {
        threshold = configuration.scanRule.portThreshold
        scanWindow = configuration.scanRule.window.nanosecondsClamped
        retransmitWindow = configuration.retransmitWindow.nanosecondsClamped
        connections = GenerationModel(
            capacity: configuration.maxTrackedConnections,
            window: max(1, retransmitWindow)
        )
        pairs = RecencyModel(cap: configuration.scanRule.maxTrackedPairs)
    }

    mutating func process(frame: [UInt8], linkType: LinkType, time: Timestamp) {
        statistics.frames += 1
        let verdict = frame.withUnsafeBytes { FrameParser.classify($0, linkType: linkType) }
        switch verdict {
        case .attempt(let source, let sourcePort, let destination, let destinationPort):
            handle(
                ConnectionAttempt(
                    time: time,
                    source: source,
                    sourcePort: sourcePort,
                    destination: destination,
                    destinationPort: destinationPort
                )
            )
        case .other:
            break
        case .malformed(let reason):
            statistics.malformedFrames += 1
            malformed[reason, default: 0] += 1
        case .fragment(let piece):
            // Not modelled independently: the pipeline's own assembler (its unit tests check it). Its capacity is
            // far beyond what one fuzz input holds, so eviction never differs.
            if let attempt = fragments.add(piece, at: time) { handle(attempt) }
        }
    }

    mutating func handle(_ attempt: ConnectionAttempt) {
        statistics.attempts += 1
        let now = attempt.time.nanoseconds
        // Retransmission rule.
        let tuple = FourTuple(
            source: attempt.source,
            sourcePort: attempt.sourcePort,
            destination: attempt.destination,
            destinationPort: attempt.destinationPort
        )
        if connections.isNew(tuple, now: now) {
            statistics.newConnections += 1
            events.append(.newConnection(attempt))
        }
        // Scan rule.
        let pair = Pair(source: Self.unit(of: attempt.source), destination: attempt.destination)
        if let known = pairs.values[pair] {
            if now - known.lastSeen >= scanWindow { pairs.values[pair]!.value = PairState() }
            pairs.touch(pair, at: now)
        } else {
            pairs.insert(pair, PairState(), at: now)
        }
        var state = pairs.values[pair]!.value
        if !state.reported {
            state.ports = state.ports.filter { now - $0.value < scanWindow }
            state.ports[attempt.destinationPort] = max(state.ports[attempt.destinationPort] ?? now, now)
            if state.ports.count > threshold {
                statistics.portScans += 1
                events.append(
                    .portScan(
                        PortScan(
                            time: attempt.time,
                            source: attempt.source,
                            destination: attempt.destination,
                            ports: state.ports.keys.sorted()
                        )
                    )
                )
                state = PairState(reported: true)
            }
            pairs.values[pair]!.value = state
        }
        pairs.expire(now: now, window: scanWindow)
    }

    mutating func endOfBatch(now: Timestamp) {
        if lastSweep.map({ now.nanoseconds - $0 >= 1_000_000_000 }) ?? true {
            lastSweep = now.nanoseconds
            pairs.expire(now: now.nanoseconds, window: scanWindow)
            connections.rotate(now: now.nanoseconds)
        }
    }
}
