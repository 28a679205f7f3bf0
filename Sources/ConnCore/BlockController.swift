import Synchronization

/// Where the decision to block is made: applies the ``BlockPolicy`` and ``Allowlist`` to scans and learned
/// blocks, drives a ``Blocker``, and says what happened as events.
///
/// Safe to call from any thread: the capture thread reports scans and sweeps expiry, while reloads (SIGHUP) and
/// fleet updates arrive from other tasks.
public final class BlockController: Sendable {
    private struct State {
        var allowlist: Allowlist
        var recentBlockTimes: [Int64] = []  // for the per-minute limit, oldest first
    }

    public let blocker: any Blocker
    public let policy: BlockPolicy
    private let metrics: any MetricsSink
    private let state: Mutex<State>
    private let localBlockHandler: Mutex<(@Sendable (BlockEntry, PortScan) -> Void)?>

    public init(blocker: any Blocker, policy: BlockPolicy, allowlist: Allowlist, metrics: any MetricsSink) {
        self.blocker = blocker
        self.policy = policy
        self.metrics = metrics
        self.state = Mutex(State(allowlist: allowlist))
        self.localBlockHandler = Mutex(nil)
    }

    /// The allowlist in force.
    public var allowlist: Allowlist { state.withLock { $0.allowlist } }

    /// Replaces the allowlist (on SIGHUP); blocks already made stay.
    public func replaceAllowlist(_ allowlist: Allowlist) {
        state.withLock { $0.allowlist = allowlist }
    }

    /// Calls `handler` for every block this agent decides on its own (fleet mode publishes them).
    public func onLocalBlock(_ handler: @escaping @Sendable (BlockEntry, PortScan) -> Void) {
        localBlockHandler.withLock { $0 = handler }
    }

    /// Decides on a detected scan: blocks its source, or says why not.
    public func handle(_ scan: PortScan) -> [ConnEvent] {
        let prefix = policy.prefix(for: scan.source)
        let entry = BlockEntry(
            prefix: prefix,
            reason: .portScan,
            origin: .local,
            since: scan.time,
            expires: policy.ttl.map { scan.time + $0 }
        )
        let events = apply(entry, subject: scan.source, at: scan.time)
        if case .blocked? = events.first {
            localBlockHandler.withLock { $0 }?(entry, scan)
        }
        return events
    }

    /// Applies a block learned from elsewhere (fleet mode); the local allowlist still wins.
    public func applyLearned(_ entry: BlockEntry, at now: Timestamp) -> [ConnEvent] {
        apply(entry, subject: entry.prefix.address, at: now)
    }

    private func apply(_ entry: BlockEntry, subject: IPAddress, at now: Timestamp) -> [ConnEvent] {
        // One decision at a time: the rate limit and the blocklist cap are check-then-act, and scans (capture
        // thread) and learned blocks (fleet task) arrive concurrently.
        state.withLock { state in
            if let listed = state.allowlist.overlaps(entry.prefix) {
                metrics.increment(.blocksRefused(reason: "allowlisted"), by: 1)
                let reason = "allowlisted: \(listed.reason) \(listed.prefix.compactDescription)"
                return [.notBlocked(subject, reason: reason, at: now)]
            }
            let minuteAgo = now.nanoseconds - 60_000_000_000
            state.recentBlockTimes.removeAll { $0 <= minuteAgo }
            if state.recentBlockTimes.count >= policy.maxBlocksPerMinute {
                metrics.increment(.blocksRefused(reason: "rate_limited"), by: 1)
                return [.notBlocked(subject, reason: "rate_limited", at: now)]
            }
            do {
                let current = try blocker.entries()
                if current.count >= policy.maxBlocked, !current.contains(where: { $0.prefix == entry.prefix }) {
                    metrics.increment(.blocksRefused(reason: "blocklist_full"), by: 1)
                    return [.notBlocked(subject, reason: "blocklist_full", at: now)]
                }
                guard try blocker.add(entry) else {
                    metrics.increment(.blocksRefused(reason: "blocklist_full"), by: 1)
                    return [.notBlocked(subject, reason: "blocklist_full", at: now)]
                }
            } catch {
                metrics.increment(.blocksRefused(reason: "error"), by: 1)
                return [.notBlocked(subject, reason: "error: \(error)", at: now)]
            }
            state.recentBlockTimes.append(now.nanoseconds)
            metrics.increment(.blocks(entry.origin), by: 1)
            return [.blocked(entry, at: now)]
        }
    }

    /// Lifts blocks whose time is up and reports them.
    public func sweep(now: Timestamp) -> [ConnEvent] {
        guard let expired = try? blocker.removeExpired(asOf: now), !expired.isEmpty else { return [] }
        metrics.increment(.unblocks(.expired), by: expired.count)
        return expired.map { .unblocked($0.prefix, reason: .expired, at: $0.expires ?? now) }
    }
}
