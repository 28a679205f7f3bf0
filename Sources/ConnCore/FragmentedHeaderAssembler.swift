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
    }

    /// The most packets reassembled at once.
    public let capacity: Int
    /// How long the fragments of one packet may take to arrive.
    public let timeout: Duration
    private let timeoutNanoseconds: Int64
    private var partials: [Key: Partial] = [:]
    /// Keys in arrival order, for forgetting the oldest; a key may outlive its entry (completed), never the reverse.
    private var arrivals: [Key] = []
    private var oldestArrival = 0
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
            partial = Partial(firstSeen: time.nanoseconds)
            if arrivals.count - oldestArrival >= 2 * capacity {
                // Most keys belong to packets already complete: keep the live ones, in order.
                arrivals = arrivals[oldestArrival...].filter { partials[$0] != nil }
                oldestArrival = 0
            }
            arrivals.append(key)
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
            let key = arrivals[oldestArrival]
            if let partial = partials[key] {
                guard now.nanoseconds &- partial.firstSeen >= timeoutNanoseconds else { break }
                partials[key] = nil
            }
            oldestArrival += 1
        }
        compactArrivals()
    }

    private func makeRoom() {
        while partials.count >= capacity, oldestArrival < arrivals.count {
            if partials.removeValue(forKey: arrivals[oldestArrival]) != nil { evicted += 1 }
            oldestArrival += 1
        }
        compactArrivals()
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
