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

/// Why a scanner, or a block learned from the fleet, was not blocked.
public enum BlockRefusal: Hashable, Sendable, CustomStringConvertible {
    /// Blocking would drop an allowlisted address: this entry of the allowlist.
    case allowlisted(Allowlist.Entry)
    /// The per-minute limit of new blocks was reached.
    case rateLimited
    /// The blocklist holds its most entries already.
    case blocklistFull
    /// The blocker failed; its error's text.
    case failed(String)

    /// The kind of a refusal: few values, usable as a metric label.
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case allowlisted
        case rateLimited = "rate_limited"
        case blocklistFull = "blocklist_full"
        case error
    }

    public var kind: Kind {
        switch self {
        case .allowlisted: .allowlisted
        case .rateLimited: .rateLimited
        case .blocklistFull: .blocklistFull
        case .failed: .error
        }
    }

    /// Whether the same block may succeed later without anything but time changing (a limit that lifts).
    public var mayLift: Bool { self == .rateLimited || self == .blocklistFull }

    /// The reason as events show it: `allowlisted: gateway 203.0.113.9`, `rate_limited`, `error: ...`.
    public var description: String {
        switch self {
        case .allowlisted(let entry): "allowlisted: \(entry.reason.rawValue) \(entry.prefix.compactDescription)"
        case .rateLimited, .blocklistFull: kind.rawValue
        case .failed(let text): "error: \(text)"
        }
    }
}

/// What ``BlockController`` decided about a scan or a learned block.
public enum BlockDecision: Hashable, Sendable {
    /// The entry is now in the blocklist.
    case blocked(BlockEntry)
    /// Nothing was blocked, for this reason.
    case refused(BlockRefusal)

    /// The event reporting this decision about `subject` (the scanner, or the learned prefix's address).
    public func event(about subject: IPAddress, at time: Timestamp) -> ConnEvent {
        switch self {
        case .blocked(let entry): .blocked(entry, at: time)
        case .refused(let refusal): .notBlocked(subject, reason: refusal, at: time)
        }
    }
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

extension BlockEntry {
    /// Orders entries by prefix (address, then length), so that listings and tests are stable.
    public static func prefixOrder(_ lhs: BlockEntry, _ rhs: BlockEntry) -> Bool {
        (lhs.prefix.address, lhs.prefix.length) < (rhs.prefix.address, rhs.prefix.length)
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
    case notBlocked(IPAddress, reason: BlockRefusal, at: Timestamp)

    /// The kinds of event, named as the output names them (`"event":"port_scan"`).
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case newConnection = "new_connection"
        case portScan = "port_scan"
        case blocked
        case unblocked
        case notBlocked = "not_blocked"
    }

    /// This event's kind.
    public var kind: Kind {
        switch self {
        case .newConnection: .newConnection
        case .portScan: .portScan
        case .blocked: .blocked
        case .unblocked: .unblocked
        case .notBlocked: .notBlocked
        }
    }

    /// When the event happened.
    public var time: Timestamp {
        switch self {
        case .newConnection(let attempt): attempt.time
        case .portScan(let scan): scan.time
        case .blocked(_, let time), .unblocked(_, _, let time), .notBlocked(_, _, let time): time
        }
    }
}
