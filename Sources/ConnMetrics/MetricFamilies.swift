import Prometheus

/// The name, type and help text of one of conntrackr's metric families: the single place they are spelt out, so
/// that every series of a family carries the same HELP line (the registry refuses two different ones).
struct MetricFamily: Sendable {
    enum Kind: Sendable { case counter, gauge }

    /// The name without the `conntrackr_` namespace and without the `_total` suffix counters get.
    let baseName: String
    let kind: Kind
    let help: String
    /// The name of the one label this family has, if any.
    let label: String?

    /// The full name as exposed, such as `conntrackr_new_connections_total`.
    var name: String { descriptor.name }

    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "conntrackr",
            metricName: baseName,
            unitName: kind == .counter ? "total" : "",
            helpText: help
        )
    }

    func makeCounter(in registry: PrometheusCollectorRegistry, labelValue: String? = nil) -> Counter {
        precondition(kind == .counter)
        return registry.makeCounter(descriptor: descriptor, labels: labels(labelValue))
    }

    /// One counter per value of the family's label, every value of `Label` registered up front.
    func makeCounters<Label: RawRepresentable & CaseIterable & Hashable>(
        in registry: PrometheusCollectorRegistry,
        for _: Label.Type
    ) -> [Label: Counter] where Label.RawValue == String {
        Dictionary(uniqueKeysWithValues: Label.allCases.map { ($0, makeCounter(in: registry, labelValue: $0.rawValue)) })
    }

    func makeGauge(in registry: PrometheusCollectorRegistry, labelValue: String? = nil) -> Gauge {
        precondition(kind == .gauge)
        return registry.makeGauge(descriptor: descriptor, labels: labels(labelValue))
    }

    private func labels(_ value: String?) -> [(String, String)] {
        guard let label else { return [] }
        return [(label, value ?? "")]
    }
}

extension MetricFamily {
    static let newConnections = MetricFamily(
        baseName: "new_connections",
        kind: .counter,
        help: "Inbound TCP connection attempts (SYN without ACK), retransmissions excluded.",
        label: nil
    )
    static let portScans = MetricFamily(
        baseName: "port_scans",
        kind: .counter,
        help: "Port scans detected (one per source and destination pair until it has been quiet for a window).",
        label: nil
    )
    static let blocks = MetricFamily(
        baseName: "blocks",
        kind: .counter,
        help: "Blocks applied, by origin: local (this agent decided) or fleet (learned from another host).",
        label: "origin"
    )
    static let unblocks = MetricFamily(
        baseName: "unblocks",
        kind: .counter,
        help: "Blocks lifted, by reason: expired or removed.",
        label: "reason"
    )
    static let blocksRefused = MetricFamily(
        baseName: "blocks_refused",
        kind: .counter,
        help: "Scanners not blocked, by reason: allowlisted, blocklist_full, rate_limited or error.",
        label: "reason"
    )
    static let blockedSources = MetricFamily(
        baseName: "blocked_sources",
        kind: .gauge,
        help: "Entries (addresses or prefixes) in the blocklist.",
        label: nil
    )
    static let blockedPackets = MetricFamily(
        baseName: "blocked_packets",
        kind: .counter,
        help: "Packets dropped because their source is blocked, as counted by the kernel (XDP or nftables).",
        label: nil
    )
    static let captureDropped = MetricFamily(
        baseName: "capture_dropped",
        kind: .counter,
        help: "Packets or records lost before the pipeline saw them, by source: pcap (libpcap drops) or "
            + "xdp_ringbuf (ring buffer full).",
        label: "source"
    )
    static let malformedFrames = MetricFamily(
        baseName: "malformed_frames",
        kind: .counter,
        help: "Frames skipped because they could not be parsed, by reason.",
        label: "reason"
    )
    static let trackedPairs = MetricFamily(
        baseName: "tracked_pairs",
        kind: .gauge,
        help: "Source and destination pairs the scan detector currently tracks.",
        label: nil
    )
    static let trackedPairsEvicted = MetricFamily(
        baseName: "tracked_pairs_evicted",
        kind: .counter,
        help: "Tracked pairs evicted, least recently active first, because the cap on pairs was reached.",
        label: nil
    )
    static let trackedConnections = MetricFamily(
        baseName: "tracked_connections",
        kind: .gauge,
        help: "Connection 4-tuples remembered to tell new connections from retransmissions.",
        label: nil
    )
    static let trackedConnectionsEvicted = MetricFamily(
        baseName: "tracked_connections_evicted",
        kind: .counter,
        help: "Remembered 4-tuples evicted early because the cap on tracked connections was reached.",
        label: nil
    )
    static let eventsDropped = MetricFamily(
        baseName: "events_dropped",
        kind: .counter,
        help: "Events not written because the output fell behind.",
        label: nil
    )
    static let frames = MetricFamily(
        baseName: "frames",
        kind: .counter,
        help: "Frames examined by the pipeline or by the XDP program.",
        label: nil
    )
    static let scanRuleDisagreements = MetricFamily(
        baseName: "scan_rule_disagreements",
        kind: .counter,
        help: "Scans where the XDP program's rule and the user-space detector disagreed; the kernel's decision is reported.",
        label: nil
    )
    static let kernelScanPairsInserted = MetricFamily(
        baseName: "kernel_scan_pairs_inserted",
        kind: .counter,
        help: "Pairs the XDP program's scan rule started tracking; beyond its capacity each evicts the least recent.",
        label: nil
    )
    static let tinyFragmentsDropped = MetricFamily(
        baseName: "tiny_fragments_dropped",
        kind: .counter,
        help: "TCP fragments the XDP program dropped because they split the TCP header's first 16 bytes (nmap -f, RFC 1858).",
        label: nil
    )
    static let longHeaderChainsDropped = MetricFamily(
        baseName: "long_header_chains_dropped",
        kind: .counter,
        help: "IPv6 packets the XDP program dropped because their extension-header chain is longer than it follows (6).",
        label: nil
    )
    static let captureRunning = MetricFamily(
        baseName: "capture_running",
        kind: .gauge,
        help: "1 while a capture is running, 0 otherwise.",
        label: nil
    )
    static let fleetConnected = MetricFamily(
        baseName: "fleet_connected",
        kind: .gauge,
        help: "1 while fleet mode is connected to etcd (listed and watching), 0 otherwise.",
        label: nil
    )
    static let fleetPublications = MetricFamily(
        baseName: "fleet_publications",
        kind: .counter,
        help: "Blocks this agent published to the fleet.",
        label: nil
    )
    static let fleetPublicationsDropped = MetricFamily(
        baseName: "fleet_publications_dropped",
        kind: .counter,
        help: "Blocks never published: the queue kept while etcd was unreachable was full, or etcd rejected them.",
        label: nil
    )
    static let fleetRefused = MetricFamily(
        baseName: "fleet_refused",
        kind: .counter,
        help: "Fleet records not applied, by reason: malformed, key, too_wide, too_large, listing_limit (validation) "
            + "or allowlisted, rate_limited, blocklist_full, error (local policy).",
        label: "reason"
    )
    static let buildInfo = MetricFamily(
        baseName: "build_info",
        kind: .gauge,
        help: "Always 1; the version label names the conntrackr build.",
        label: "version"
    )

    /// Every family, in the order the README lists them.
    static let all: [MetricFamily] = [
        .newConnections, .portScans, .blocks, .unblocks, .blocksRefused, .blockedSources, .blockedPackets,
        .captureDropped, .malformedFrames, .trackedPairs, .trackedPairsEvicted, .trackedConnections,
        .trackedConnectionsEvicted, .eventsDropped, .frames, .scanRuleDisagreements, .kernelScanPairsInserted, .tinyFragmentsDropped, .longHeaderChainsDropped, .captureRunning, .fleetConnected, .fleetPublications,
        .fleetPublicationsDropped, .fleetRefused, .buildInfo,
    ]
}
