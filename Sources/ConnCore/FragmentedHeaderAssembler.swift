/// Puts fragmented TCP headers back together, as far as telling a SYN needs: `nmap -f` splits the header into 8-byte
/// IP fragments, so the flags are not in the first one, and the host reassembles the packet and answers it.
///
/// Only the first ``TCPHeaderFragment/headerBytes`` bytes of each fragmented segment are kept, for at most
/// ``capacity`` packets at once, the oldest forgotten first, each for at most ``timeout`` (Linux's `ipfrag_time`).
/// Where fragments overlap, the first to arrive wins. Confined to its pipeline's capture thread.
public final class FragmentedHeaderAssembler {
    struct Key: Hashable {
        var source: IPAddress
        var destination: IPAddress
        var identification: UInt32
    }

    struct Partial {
        var bytes = SIMD16<UInt8>()
        /// Bit *i* set: byte *i* is known.
        var known: UInt16 = 0
        var firstSeen: Int64
        /// Its place in `arrivals`: a key started afresh (its time was up) has a later arrival than its first.
        var arrival: UInt64
    }

    struct Arrival {
        var key: Key
        var number: UInt64
    }

    /// The most packets reassembled at once.
    public let capacity: Int
    /// How long the fragments of one packet may take to arrive.
    public let timeout: Duration
    private let timeoutNanoseconds: Int64
    private var partials: [Key: Partial] = [:]
    /// Keys in arrival order, for forgetting the oldest. An arrival may outlive its packet (completed, or started
    /// afresh under a later arrival), never the reverse; only the arrival a packet names is its own.
    private var arrivals: [Arrival] = []
    private var oldestArrival = 0
    private var nextArrival: UInt64 = 0
    /// Packets forgotten unfinished to make room, since the assembler was made.
    public private(set) var evicted = 0

    /// The bytes that must be known to judge a header: ports (0..<4), data offset (12) and flags (13).
    private static let needed: UInt16 = 0b0011_0000_0000_1111

    public init(capacity: Int = 4096, timeout: Duration = .seconds(30)) {
        self.capacity = max(capacity, 1)
        self.timeout = timeout
        self.timeoutNanoseconds = timeout.nanosecondsClamped
    }

    /// Packets being reassembled.
    public var count: Int { partials.count }

    /// Adds one piece; returns the connection attempt once the pieces so far show a SYN without ACK.
    public func add(_ piece: TCPHeaderFragment, at time: Timestamp) -> ConnectionAttempt? {
        let key = Key(source: piece.source, destination: piece.destination, identification: piece.identification)
        var partial: Partial
        if let found = partials[key], time.nanoseconds &- found.firstSeen < timeoutNanoseconds {
            partial = found
        } else {
            if partials[key] == nil { makeRoom() }
            partial = Partial(firstSeen: time.nanoseconds, arrival: nextArrival)
            if arrivals.count - oldestArrival >= 2 * capacity {
                // Most arrivals belong to packets already complete: keep the live ones, in order.
                arrivals = arrivals[oldestArrival...].filter(isLive)
                oldestArrival = 0
            }
            arrivals.append(Arrival(key: key, number: nextArrival))
            nextArrival &+= 1
        }
        for index in 0..<piece.count {
            let position = piece.offset + index
            guard position < TCPHeaderFragment.headerBytes else { break }
            let bit: UInt16 = 1 << UInt16(position)
            guard partial.known & bit == 0 else { continue }
            partial.bytes[position] = piece.bytes[index]
            partial.known |= bit
        }
        guard partial.known & Self.needed == Self.needed else {
            partials[key] = partial
            return nil
        }
        partials[key] = nil
        let bytes = partial.bytes
        let flags = bytes[13]
        guard bytes[12] >> 4 >= 5, flags & 0x02 != 0, flags & 0x10 == 0 else { return nil }
        return ConnectionAttempt(
            time: time,
            source: piece.source,
            sourcePort: UInt16(bytes[0]) << 8 | UInt16(bytes[1]),
            destination: piece.destination,
            destinationPort: UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        )
    }

    /// Forgets packets whose time is up by `now`.
    public func expire(now: Timestamp) {
        while oldestArrival < arrivals.count {
            let arrival = arrivals[oldestArrival]
            if isLive(arrival), let partial = partials[arrival.key] {
                guard now.nanoseconds &- partial.firstSeen >= timeoutNanoseconds else { break }
                partials[arrival.key] = nil
            }
            oldestArrival += 1
        }
        compactArrivals()
    }

    private func makeRoom() {
        while partials.count >= capacity, oldestArrival < arrivals.count {
            let arrival = arrivals[oldestArrival]
            if isLive(arrival) {
                partials[arrival.key] = nil
                evicted += 1
            }
            oldestArrival += 1
        }
        compactArrivals()
    }

    /// Whether `arrival` is that of a packet still being reassembled.
    private func isLive(_ arrival: Arrival) -> Bool {
        partials[arrival.key]?.arrival == arrival.number
    }

    /// Drops the consumed front of `arrivals` once it is longer than the capacity.
    private func compactArrivals() {
        if oldestArrival == arrivals.count {
            arrivals.removeAll(keepingCapacity: true)
            oldestArrival = 0
        } else if oldestArrival > capacity {
            arrivals.removeFirst(oldestArrival)
            oldestArrival = 0
        }
    }
}

/// Confined to its pipeline's capture thread.
@available(*, unavailable)
extension FragmentedHeaderAssembler: Sendable {}
