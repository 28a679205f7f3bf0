import Synchronization

/// Where the decision to block is made, and the one door to the ``Blocker``: applies the ``BlockPolicy`` and
/// ``Allowlist`` to scans and learned blocks, lifts blocks (expired, or removed across the fleet), replaces the
/// allowlist, and says what happened as events and metrics.
///
/// Safe to call from any thread: the capture thread reports scans and sweeps expiry, while reloads (SIGHUP) and
/// fleet updates arrive from other tasks.
public final class BlockController: Sendable {
    private struct State {
        var allowlist: Allowlist
        /// For the per-minute limits, oldest first: this agent's own blocks and learned ones have separate budgets.
        var recentBlockTimes: [Int64] = []
        var recentFleetBlockTimes: [Int64] = []
    }

    private let blocker: any Blocker
    public let policy: BlockPolicy
    /// The units sources are blocked as; the detector counts by the same units.
    public let units: SourceUnits
    private let metrics: any MetricsSink
    private let state: Mutex<State>
    private let localBlockHandler: Mutex<(@Sendable (BlockEntry, PortScan) -> Void)?>

    /// A controller of `blocker`, which nothing else should change from now on.
    /// - Parameter units: the units sources are blocked as; by default, of the policy's IPv6 prefix length and
    ///   `allowlist`. Give the detector's, so that the unit counted is the unit blocked.
    public init(
        blocker: any Blocker,
        policy: BlockPolicy,
        allowlist: Allowlist,
        metrics: any MetricsSink,
        units: SourceUnits? = nil
    ) {
        self.blocker = blocker
        self.policy = policy
        self.units = units ?? SourceUnits(ipv6PrefixLength: policy.ipv6PrefixLength, allowlist: allowlist)
        self.metrics = metrics
        self.state = Mutex(State(allowlist: allowlist))
        self.localBlockHandler = Mutex(nil)
    }

    /// The blocker's name, for logs.
    public var blockerName: String { blocker.name }

    /// The allowlist in force.
    public var allowlist: Allowlist { state.withLock { $0.allowlist } }

    /// Replaces the allowlist, in the blocker's kernel allowlist as well (on SIGHUP); blocks already made stay.
    /// - Throws: the blocker's error; the previous allowlist then stays in force here.
    public func replaceAllowlist(_ allowlist: Allowlist) throws {
        try blocker.replaceAllowlist(allowlist)
        state.withLock { $0.allowlist = allowlist }
        units.replaceAllowlist(allowlist)
    }

    /// The blocklist: every entry, expired or not.
    public func entries() throws -> [BlockEntry] {
        try blocker.entries()
    }

    /// How many entries the blocklist holds, as the blocker counts them for its decisions (without a listing
    /// where the blocker keeps the count in memory).
    public func blockedCount() throws -> Int {
        try blocker.occupancy(holding: nil).count
    }

    /// Calls `handler` for every block this agent decides on its own (fleet mode publishes them).
    public func onLocalBlock(_ handler: @escaping @Sendable (BlockEntry, PortScan) -> Void) {
        localBlockHandler.withLock { $0 = handler }
    }

    /// Decides on a detected scan: blocks its source, or says why not.
    public func handle(_ scan: PortScan) -> BlockDecision {
        let entry = entry(for: scan)
        let decision = apply(entry, at: scan.time)
        if case .blocked = decision {
            localBlockHandler.withLock { $0 }?(entry, scan)
        }
        return decision
    }

    /// Takes over a decision the XDP program made itself about `scan` (kernel enforcement): the program applied the
    /// same allowlist and limits before the SYN was answered; this reports its decision, counts it against the
    /// local limits, and for a block writes the entry's exact times (the program knows only boot time) and hands
    /// it to the fleet, as ``handle(_:)`` does for its own blocks.
    public func adopt(_ kernel: KernelDecision, for scan: PortScan) -> BlockDecision {
        let entry = entry(for: scan)
        let decision: BlockDecision
        switch kernel {
        case .blocked, .blockedLater:
            // The program's entry is in force already; rewriting it keeps its drop counter.
            _ = try? blocker.add(entry)
            state.withLock { $0.recentBlockTimes.append(scan.time.nanoseconds) }
            decision = .blocked(entry)
        case .refusedAllowlisted:
            let listed = allowlist.overlaps(entry.prefix) ?? Allowlist.Entry(prefix: entry.prefix, reason: .configured)
            decision = .refused(.allowlisted(listed))
        case .refusedRateLimited: decision = .refused(.rateLimited)
        case .refusedBlocklistFull: decision = .refused(.blocklistFull)
        case .refusedFailed: decision = .refused(.failed("the XDP program could not insert the block"))
        }
        count(decision)
        if case .blocked = decision {
            localBlockHandler.withLock { $0 }?(entry, scan)
        }
        return decision
    }

    /// Whether exactly `prefix` is in the blocklist now.
    public func isBlocked(_ prefix: IPPrefix) -> Bool {
        (try? blocker.entries().contains { $0.prefix == prefix }) ?? false
    }

    /// The entry that blocking the source of `scan` makes.
    public func entry(for scan: PortScan) -> BlockEntry {
        BlockEntry(
            prefix: units.unit(of: scan.source),
            reason: .portScan,
            origin: .local,
            since: scan.time,
            expires: policy.ttl.map { scan.time + $0 }
        )
    }

    /// Applies a block learned from elsewhere (fleet mode); the local allowlist still wins. Learned blocks spend
    /// a budget of their own (``BlockPolicy/maxFleetBlocksPerMinute``, ``BlockPolicy/maxFleetBlocked``), never the
    /// budget of this agent's own blocks.
    /// - Important: `entry`'s origin must be `fleet`; it is set so here, whatever it was.
    public func applyLearned(_ entry: BlockEntry, at now: Timestamp) -> BlockDecision {
        var learned = entry
        learned.origin = .fleet
        return apply(learned, at: now)
    }

    private func apply(_ entry: BlockEntry, at now: Timestamp) -> BlockDecision {
        // One decision at a time: the rate limit and the blocklist cap are check-then-act, and scans (capture
        // thread) and learned blocks (fleet task) arrive concurrently.
        let decision = state.withLock { state -> BlockDecision in
            if let listed = state.allowlist.overlaps(entry.prefix) { return .refused(.allowlisted(listed)) }
            let learned = entry.origin == .fleet
            let minuteAgo = now.nanoseconds.saturatingAdding(-60_000_000_000)
            state.recentBlockTimes.removeAll { $0 <= minuteAgo }
            state.recentFleetBlockTimes.removeAll { $0 <= minuteAgo }
            let recent = learned ? state.recentFleetBlockTimes.count : state.recentBlockTimes.count
            if recent >= (learned ? policy.maxFleetBlocksPerMinute : policy.maxBlocksPerMinute) {
                return .refused(.rateLimited)
            }
            do {
                let current = try blocker.occupancy(holding: entry.prefix)
                let replaces = current.holdsPrefix
                if current.count >= policy.maxBlocked, !replaces { return .refused(.blocklistFull) }
                if learned, !replaces, current.fleetCount >= policy.maxFleetBlocked {
                    return .refused(.blocklistFull)
                }
                guard try blocker.add(entry) else { return .refused(.blocklistFull) }
            } catch {
                return .refused(.failed("\(error)"))
            }
            if learned {
                state.recentFleetBlockTimes.append(now.nanoseconds)
            } else {
                state.recentBlockTimes.append(now.nanoseconds)
            }
            return .blocked(entry)
        }
        count(decision)
        return decision
    }

    private func count(_ decision: BlockDecision) {
        switch decision {
        case .blocked(let entry): metrics.increment(.blocks(entry.origin), by: 1)
        case .refused(let refusal): metrics.increment(.blocksRefused(refusal.kind), by: 1)
        }
    }

    /// Lifts the block of exactly `prefix` before its time (a fleet-wide unblock) and reports it.
    /// - Returns: the `unblocked` event, `nil` when `prefix` was not blocked.
    /// - Throws: the blocker's error.
    public func lift(_ prefix: IPPrefix, at now: Timestamp) throws -> ConnEvent? {
        guard try blocker.remove(prefix) else { return nil }
        metrics.increment(.unblocks(.removed), by: 1)
        return .unblocked(prefix, reason: .removed, at: now)
    }

    /// Lifts blocks whose time is up and reports them.
    public func sweep(now: Timestamp) -> [ConnEvent] {
        guard let expired = try? blocker.removeExpired(asOf: now), !expired.isEmpty else { return [] }
        metrics.increment(.unblocks(.expired), by: expired.count)
        return expired.map { .unblocked($0.prefix, reason: .expired, at: $0.expires ?? now) }
    }
}
