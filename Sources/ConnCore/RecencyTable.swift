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
    /// Entries at ``entryStride`` bytes apart from a cache-line boundary, so no entry straddles two lines: a lookup
    /// then costs one miss, and ``warm(_:visit:)`` fetches the very line the lookup will read.
    private let entryStorage: UnsafeMutableRawPointer
    private let entryStride: Int
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
        let size = MemoryLayout<Entry>.stride
        // A power of two up to a line (so entries tile lines), whole lines beyond.
        entryStride = size <= 64 ? 1 << (Int.bitWidth - (size - 1).leadingZeroBitCount) : (size + 63) & ~63
        entryStorage = TableMemory.allocateZeroed(byteCount: capacity * entryStride)
        bucketMask = 15
        buckets = Self.allocateBuckets(16)
    }

    deinit {
        TableMemory.deallocate(entryStorage, byteCount: capacity * entryStride)
        TableMemory.deallocate(UnsafeMutableRawPointer(buckets), byteCount: (bucketMask + 1) * 8)
    }

    @inline(__always)
    private func entry(_ slot: Int) -> UnsafeMutablePointer<Entry> {
        // Binding is free at run time; it keeps typed access to the raw storage defined.
        (entryStorage + slot * entryStride).bindMemory(to: Entry.self, capacity: 1)
    }

    @inline(__always)
    private func entry(_ slot: Int32) -> UnsafeMutablePointer<Entry> { entry(Int(slot)) }

    /// The key in a slot that is in use.
    @inline(__always)
    func key(at slot: Int32) -> Key { entry(slot).pointee.key }

    /// When a slot in use was last touched, in nanoseconds.
    @inline(__always)
    func lastSeen(_ slot: Int32) -> Int64 { entry(slot).pointee.lastSeen }

    /// The caller's data of a slot in use.
    @inline(__always)
    func value(_ slot: Int32) -> UnsafeMutablePointer<Value> {
        entry(slot).pointer(to: \.value)!
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
                if entry(slot).pointee.key == key { return slot }
            }
            index = (index + 1) & bucketMask
        }
    }

    /// Loads the buckets, then the entries, that lookups of `keys` will need, with no dependency between one key's
    /// loads and the next, so the processor fetches the cache lines in parallel instead of one miss at a time.
    /// Each level (buckets, entries, recency neighbours) is issued for the whole batch before the next, so a batch
    /// waits about three memory latencies, not three per key. `visit` is called with each slot found, so callers
    /// can warm their own per-slot storage.
    func warm(_ keys: UnsafeBufferPointer<Key>, visit: (Int32) -> Void = { _ in }) {
        var folded: UInt64 = 0
        withUnsafeTemporaryAllocation(of: Int.self, capacity: keys.count) { slots in
            // Hash first, then load: a loop of bare loads keeps them all in the processor's window at once, where
            // hashing between them would leave room for only a few.
            for (index, key) in keys.enumerated() {
                slots.initializeElement(at: index, to: Int(truncatingIfNeeded: key.hash(seed: seed)) & bucketMask)
            }
            for index in slots.indices {
                // A bucket holds its slot + 1, so an empty bucket gives -1: nothing to warm.
                slots[index] = Int(buckets[slots[index]] & 0xFFFF_FFFF) - 1
            }
            for slot in slots where slot >= 0 {
                folded &+= UInt64(bitPattern: entry(slot).pointee.lastSeen)
            }
            // A touch unlinks the entry: its neighbours in the recency list are written too.
            for slot in slots where slot >= 0 {
                let found = entry(slot).pointee
                if found.newer >= 0 { folded &+= UInt64(bitPattern: entry(found.newer).pointee.lastSeen) }
                if found.older >= 0 { folded &+= UInt64(bitPattern: entry(found.older).pointee.lastSeen) }
                visit(Int32(truncatingIfNeeded: slot))
            }
        }
        warmSink &+= folded
    }

    /// Inserts a key that is not present, making it the newest. When the table is full the oldest key is evicted
    /// first and returned.
    func insert(_ key: Key, value: Value, at time: Int64) -> (slot: Int32, evicted: Key?) {
        var evicted: Key?
        if count == capacity {
            evicted = entry(oldest).pointee.key
            remove(slot: oldest)
        }
        // Grow before the new slot is in use: the rehash places every slot in use, so growing after would
        // place the new one twice, and the stale copy later resolves lookups to a freed slot.
        if (count + 1) * 2 > bucketMask + 1 { growBuckets() }
        let slot: Int32
        if freeHead >= 0 {
            slot = freeHead
            freeHead = entry(slot).pointee.newer
        } else {
            slot = Int32(highWater)
            highWater += 1
        }
        entry(slot).initialize(to: Entry(key: key, lastSeen: time, newer: -1, older: -1, value: value))
        count += 1
        place(slot, hash: key.hash(seed: seed))
        linkAsNewest(slot)
        return (slot, evicted)
    }

    /// Marks a slot as seen at `time` and makes it the newest.
    @inline(__always)
    func touch(_ slot: Int32, at time: Int64) {
        if time > entry(slot).pointee.lastSeen { entry(slot).pointee.lastSeen = time }
        guard slot != newest else { return }
        unlink(slot)
        linkAsNewest(slot)
    }

    /// Removes a slot; its index may be handed out again by a later insert.
    func remove(slot: Int32) {
        unlink(slot)
        removeFromBuckets(slot)
        entry(slot).pointee.newer = freeHead
        entry(slot).pointee.older = Self.freeMarker
        freeHead = slot
        count -= 1
    }

    // MARK: Buckets

    /// `count` empty buckets.
    private static func allocateBuckets(_ count: Int) -> UnsafeMutablePointer<UInt64> {
        TableMemory.allocateZeroed(byteCount: count * 8).bindMemory(to: UInt64.self, capacity: count)
    }

    private func growBuckets() {
        let oldBuckets = buckets
        let oldCount = bucketMask + 1
        let newCount = oldCount * 2
        buckets = Self.allocateBuckets(newCount)
        bucketMask = newCount - 1
        // Walk the entries in memory order rather than chase each bucket's slot across memory.
        for slot in 0..<highWater where entry(slot).pointee.older != Self.freeMarker {
            place(Int32(slot), hash: entry(slot).pointee.key.hash(seed: seed))
        }
        TableMemory.deallocate(UnsafeMutableRawPointer(oldBuckets), byteCount: oldCount * 8)
    }

    @inline(__always)
    private func place(_ slot: Int32, hash: UInt64) {
        var index = Int(truncatingIfNeeded: hash) & bucketMask
        while buckets[index] != 0 { index = (index + 1) & bucketMask }
        buckets[index] = (hash & 0xFFFF_FFFF_0000_0000) | UInt64(slot + 1)
    }

    private func removeFromBuckets(_ slot: Int32) {
        let marker = UInt64(slot + 1)
        var index = Int(truncatingIfNeeded: entry(slot).pointee.key.hash(seed: seed)) & bucketMask
        while buckets[index] & 0xFFFF_FFFF != marker { index = (index + 1) & bucketMask }
        // Backward-shift deletion: move later members of the probe run into the hole when their home allows it.
        var hole = index
        var next = (hole + 1) & bucketMask
        while buckets[next] != 0 {
            let movedSlot = Int(buckets[next] & 0xFFFF_FFFF) - 1
            let home = Int(truncatingIfNeeded: entry(movedSlot).pointee.key.hash(seed: seed)) & bucketMask
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
        let newerSlot = entry(slot).pointee.newer
        let olderSlot = entry(slot).pointee.older
        if newerSlot >= 0 { entry(newerSlot).pointee.older = olderSlot } else { newest = olderSlot }
        if olderSlot >= 0 { entry(olderSlot).pointee.newer = newerSlot } else { oldest = newerSlot }
    }

    @inline(__always)
    private func linkAsNewest(_ slot: Int32) {
        entry(slot).pointee.older = newest
        entry(slot).pointee.newer = -1
        if newest >= 0 { entry(newest).pointee.newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}

/// Confined to the thread of the filter or detector that owns it.
@available(*, unavailable)
extension RecencyTable: Sendable {}
