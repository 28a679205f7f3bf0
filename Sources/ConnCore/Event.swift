/// Why a source was blocked. Few values, usable as a metric label.
public enum BlockReason: String, Hashable, Sendable, Codable {
    case portScan = "port_scan"
    /// Added by hand with `conntrackr blocklist add`.
    case manual
}

/// Where a block came from.
public enum BlockOrigin: String, Hashable, Sendable, Codable {
    /// Decided by this agent.
    case local
    /// Learned from another host through fleet mode.
    case fleet
}

/// Why a block was lifted.
public enum UnblockReason: String, Hashable, Sendable {
    case expired
    case removed
}

/// A prefix that is being dropped.
public struct BlockEntry: Hashable, Sendable {
    public var prefix: IPPrefix
    public var reason: BlockReason
    public var origin: BlockOrigin
    /// When the block was made.
    public var since: Timestamp
    /// When the block lapses; `nil` for a permanent block.
    public var expires: Timestamp?
    /// Packets dropped because of this entry, where the blocker counts them.
    public var droppedPackets: UInt64

    public init(
        prefix: IPPrefix,
        reason: BlockReason,
        origin: BlockOrigin = .local,
        since: Timestamp,
        expires: Timestamp?,
        droppedPackets: UInt64 = 0
    ) {
        self.prefix = prefix
        self.reason = reason
        self.origin = origin
        self.since = since
        self.expires = expires
        self.droppedPackets = droppedPackets
    }
}

/// One line of conntrackr's output.
public enum ConnEvent: Hashable, Sendable {
    /// A new inbound connection attempt (retransmissions are not reported again).
    case newConnection(ConnectionAttempt)
    /// A port scan, reported once per active spell of a (source, destination) pair.
    case portScan(PortScan)
    /// A prefix is now dropped.
    case blocked(BlockEntry, at: Timestamp)
    /// A prefix is no longer dropped.
    case unblocked(IPPrefix, reason: UnblockReason, at: Timestamp)
    /// A scanner that was not blocked, and why (allowlisted, blocklist full, rate limited).
    case notBlocked(IPAddress, reason: String, at: Timestamp)

    /// When the event happened.
    public var time: Timestamp {
        switch self {
        case .newConnection(let attempt): attempt.time
        case .portScan(let scan): scan.time
        case .blocked(_, let time), .unblocked(_, _, let time), .notBlocked(_, _, let time): time
        }
    }
}
