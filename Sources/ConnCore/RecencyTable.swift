/// A key the ``RecencyTable`` can hash: a few machine words, hashed with a per-process secret seed so that
/// spoofed sources cannot be chosen to collide.
protocol RecencyKey: Equatable, BitwiseCopyable, Sendable {
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
/// Slots are integers into parallel arrays, so callers keep per-key data in storage of their own indexed by slot.
/// Lookups are open-addressed with linear probing (load at most one half); each bucket holds the slot and 32 bits
/// of the key's hash, so a miss rarely touches the keys. Deletions shift back, so no tombstones pile up under churn.
///
/// Per-slot storage is reserved for `capacity` slots up front but handed out in order, so the pages the
/// operating system actually commits follow the number of keys in use; the bucket array grows by doubling.
final class RecencyTable<Key: RecencyKey, Value: BitwiseCopyable> {
    /// One slot: everything a lookup and a touch need, on as few cache lines as possible.
    struct Entry {
        var key: Key
        /// When the slot was last touched, in nanoseconds.
        var lastSeen: Int64
        var newer: Int32  // towards the most recent; links free slots too
        var older: Int32  // towards the least recent
        /// The caller's data for this key.
        var value: Value
    }

    /// Marks a slot on the free list, so a rehash can walk the entries in memory order.
    private static var freeMarker: Int32 { Int32.min }

    let capacity: Int
    private let seed: UInt64
    /// Folds the loads made by ``warm(_:)`` so the optimiser cannot drop them.
    private var warmSink: UInt64 = 0
    private let entries: UnsafeMutablePointer<Entry>
    private var buckets: UnsafeMutablePointer<UInt64>
    private var bucketMask: Int
    private var freeHead: Int32 = -1
    /// Slots ever handed out; slots below this are in use or on the free list.
    private(set) var highWater = 0
    private(set) var count = 0
    /// The most recently touched slot, or -1.
    private(set) var newest: Int32 = -1
    /// The least recently touched slot, or -1.
    private(set) var oldest: Int32 = -1

    init(capacity: Int, seed: UInt64 = UInt64.random(in: .min ... .max)) {
        precondition(capacity > 0 && capacity < Int(Int32.max), "a recency table holds 1 to 2^31-2 keys")
        self.capacity = capacity
        self.seed = seed
        entries = .allocate(capacity: capacity)
        bucketMask = 15
        buckets = .allocate(capacity: 16)
        buckets.initialize(repeating: 0, count: 16)
    }

    deinit {
        entries.deallocate()
        buckets.deallocate()
    }

    /// The key in a slot that is in use.
    @inline(__always)
    func key(at slot: Int32) -> Key { entries[Int(slot)].key }

    /// When a slot in use was last touched, in nanoseconds.
    @inline(__always)
    func lastSeen(_ slot: Int32) -> Int64 { entries[Int(slot)].lastSeen }

    /// The caller's data of a slot in use.
    @inline(__always)
    func value(_ slot: Int32) -> UnsafeMutablePointer<Value> {
        UnsafeMutableRawPointer(entries + Int(slot)).advanced(by: MemoryLayout<Entry>.offset(of: \Entry.value)!)
            .assumingMemoryBound(to: Value.self)
    }

    /// The slot holding `key`, or `nil`.
    @inline(__always)
    func find(_ key: Key) -> Int32? {
        let hash = key.hash(seed: seed)
        let tag = hash & 0xFFFF_FFFF_0000_0000
        var index = Int(truncatingIfNeeded: hash) & bucketMask
        while true {
            let bucket = buckets[index]
            if bucket == 0 { return nil }
            if bucket & 0xFFFF_FFFF_0000_0000 == tag {
                let slot = Int32(truncatingIfNeeded: bucket & 0xFFFF_FFFF) - 1
                if entries[Int(slot)].key == key { return slot }
            }
            index = (index + 1) & bucketMask
        }
    }

    /// Loads the buckets, then the entries, that lookups of `keys` will need, with no dependency between one key's
    /// loads and the next, so the processor fetches the cache lines in parallel instead of one miss at a time.
    /// `visit` is called with each slot found, so callers can warm their own per-slot storage.
    func warm(_ keys: UnsafeBufferPointer<Key>, visit: (Int32) -> Void = { _ in }) {
        var folded: UInt64 = 0
        var found: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &found) { raw in
            let slots = raw.bindMemory(to: UInt64.self)
            var start = 0
            while start < keys.count {
                let end = min(start + slots.count, keys.count)
                for index in start..<end {
                    let hash = keys[index].hash(seed: seed)
                    slots[index - start] = buckets[Int(truncatingIfNeeded: hash) & bucketMask]
                }
                for index in 0..<(end - start) where slots[index] != 0 {
                    let slot = Int(slots[index] & 0xFFFF_FFFF) - 1
                    slots[index] = UInt64(slot)
                    folded &+= UInt64(bitPattern: entries[slot].lastSeen)
                }
                // A touch unlinks the entry: its neighbours in the recency list are written too.
                for index in 0..<(end - start) where slots[index] != 0 {
                    let entry = entries[Int(slots[index])]
                    if entry.newer >= 0 { folded &+= UInt64(bitPattern: entries[Int(entry.newer)].lastSeen) }
                    if entry.older >= 0 { folded &+= UInt64(bitPattern: entries[Int(entry.older)].lastSeen) }
                    visit(Int32(truncatingIfNeeded: slots[index]))
                }
                start = end
            }
        }
        warmSink &+= folded
    }

    /// Inserts a key that is not present, making it the newest. When the table is full the oldest key is evicted
    /// first and returned.
    func insert(_ key: Key, value: Value, at time: Int64) -> (slot: Int32, evicted: Key?) {
        var evicted: Key?
        if count == capacity {
            evicted = entries[Int(oldest)].key
            remove(slot: oldest)
        }
        // Grow before the new slot is in use: the rehash places every slot in use, so growing after would
        // place the new one twice, and the stale copy later resolves lookups to a freed slot.
        if (count + 1) * 2 > bucketMask + 1 { growBuckets() }
        let slot: Int32
        if freeHead >= 0 {
            slot = freeHead
            freeHead = entries[Int(slot)].newer
        } else {
            slot = Int32(highWater)
            highWater += 1
        }
        (entries + Int(slot)).initialize(to: Entry(key: key, lastSeen: time, newer: -1, older: -1, value: value))
        count += 1
        place(slot, hash: key.hash(seed: seed))
        linkAsNewest(slot)
        return (slot, evicted)
    }

    /// Marks a slot as seen at `time` and makes it the newest.
    @inline(__always)
    func touch(_ slot: Int32, at time: Int64) {
        if time > entries[Int(slot)].lastSeen { entries[Int(slot)].lastSeen = time }
        guard slot != newest else { return }
        unlink(slot)
        linkAsNewest(slot)
    }

    /// Removes a slot; its index may be handed out again by a later insert.
    func remove(slot: Int32) {
        unlink(slot)
        removeFromBuckets(slot)
        entries[Int(slot)].newer = freeHead
        entries[Int(slot)].older = Self.freeMarker
        freeHead = slot
        count -= 1
    }

    // MARK: Buckets

    private func growBuckets() {
        let oldBuckets = buckets
        let oldCount = bucketMask + 1
        let newCount = oldCount * 2
        buckets = .allocate(capacity: newCount)
        buckets.initialize(repeating: 0, count: newCount)
        bucketMask = newCount - 1
        // Walk the entries in memory order rather than chase each bucket's slot across memory.
        for slot in 0..<highWater where entries[slot].older != Self.freeMarker {
            place(Int32(slot), hash: entries[slot].key.hash(seed: seed))
        }
        _ = oldCount
        oldBuckets.deallocate()
    }

    @inline(__always)
    private func place(_ slot: Int32, hash: UInt64) {
        var index = Int(truncatingIfNeeded: hash) & bucketMask
        while buckets[index] != 0 { index = (index + 1) & bucketMask }
        buckets[index] = (hash & 0xFFFF_FFFF_0000_0000) | UInt64(slot + 1)
    }

    private func removeFromBuckets(_ slot: Int32) {
        let marker = UInt64(slot + 1)
        var index = Int(truncatingIfNeeded: entries[Int(slot)].key.hash(seed: seed)) & bucketMask
        while buckets[index] & 0xFFFF_FFFF != marker { index = (index + 1) & bucketMask }
        // Backward-shift deletion: move later members of the probe run into the hole when their home allows it.
        var hole = index
        var next = (hole + 1) & bucketMask
        while buckets[next] != 0 {
            let movedSlot = Int(buckets[next] & 0xFFFF_FFFF) - 1
            let home = Int(truncatingIfNeeded: entries[movedSlot].key.hash(seed: seed)) & bucketMask
            // `next` may fill the hole unless its home lies cyclically in (hole, next].
            let homeAfterHole = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
            if !homeAfterHole {
                buckets[hole] = buckets[next]
                hole = next
            }
            next = (next + 1) & bucketMask
        }
        buckets[hole] = 0
    }

    // MARK: Recency list

    @inline(__always)
    private func unlink(_ slot: Int32) {
        let newerSlot = entries[Int(slot)].newer
        let olderSlot = entries[Int(slot)].older
        if newerSlot >= 0 { entries[Int(newerSlot)].older = olderSlot } else { newest = olderSlot }
        if olderSlot >= 0 { entries[Int(olderSlot)].newer = newerSlot } else { oldest = newerSlot }
    }

    @inline(__always)
    private func linkAsNewest(_ slot: Int32) {
        entries[Int(slot)].older = newest
        entries[Int(slot)].newer = -1
        if newest >= 0 { entries[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}

/// Confined to the thread of the filter or detector that owns it.
@available(*, unavailable)
extension RecencyTable: Sendable {}
