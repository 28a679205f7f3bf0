public import ConnCore
public import ConnXDP
import Synchronization

/// Blocks in the XDP program: entries go into its pinned maps (a hash map for single IPv4 addresses and IPv6 /64s,
/// an LPM trie for other prefixes), and from then on the program drops every packet from the prefix before the
/// network stack sees it, counting each drop in the entry.
///
/// The maps outlive the agent (blocks survive a restart) and the program enforces expiry on its own, so an
/// expired block stops dropping at once, even before ``removeExpired(asOf:)`` sweeps it away. The program only
/// enforces while it is attached: by the XDP capture source (`XDPSource` in ConnCapture), or, when another source
/// captures, by ``enforce(on:mode:)``; the blocker works on the maps either way.
///
/// Listing the maps takes two system calls per entry (a third of a second for 65,536 entries), and the
/// ``BlockController`` lists on every block and every sweep, so ``entries()`` answers from a copy in memory that
/// this blocker's own changes keep exact and that is re-read from the maps every ``refreshInterval``, to pick up
/// what other processes (`conntrackr blocklist`) changed. Drop counters in that copy are as old as the copy.
public final class XDPBlocker: Blocker {
    public var name: String { "xdp" }
    /// The maps this blocker writes.
    public let maps: PinnedBlockMaps
    /// How old the copy of the maps that ``entries()`` answers from may get.
    public let refreshInterval: Duration

    private struct Copy {
        var entries: [IPPrefix: BlockEntry] = [:]
        var readAt: ContinuousClock.Instant?
    }

    private let copy = Mutex(Copy())
    /// The program this blocker attached itself, when no XDP capture attaches it.
    private let enforcer = Mutex<XDPProgram?>(nil)

    /// IPv6 sources are blocked as this prefix of their address (the program refuses units holding an
    /// allowlisted address).
    public let ipv6UnitLength: Int

    /// A blocker on already opened maps.
    public init(maps: PinnedBlockMaps, refreshInterval: Duration = .seconds(5), ipv6UnitLength: Int = 64) {
        self.maps = maps
        self.refreshInterval = refreshInterval
        self.ipv6UnitLength = ipv6UnitLength
    }

    /// A blocker on the maps pinned under `pinRoot`, created if missing.
    /// - Throws: ``ConntrackrError`` when bpffs is not mounted, privileges are missing or the pins are of another
    ///   conntrackr version.
    public convenience init(pinRoot: String = XDPProgram.defaultPinRoot, ipv6UnitLength: Int = 64) throws {
        self.init(maps: try PinnedBlockMaps(pinRoot: pinRoot, createIfMissing: true), ipv6UnitLength: ipv6UnitLength)
    }

    /// Loads the XDP program on the same pinned maps and attaches it to `interface`, so that blocks are enforced
    /// when the capture is not the XDP source (which attaches the same program itself). Does nothing when this
    /// blocker already enforces.
    /// - Returns: the mode in use.
    /// - Throws: ``ConntrackrError`` as ``ConnXDP/XDPProgram/attach(to:mode:)`` does.
    @discardableResult
    public func enforce(on interface: String, mode: XDPProgram.AttachMode = .auto) throws -> XDPProgram.AttachMode {
        try enforcer.withLock { enforcer in
            let program = try enforcer ?? XDPProgram(pinRoot: maps.pinRoot)
            let attached = try program.attach(to: interface, mode: mode)
            enforcer = program
            return attached
        }
    }

    /// Detaches the program ``enforce(on:mode:)`` attached; blocks stay in the pinned maps.
    public func stopEnforcing() {
        enforcer.withLock { enforcer in
            enforcer?.detach()
            enforcer = nil
        }
    }

    /// Makes the program's allow maps hold exactly `allowlist`: it never drops an allowlisted source.
    public func replaceAllowlist(_ allowlist: Allowlist) throws {
        try maps.syncAllowlist(allowlist)
        try maps.syncAllowedUnits(allowlist, ipv6UnitLength: ipv6UnitLength)
    }

    /// The most prefixes the maps hold, both families and both map kinds together (each family has an exact-match
    /// map and an LPM trie of its own).
    public var capacity: Int {
        let capacity = maps.blockCapacity
        return capacity.ipv4 + capacity.ipv6
    }

    public func add(_ entry: BlockEntry) throws -> Bool {
        try copy.withLock { copy in
            guard try maps.block(entry) else { return false }
            var stored = entry
            // The map keeps the counter of a replaced entry.
            stored.droppedPackets = copy.entries[entry.prefix]?.droppedPackets ?? 0
            copy.entries[entry.prefix] = stored
            try? maps.setBlockedCount(copy.entries.count)
            return true
        }
    }

    public func remove(_ prefix: IPPrefix) throws -> Bool {
        try copy.withLock { copy in
            copy.entries[prefix] = nil
            defer { try? maps.setBlockedCount(copy.entries.count) }
            return try maps.unblock(prefix)
        }
    }

    /// Every entry, expired or not, oldest first; from a copy at most ``refreshInterval`` old.
    public func entries() throws -> [BlockEntry] {
        try copy.withLock { copy in
            try refreshIfOld(&copy)
            return Self.sorted(copy.entries.values)
        }
    }

    /// Removes the entries that have expired by `now`, checking each against the map first: another process may
    /// have renewed it since the copy was read.
    public func removeExpired(asOf now: Timestamp) throws -> [BlockEntry] {
        try copy.withLock { copy in
            try refreshIfOld(&copy)
            var removed: [BlockEntry] = []
            for candidate in copy.entries.values where candidate.expires.map({ $0 <= now }) ?? false {
                if let entry = try maps.unblock(candidate.prefix, ifExpiredAsOf: now) {
                    removed.append(entry)
                    copy.entries[candidate.prefix] = nil
                } else {
                    copy.readAt = nil  // renewed or removed elsewhere: read the maps again next time
                }
            }
            if !removed.isEmpty { try? maps.setBlockedCount(copy.entries.count) }
            return Self.sorted(removed)
        }
    }

    private func refreshIfOld(_ copy: inout Copy) throws {
        let now = ContinuousClock.now
        if let readAt = copy.readAt, now - readAt < refreshInterval { return }
        let entries = try maps.blockEntries()
        copy.entries = Dictionary(entries.map { ($0.prefix, $0) }, uniquingKeysWith: { _, last in last })
        copy.readAt = now
        // The program counts its own blocks between these exact counts (kernel enforcement's --max-blocked).
        try? maps.setBlockedCount(copy.entries.count)
    }

    private static func sorted(_ entries: some Sequence<BlockEntry>) -> [BlockEntry] {
        entries.sorted {
            ($0.since, $0.prefix.address, $0.prefix.length) < ($1.since, $1.prefix.address, $1.prefix.length)
        }
    }
}
