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
    /// Blocks this agent published to the fleet store.
    case fleetPublications
    /// Publications dropped unpublished: the queue kept while the fleet store was unreachable was full, or the
    /// store rejected them.
    case fleetPublicationsDropped
    /// Blocks learned from the fleet that local policy refused (allowlist, caps, rate limit). Learned blocks that
    /// were applied count as ``blocks(_:)`` with origin `fleet`.
    case fleetRefused
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
