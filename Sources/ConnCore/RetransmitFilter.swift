/// Tells new connection attempts from SYN retransmissions.
///
/// The same 4-tuple (source, source port, destination, destination port) seen again less than ``window`` after
/// its previous SYN is a retransmission, not a new connection. Each retransmission extends the window, so a
/// client's whole back-off series (1, 2, 4, ... seconds) counts once.
///
/// Every SYN looks up a 4-tuple that is usually new, so the table is built for one cache miss per lookup: a flat
/// open-addressed array of (64-bit keyed fingerprint, last seen) pairs, with no recency list. Expiry is by
/// generation: a generation holds the tuples first seen or refreshed during one window, and only the current and
/// the previous generation are kept, which is exactly enough to find every tuple seen less than a window ago
/// (older ones are forgotten with their generation, in one step).
///
/// State is bounded: each generation holds at most ``capacity`` tuples (16 bytes each, at most half the slots in
/// use); a SYN that finds its generation full is reported as new without being remembered, and counted in
/// ``evictions``. Fingerprints are keyed with a per-process secret, so spoofed traffic cannot aim collisions.
public final class RetransmitFilter {
    /// How long after a SYN the same 4-tuple is still a retransmission.
    public let window: Duration
    /// The most 4-tuples a generation remembers.
    public let capacity: Int
    private let windowNanoseconds: Int64
    private let seed: UInt64
    // Touched for every SYN from the capture thread only; `@exclusivity(unchecked)` spares the runtime exclusivity
    // bookkeeping of each mutating call on a class property.
    @exclusivity(unchecked) private var current: FingerprintTable
    @exclusivity(unchecked) private var previous: FingerprintTable
    @exclusivity(unchecked) private var generationStart: Int64?
    /// 4-tuples not remembered because a generation was full, since the filter was made.
    @exclusivity(unchecked) public private(set) var evictions = 0

    /// Bytes of memory per remembered 4-tuple (a slot is 16 bytes and at most half the slots are used).
    public static let bytesPerEntry = 32

    public init(window: Duration = .seconds(60), capacity: Int = 1_000_000) {
        precondition(capacity > 0, "a retransmit filter remembers at least one 4-tuple")
        self.window = window
        self.capacity = capacity
        self.windowNanoseconds = max(1, window.nanosecondsClamped)
        self.seed = UInt64.random(in: .min ... .max)
        self.current = FingerprintTable(capacity: capacity)
        self.previous = FingerprintTable(capacity: capacity)
    }

    deinit {
        current.deallocate()
        previous.deallocate()
    }

    /// The 4-tuples currently remembered (both generations).
    public var count: Int { current.count + previous.count }

    @inline(__always)
    private func fingerprint(_ attempt: ConnectionAttempt) -> UInt64 {
        var state = mixHash(seed, attempt.source.high)
        state = mixHash(state, attempt.source.low)
        state = mixHash(state, attempt.destination.high)
        state = mixHash(state, attempt.destination.low)
        let value = mixHash(state, UInt64(attempt.sourcePort) << 16 | UInt64(attempt.destinationPort))
            & ~FingerprintTable.waitingBit
        return value == 0 ? 1 : value  // 0 marks an empty slot
    }

    /// Pulls the table memory for `attempts` into cache ahead of ``isNewConnection(_:)``; changes nothing.
    public func warm(_ attempts: UnsafeBufferPointer<ConnectionAttempt>) {
        var folded: UInt64 = 0
        // Hash first, then load: a loop of bare loads keeps them all in the processor's window at once.
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: attempts.count) { keys in
            for (index, attempt) in attempts.enumerated() { keys.initializeElement(at: index, to: fingerprint(attempt)) }
            // A tuple not in the current generation is looked up in the previous one too: warm both lines (an
            // empty previous generation is its first 16 KiB, already in cache).
            for key in keys { folded &+= current.peek(key) &+ previous.peek(key) }
        }
        current.warmSink &+= folded
    }

    /// Records `attempt` and says whether it opens a new connection.
    public func isNewConnection(_ attempt: ConnectionAttempt) -> Bool {
        let now = attempt.time.nanoseconds
        rotate(now: now)
        let key = fingerprint(attempt)
        if let slot = current.find(key) {
            let last = current.lastSeen(slot)
            current.refresh(slot, to: now)
            return now &- last >= windowNanoseconds
        }
        var isNew = true
        if let slot = previous.find(key) {
            isNew = now &- previous.lastSeen(slot) >= windowNanoseconds
        }
        if !current.insert(key, at: now) { evictions += 1 }
        return isNew
    }

    /// Starts a new generation once the current one has covered a whole window; called on every attempt and on idle
    /// ticks.
    public func expire(now: Int64) {
        rotate(now: now)
    }

    @inline(__always)
    private func rotate(now: Int64) {
        guard let start = generationStart else {
            generationStart = now
            return
        }
        let elapsed = now &- start
        guard elapsed >= windowNanoseconds else { return }
        if elapsed >= 2 * windowNanoseconds {
            // Both generations are older than a window: nothing in them can match any more.
            previous.removeAll()
            current.removeAll()
        } else {
            swap(&previous, &current)
            current.removeAll()
        }
        generationStart = now
    }
}

/// Confined to its pipeline's capture thread.
@available(*, unavailable)
extension RetransmitFilter: Sendable {}

/// An open-addressed table of (fingerprint, last seen) slots, linear probing, at most half full; grows by doubling
/// up to what `capacity` needs.
///
/// Slots come four to a 64-byte-aligned cache line, and a probe starts at the first slot of its home line: a lookup
/// (and its warm-up) then nearly always stays within one line, where starting mid-line would spill into the next
/// line for a quarter of the keys' probes.
///
/// Memory for the largest size is reserved up front and committed as it is first touched, and the table doubles in
/// place: growing to a final size touches that size once, where copying into a new array each time would touch
/// nearly twice as much fresh memory (and fresh pages are what a replay on a virtual machine waits for most).
struct FingerprintTable {
    typealias Slot = (fingerprint: UInt64, lastSeen: Int64)

    /// Set on the fingerprints of a doubling that still wait for their new slot; no fingerprint has it otherwise.
    static let waitingBit: UInt64 = 1 << 63

    private let slots: UnsafeMutablePointer<Slot>
    private var mask: Int
    /// Slots reserved; every slot from `mask + 1` on is zero.
    private let maxSlots: Int
    private(set) var count = 0
    private let capacity: Int
    var warmSink: UInt64 = 0
    private static let initialSlots = 1024
    private static let slotBytes = MemoryLayout<Slot>.stride

    init(capacity: Int) {
        self.capacity = capacity
        var size = Self.initialSlots
        while size < capacity * 2 { size *= 2 }
        maxSlots = size
        slots = TableMemory.allocateZeroed(byteCount: maxSlots * Self.slotBytes)
            .bindMemory(to: Slot.self, capacity: maxSlots)
        mask = Self.initialSlots - 1
    }

    /// The first slot of the cache line where probes for `fingerprint` start.
    @inline(__always)
    private func home(_ fingerprint: UInt64) -> Int { Int(truncatingIfNeeded: fingerprint) & mask & ~3 }

    @inline(__always)
    func peek(_ fingerprint: UInt64) -> UInt64 {
        slots[home(fingerprint)].fingerprint
    }

    @inline(__always)
    func find(_ fingerprint: UInt64) -> Int? {
        var index = home(fingerprint)
        while true {
            let stored = slots[index].fingerprint
            if stored == fingerprint { return index }
            if stored == 0 { return nil }
            index = (index + 1) & mask
        }
    }

    @inline(__always)
    func lastSeen(_ slot: Int) -> Int64 { slots[slot].lastSeen }

    @inline(__always)
    func refresh(_ slot: Int, to time: Int64) {
        if time > slots[slot].lastSeen { slots[slot].lastSeen = time }
    }

    /// Adds a fingerprint that is not present (nonzero, without ``waitingBit``); `false` when the table already
    /// holds `capacity` entries.
    mutating func insert(_ fingerprint: UInt64, at time: Int64) -> Bool {
        guard count < capacity else { return false }
        if (count + 1) * 2 > mask + 1 && mask + 1 < maxSlots { grow() }
        var index = home(fingerprint)
        while slots[index].fingerprint != 0 { index = (index + 1) & mask }
        slots[index] = (fingerprint, time)
        count += 1
        return true
    }

    /// Frees the slots; the table must not be used afterwards.
    func deallocate() {
        TableMemory.deallocate(UnsafeMutableRawPointer(slots), byteCount: maxSlots * Self.slotBytes)
    }

    /// Forgets everything and returns to the initial size, handing the rest back, so memory follows the traffic of
    /// the last windows.
    mutating func removeAll() {
        guard count > 0 else { return }
        TableMemory.zero(
            UnsafeMutableRawPointer(slots),
            byteCount: (mask + 1) * Self.slotBytes,
            regionByteCount: maxSlots * Self.slotBytes
        )
        mask = Self.initialSlots - 1
        count = 0
    }

    /// Doubles the table where it lies. The upper half is empty; every entry of the lower half is marked as
    /// waiting, then each is moved to the first slot from its new home that is empty or still waiting, swapping
    /// with a waiting entry found there (the swapped-in entry is placed next). Slots between a home and its entry
    /// are always placed entries, which never move again, so every probe still finds its entry: the in-place
    /// rehash of Abseil's `drop_deletes_without_resize`, applied to a doubling.
    private mutating func grow() {
        let oldSize = mask + 1
        for index in 0..<oldSize where slots[index].fingerprint != 0 { slots[index].fingerprint |= Self.waitingBit }
        mask = oldSize * 2 - 1
        var index = 0
        while index < oldSize {
            let entry = slots[index]
            guard entry.fingerprint & Self.waitingBit != 0 else {
                index += 1
                continue
            }
            let fingerprint = entry.fingerprint & ~Self.waitingBit
            var target = home(fingerprint)
            while slots[target].fingerprint != 0 && slots[target].fingerprint & Self.waitingBit == 0 {
                target = (target + 1) & mask
            }
            if target == index {
                slots[index].fingerprint = fingerprint
                index += 1
            } else if slots[target].fingerprint == 0 {
                slots[target] = (fingerprint, entry.lastSeen)
                slots[index] = (0, 0)
                index += 1
            } else {
                slots[index] = slots[target]
                slots[target] = (fingerprint, entry.lastSeen)
            }
        }
    }
}
