/// Tells new connection attempts from SYN retransmissions.
///
/// The same 4-tuple (source, source port, destination, destination port) seen again less than ``window`` after
/// its previous SYN is a retransmission, not a new connection. Each retransmission extends the window, so a
/// client's whole back-off series (1, 2, 4, ... seconds) counts once. State is bounded: at most
/// ``capacity`` 4-tuples, the least recently seen evicted first (an evicted tuple seen again counts as new).
public final class RetransmitFilter {
    struct FourTuple: RecencyKey {
        var source: IPAddress
        var destination: IPAddress
        var ports: UInt32

        func hash(seed: UInt64) -> UInt64 {
            var state = mixHash(seed, source.high)
            state = mixHash(state, source.low)
            state = mixHash(state, destination.high)
            state = mixHash(state, destination.low)
            return mixHash(state, UInt64(ports))
        }
    }

    /// How long after a SYN the same 4-tuple is still a retransmission.
    public let window: Duration
    private let windowNanoseconds: Int64
    private let table: RecencyTable<FourTuple, Void>
    /// 4-tuples evicted to stay within capacity since the filter was made.
    public private(set) var evictions = 0

    /// Bytes of memory per tracked 4-tuple, for documentation and sizing.
    public static let bytesPerEntry = MemoryLayout<FourTuple>.stride + 8 + 8 + 4 * 4

    public init(window: Duration = .seconds(60), capacity: Int = 1_000_000) {
        self.window = window
        self.windowNanoseconds = window.nanosecondsClamped
        self.table = RecencyTable(capacity: capacity)
    }

    /// The 4-tuples currently remembered.
    public var count: Int { table.count }

    /// Pulls the table memory for `attempts` into cache ahead of ``isNewConnection(_:)``; changes nothing.
    public func warm(_ attempts: UnsafeBufferPointer<ConnectionAttempt>) {
        withUnsafeTemporaryAllocation(of: FourTuple.self, capacity: attempts.count) { keys in
            for (index, attempt) in attempts.enumerated() {
                keys.initializeElement(at: index, to: Self.key(attempt))
            }
            table.warm(UnsafeBufferPointer(keys))
        }
    }

    static func key(_ attempt: ConnectionAttempt) -> FourTuple {
        FourTuple(
            source: attempt.source,
            destination: attempt.destination,
            ports: UInt32(attempt.sourcePort) << 16 | UInt32(attempt.destinationPort)
        )
    }

    /// Records `attempt` and says whether it opens a new connection.
    public func isNewConnection(_ attempt: ConnectionAttempt) -> Bool {
        let now = attempt.time.nanoseconds
        let key = Self.key(attempt)
        defer { expire(now: now) }
        if let slot = table.find(key) {
            let isRetransmit = now &- table.lastSeen(slot) < windowNanoseconds
            table.touch(slot, at: now)
            return !isRetransmit
        }
        if table.insert(key, value: (), at: now).evicted != nil { evictions += 1 }
        return true
    }

    /// Forgets 4-tuples whose window has passed; called on every attempt and on idle ticks.
    public func expire(now: Int64) {
        while table.oldest >= 0, now &- table.lastSeen(table.oldest) >= windowNanoseconds {
            table.remove(slot: table.oldest)
        }
    }
}

/// Confined to its pipeline's capture thread.
@available(*, unavailable)
extension RetransmitFilter: Sendable {}
