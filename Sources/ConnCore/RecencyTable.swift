/// A key the ``RecencyTable`` can hash: a few machine words, hashed with a per-process secret seed so that
/// spoofed sources cannot be chosen to collide.
protocol RecencyKey: Equatable, Sendable {
    func hash(seed: UInt64) -> UInt64
}

@inline(__always)
func mixHash(_ state: UInt64, _ word: UInt64) -> UInt64 {
    // A multiply-xorshift round; strong enough with a secret seed, and far cheaper than SipHash per packet.
    var value = (state ^ word) &* 0x9E37_79B9_7F4A_7C15
    value ^= value >> 29
    value = value &* 0xBF58_476D_1CE4_E5B9
    return value ^ (value >> 32)
}

/// A fixed-capacity hash table that remembers when each key was last seen and which key is the least recent.
///
/// Slots are integers into parallel arrays, so callers keep per-key data in arrays of their own indexed by slot.
/// Lookups are open-addressed with linear probing (load at most one half) and deletions shift back, so no
/// tombstones accumulate under churn. Memory grows with use up to `capacity` and is never more than that.
struct RecencyTable<Key: RecencyKey>: Sendable {
    static var none: Int32 { -1 }

    let capacity: Int
    private let seed: UInt64
    private(set) var keys: [Key] = []
    private(set) var lastSeen: [Int64] = []
    private var newer: [Int32] = []  // towards the most recent
    private var older: [Int32] = []  // towards the least recent
    private var buckets: [Int32]
    private var freeSlots: [Int32] = []
    private(set) var count = 0
    /// The most recently touched slot, or `none`.
    private(set) var newest: Int32 = -1
    /// The least recently touched slot, or `none`.
    private(set) var oldest: Int32 = -1

    init(capacity: Int, seed: UInt64 = UInt64.random(in: .min ... .max)) {
        precondition(capacity > 0, "a recency table needs room for at least one key")
        self.capacity = capacity
        self.seed = seed
        self.buckets = Array(repeating: -1, count: 16)
    }

    /// The slot holding `key`, or `nil`.
    @inline(__always)
    func find(_ key: Key) -> Int32? {
        let mask = buckets.count - 1
        var index = Int(truncatingIfNeeded: key.hash(seed: seed)) & mask
        while true {
            let slot = buckets[index]
            if slot < 0 { return nil }
            if keys[Int(slot)] == key { return slot }
            index = (index + 1) & mask
        }
    }

    /// Inserts a key that is not present, making it the newest. When the table is full the oldest key is evicted
    /// first and returned.
    mutating func insert(_ key: Key, at time: Int64) -> (slot: Int32, evicted: Key?) {
        var evicted: Key?
        if count == capacity {
            let victim = oldest
            evicted = keys[Int(victim)]
            remove(slot: victim)
        }
        let slot: Int32
        if let reused = freeSlots.popLast() {
            slot = reused
            keys[Int(slot)] = key
            lastSeen[Int(slot)] = time
        } else {
            slot = Int32(keys.count)
            keys.append(key)
            lastSeen.append(time)
            newer.append(-1)
            older.append(-1)
        }
        count += 1
        growIfNeeded()
        placeInBucket(slot)
        linkAsNewest(slot)
        return (slot, evicted)
    }

    /// Marks a slot as seen at `time` and makes it the newest.
    @inline(__always)
    mutating func touch(_ slot: Int32, at time: Int64) {
        lastSeen[Int(slot)] = max(lastSeen[Int(slot)], time)
        guard slot != newest else { return }
        unlink(slot)
        linkAsNewest(slot)
    }

    /// Removes a slot; its index may be handed out again by a later insert.
    mutating func remove(slot: Int32) {
        unlink(slot)
        removeFromBucket(slot)
        freeSlots.append(slot)
        count -= 1
    }

    // MARK: Buckets

    private mutating func growIfNeeded() {
        guard count * 2 > buckets.count else { return }
        buckets = Array(repeating: -1, count: buckets.count * 2)
        var slot = oldest
        while slot >= 0 {
            placeInBucket(slot)
            slot = newer[Int(slot)]
        }
    }

    private mutating func placeInBucket(_ slot: Int32) {
        let mask = buckets.count - 1
        var index = Int(truncatingIfNeeded: keys[Int(slot)].hash(seed: seed)) & mask
        while buckets[index] >= 0 { index = (index + 1) & mask }
        buckets[index] = slot
    }

    private mutating func removeFromBucket(_ slot: Int32) {
        let mask = buckets.count - 1
        var index = Int(truncatingIfNeeded: keys[Int(slot)].hash(seed: seed)) & mask
        while buckets[index] != slot { index = (index + 1) & mask }
        // Backward-shift deletion: move later members of the probe run into the hole when their home allows it.
        var hole = index
        var next = (hole + 1) & mask
        while buckets[next] >= 0 {
            let home = Int(truncatingIfNeeded: keys[Int(buckets[next])].hash(seed: seed)) & mask
            // `next` may fill the hole unless its home lies cyclically in (hole, next].
            let homeAfterHole = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
            if !homeAfterHole {
                buckets[hole] = buckets[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        buckets[hole] = -1
    }

    // MARK: Recency list

    @inline(__always)
    private mutating func unlink(_ slot: Int32) {
        let newerSlot = newer[Int(slot)]
        let olderSlot = older[Int(slot)]
        if newerSlot >= 0 { older[Int(newerSlot)] = olderSlot } else { newest = olderSlot }
        if olderSlot >= 0 { newer[Int(olderSlot)] = newerSlot } else { oldest = newerSlot }
        newer[Int(slot)] = -1
        older[Int(slot)] = -1
    }

    @inline(__always)
    private mutating func linkAsNewest(_ slot: Int32) {
        older[Int(slot)] = newest
        newer[Int(slot)] = -1
        if newest >= 0 { newer[Int(newest)] = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
