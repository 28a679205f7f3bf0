/// Drops traffic from blocked prefixes: the kernel-facing half of blocking (XDP maps, nftables sets, memory).
///
/// Policy (allowlist, TTL, caps, rate limits) is decided by ``BlockController``; a blocker only stores and
/// enforces entries. Implementations are safe to call from any thread.
public protocol Blocker: AnyObject, Sendable {
    /// A short name for logs, such as `xdp` or `nftables`.
    var name: String { get }

    /// Adds `entry`, or replaces the entry for the same prefix. Returns `false`, changing nothing, when the
    /// blocklist is full.
    func add(_ entry: BlockEntry) throws -> Bool

    /// Removes the entry for `prefix`; `false` when there was none.
    func remove(_ prefix: IPPrefix) throws -> Bool

    /// Every entry, expired or not.
    func entries() throws -> [BlockEntry]

    /// Removes the entries whose expiry is at or before `now` and returns them.
    func removeExpired(asOf now: Timestamp) throws -> [BlockEntry]

    /// Makes the blocker's own allowlist, where it keeps one in the kernel, hold exactly `allowlist`, so that even
    /// a block made elsewhere (by hand, by the fleet) never drops an allowlisted address. Called at start and on
    /// every reload (SIGHUP).
    func replaceAllowlist(_ allowlist: Allowlist) throws

    /// How full the blocklist is, and whether it holds `prefix` (`nil`: no prefix in question), as a decision to
    /// block needs it (``BlockController`` checks its caps
    /// with it before every block). By default worked out from ``entries()``; a blocker whose listing is slow keeps
    /// the counts in memory instead.
    func occupancy(holding prefix: IPPrefix?) throws -> BlockOccupancy
}

/// How full a blocklist is, for the decision to add one prefix to it.
public struct BlockOccupancy: Hashable, Sendable {
    /// The entries in the blocklist.
    public var count: Int
    /// Those of them learned from the fleet (origin `fleet`).
    public var fleetCount: Int
    /// Whether the blocklist holds the prefix in question already (adding it replaces an entry).
    public var holdsPrefix: Bool

    public init(count: Int, fleetCount: Int, holdsPrefix: Bool) {
        self.count = count
        self.fleetCount = fleetCount
        self.holdsPrefix = holdsPrefix
    }
}

extension Blocker {
    public func occupancy(holding prefix: IPPrefix?) throws -> BlockOccupancy {
        let current = try entries()
        return BlockOccupancy(
            count: current.count,
            fleetCount: current.count { $0.origin == .fleet },
            holdsPrefix: prefix.map { prefix in current.contains { $0.prefix == prefix } } ?? false
        )
    }

    public func removeExpired(asOf now: Timestamp) throws -> [BlockEntry] {
        var removed: [BlockEntry] = []
        for entry in try entries() {
            guard let expires = entry.expires, expires <= now else { continue }
            if try remove(entry.prefix) { removed.append(entry) }
        }
        return removed
    }
}

/// Addresses that are never blocked, each with the reason it is listed.
public struct Allowlist: Hashable, Sendable {
    /// Why a prefix is listed.
    public enum Reason: String, Hashable, Sendable, CaseIterable {
        case loopback
        /// An address of this host.
        case hostAddress = "host address"
        /// A default gateway of this host.
        case gateway
        /// Given with `--allow` or in an allow file.
        case configured
        /// An address of the fleet's store (an etcd endpoint): blocking it would cut the fleet off.
        case fleetInfrastructure = "fleet infrastructure"
        /// Given with `--fleet-allow`: what no agent of the fleet may block (monitoring, DNS, bastions).
        case fleetAllowed = "fleet allow"
    }

    /// A listed prefix and why it is listed.
    public struct Entry: Hashable, Sendable {
        public var prefix: IPPrefix
        public var reason: Reason

        public init(prefix: IPPrefix, reason: Reason) {
            self.prefix = prefix
            self.reason = reason
        }
    }

    public private(set) var entries: [Entry]

    /// An allowlist that always holds loopback (127.0.0.0/8 and ::1), plus `entries`.
    public init(_ entries: [Entry] = []) {
        self.entries = [
            Entry(prefix: IPPrefix("127.0.0.0/8")!, reason: .loopback),
            Entry(prefix: IPPrefix("::1/128")!, reason: .loopback),
        ] + entries
    }

    /// Why `address` may not be blocked, or `nil` when it may.
    public func reason(for address: IPAddress) -> Reason? {
        entries.first { $0.prefix.contains(address) }?.reason
    }

    /// This allowlist with its ``Reason/hostAddress`` entries replaced by `addresses` (loopback ones aside): what it
    /// becomes when this host's addresses change.
    public func replacingHostAddresses(with addresses: [IPAddress]) -> Allowlist {
        let kept = entries.filter { $0.reason != .hostAddress && $0.reason != .loopback }
        let hosts = Set(addresses).subtracting(kept.map(\.prefix.address)).filter { !$0.isLoopback }.sorted()
        return Allowlist(kept + hosts.map { Entry(prefix: IPPrefix(host: $0), reason: .hostAddress) })
    }

    /// Whether any listed address lies inside `prefix` (blocking that prefix would block it).
    public func overlaps(_ prefix: IPPrefix) -> Entry? {
        entries.first { $0.prefix.contains(prefix.address) || prefix.contains($0.prefix.address) }
    }
}

/// How scanners are blocked.
public struct BlockPolicy: Hashable, Sendable {
    /// How long a block lasts; `nil` blocks until removed by hand. Default one hour.
    public var ttl: Duration?
    /// IPv6 scanners are counted and blocked as this prefix of their address, since one host owns a whole /64
    /// (see ``SourceUnits`` for the exception). Default 64.
    public var ipv6PrefixLength: Int
    /// The most entries in the blocklist; further blocks are refused and counted. Default 65,536.
    public var maxBlocked: Int
    /// The most new blocks of this agent's own (origin `local`) in any minute, so forged scans cannot fill the
    /// blocklist at once. Default 120.
    public var maxBlocksPerMinute: Int
    /// The most blocks learned from the fleet (origin `fleet`) in the blocklist at once, within ``maxBlocked``, so
    /// that the fleet cannot fill the room this agent's own blocks need. Default 16,384.
    public var maxFleetBlocked: Int
    /// The most new blocks learned from the fleet in any minute: a budget of their own, separate from
    /// ``maxBlocksPerMinute``, so one host under a forged storm cannot spend every other host's budget. Default 120.
    public var maxFleetBlocksPerMinute: Int

    public init(
        ttl: Duration? = .seconds(3600),
        ipv6PrefixLength: Int = 64,
        maxBlocked: Int = 65_536,
        maxBlocksPerMinute: Int = 120,
        maxFleetBlocked: Int = 16_384,
        maxFleetBlocksPerMinute: Int = 120
    ) {
        self.ttl = ttl
        self.ipv6PrefixLength = ipv6PrefixLength
        self.maxBlocked = maxBlocked
        self.maxBlocksPerMinute = maxBlocksPerMinute
        self.maxFleetBlocked = maxFleetBlocked
        self.maxFleetBlocksPerMinute = maxFleetBlocksPerMinute
    }

}
