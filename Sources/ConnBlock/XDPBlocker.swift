public import ConnCore

/// Blocks in the XDP program: entries go into its pinned LPM maps, and from then on the program drops every
/// packet from the prefix before the network stack sees it, counting each drop in the entry.
///
/// The maps outlive the agent (blocks survive a restart) and the program enforces expiry on its own, so an
/// expired block stops dropping at once even before ``removeExpired(asOf:)`` sweeps it away. The program only
/// enforces while it is attached (by ``XDPSource`` in ConnCapture); the blocker works on the maps either way.
public final class XDPBlocker: Blocker {
    public var name: String { "xdp" }
    /// The maps this blocker writes.
    public let maps: PinnedBlockMaps

    /// A blocker on already opened maps.
    public init(maps: PinnedBlockMaps) {
        self.maps = maps
    }

    /// A blocker on the maps pinned under `pinRoot`, created if missing.
    /// - Throws: ``ConntrackrError`` when bpffs is not mounted, privileges are missing or the pins are of another
    ///   conntrackr version.
    public convenience init(pinRoot: String = PinnedBlockMaps.defaultPinRoot) throws {
        self.init(maps: try PinnedBlockMaps(pinRoot: pinRoot, createIfMissing: true))
    }

    /// The most prefixes the maps hold, both families together (each family has its own map of half that).
    public var capacity: Int {
        let capacity = maps.blockCapacity
        return capacity.ipv4 + capacity.ipv6
    }

    public func add(_ entry: BlockEntry) throws -> Bool {
        try maps.block(entry)
    }

    public func remove(_ prefix: IPPrefix) throws -> Bool {
        try maps.unblock(prefix)
    }

    public func entries() throws -> [BlockEntry] {
        try maps.blockEntries()
    }

    public func removeExpired(asOf now: Timestamp) throws -> [BlockEntry] {
        try maps.unblockExpired(asOf: now)
    }
}
