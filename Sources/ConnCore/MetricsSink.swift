/// A counter the pipeline and its parts move. Labels are few and fixed, never one per address.
public enum CounterMetric: Hashable, Sendable {
    /// New connection attempts reported (retransmissions excluded).
    case newConnections
    case portScans
    /// Blocks applied, by origin.
    case blocks(BlockOrigin)
    case unblocks(UnblockReason)
    /// Scanners not blocked, by the kind of refusal.
    case blocksRefused(BlockRefusal.Kind)
    /// Frames the parser skipped, by reason.
    case malformedFrames(MalformedReason)
    /// Frames or records lost before the pipeline saw them, by where they were lost.
    case captureDropped(CaptureLoss)
    case trackedPairsEvicted
    case trackedConnectionsEvicted
    /// Events not written because the output fell behind.
    case eventsDropped
    /// Frames the pipeline examined.
    case framesProcessed
    /// Scans where the XDP program's rule and the user-space detector disagreed (evicted state, SYNs of one pair
    /// reported out of order across CPUs); the kernel's decision is the one reported.
    case scanRuleDisagreements
    /// Pairs the XDP program's scan rule started tracking (a running total the kernel keeps).
    case kernelScanPairsInserted
    /// TCP fragments the XDP program dropped because they split the header's first bytes (`nmap -f`).
    case tinyFragmentsDropped
    /// IPv6 packets the XDP program dropped because their extension-header chain is longer than it follows.
    case longHeaderChainsDropped
    /// Blocks this agent published to the fleet store.
    case fleetPublications
    /// Publications dropped unpublished: the queue kept while the fleet store was unreachable was full, or the
    /// store rejected them.
    case fleetPublicationsDropped
    /// Fleet records not applied, by reason: refused by validation (malformed, non-canonical key, too wide, too
    /// large, beyond the listing's bounds) or by local policy (allowlist, caps, rate limit). Learned blocks that
    /// were applied count as ``blocks(_:)`` with origin `fleet`.
    case fleetRefused(FleetRefusalReason)
}

/// Why a fleet record was not applied. Usable as a metric label.
public enum FleetRefusalReason: String, Hashable, Sendable, CaseIterable {
    /// The value is not a fleet record (not JSON, a field missing or of the wrong type, an invalid prefix).
    case malformed
    /// The key is not the canonical key of the record's prefix and host (an alias such as `128.0.0.1_1`, an
    /// `::ffff:` or upper-case form, another layout, or a record whose host is not the key's).
    case key
    /// The prefix is wider than this fleet allows (by default, wider than its automatic blocks).
    case tooWide = "too_wide"
    /// The key, value or a field is over its size bound.
    case tooLarge = "too_large"
    /// Beyond the bounds of one listing (keys or bytes): not read at all.
    case listingLimit = "listing_limit"
    /// Local policy: blocking it would drop an allowlisted address (fleet infrastructure included).
    case allowlisted
    /// Local policy: the fleet's per-minute budget was spent.
    case rateLimited = "rate_limited"
    /// Local policy: the blocklist, or the fleet's share of it, is full.
    case blocklistFull = "blocklist_full"
    /// The blocker failed.
    case error

    /// The reason for a refusal by local policy.
    public init(_ kind: BlockRefusal.Kind) {
        switch kind {
        case .allowlisted: self = .allowlisted
        case .rateLimited: self = .rateLimited
        case .blocklistFull: self = .blocklistFull
        case .error: self = .error
        }
    }
}

/// Where a capture loses frames or records before the pipeline sees them. Usable as a metric label.
public enum CaptureLoss: String, Hashable, Sendable, CaseIterable {
    /// Dropped by the kernel's packet socket buffer (libpcap's `ps_drop`).
    case pcap
    /// Records the XDP program could not write because its ring buffer was full.
    case xdpRingBuffer = "xdp_ringbuf"
}

/// A gauge the pipeline sets.
public enum GaugeMetric: Hashable, Sendable {
    case trackedPairs
    case trackedConnections
    case blockedSources
    /// 1 while a capture is running, 0 otherwise.
    case captureRunning
    /// 1 while fleet mode is connected to its store (listed and watching), 0 otherwise.
    case fleetConnected
}

/// Where the pipeline reports its counts. Implementations must be cheap: the pipeline batches its updates, but
/// calls still come from the capture thread.
public protocol MetricsSink: Sendable {
    func increment(_ counter: CounterMetric, by amount: Int)
    func set(_ gauge: GaugeMetric, to value: Int)
}

/// A sink that discards everything.
public struct DiscardingMetricsSink: MetricsSink {
    public init() {}
    public func increment(_ counter: CounterMetric, by amount: Int) {}
    public func set(_ gauge: GaugeMetric, to value: Int) {}
}
