public import ConnCore
public import Logging
public import Prometheus
import Synchronization

/// A ``ConnCore/MetricsSink`` that keeps conntrackr's counters and gauges in a swift-prometheus
/// `PrometheusCollectorRegistry` and renders them in the Prometheus text exposition format.
///
/// Every series is registered when the sink is made, so a scrape shows each counter at 0 before its first event
/// and `rate()` works from the first sample. ``increment(_:by:)`` and ``set(_:to:)`` are a `switch` and a relaxed
/// atomic add: series are looked up once, at start, never by name per call.
///
/// Counters the kernel keeps (the XDP program's per-CPU statistics, the blocklist's drop counters, the number of
/// blocked entries) are read when Prometheus scrapes: register a closure with ``addScrapeHook(name:_:)`` and it
/// runs before each rendering:
///
/// ```swift
/// let sink = PrometheusMetricsSink(version: "1.0.0")
/// sink.addScrapeHook(name: "xdp statistics") { scrape in
///     let stats = try xdp.statistics()            // per-CPU values summed
///     scrape.setTotal(.framesProcessed, to: stats.frames)
///     scrape.setTotal(.captureDropped(.xdpRingBuffer), to: stats.ringBufferFull)
///     scrape.setBlockedPacketsTotal(stats.dropped)
///     scrape.set(.blockedSources, to: try blocker.entries().count)
/// }
/// ```
///
/// Libraries that report through swift-metrics can share the same endpoint:
/// `MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: sink.registry))`.
public final class PrometheusMetricsSink: MetricsSink, Sendable {
    /// A closure run before each rendering to copy values the kernel keeps into the sink. See ``MetricsScrape``.
    public typealias ScrapeHook = @Sendable (inout MetricsScrape) throws -> Void

    /// The `Content-Type` of ``exposition()``: Prometheus text format 0.0.4.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The registry holding the series. Metrics added to it by other code are rendered too.
    public let registry: PrometheusCollectorRegistry
    /// The version shown by `conntrackr_build_info`.
    public let version: String

    let series: SeriesTable
    private let captureRunning = Atomic<Bool>(false)
    private let hooks = Mutex<[NamedHook]>([])
    private let scrapeState = Mutex(ScrapeState())
    private let logger: Logger

    /// Makes a sink and registers every conntrackr series in `registry`.
    /// - Parameters:
    ///   - version: the conntrackr version, exposed as `conntrackr_build_info{version="..."} 1`.
    ///   - registry: where the series live; a fresh one by default.
    ///   - logger: reports scrape hooks that fail.
    public init(
        version: String,
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        logger: Logger = Logger(label: "conntrackr.metrics")
    ) {
        self.registry = registry
        self.version = version
        self.logger = logger
        self.series = SeriesTable(registry: registry)
        MetricFamily.buildInfo.makeGauge(in: registry, labelValue: version).set(to: 1)
    }

    /// Adds `amount` to a counter. Zero and negative amounts are ignored: Prometheus counters never go down.
    public func increment(_ counter: CounterMetric, by amount: Int) {
        guard amount > 0 else { return }
        series.counter(for: counter).increment(by: Int64(amount))
    }

    /// Sets a gauge.
    public func set(_ gauge: GaugeMetric, to value: Int) {
        if gauge == .captureRunning { captureRunning.store(value != 0, ordering: .relaxed) }
        series.gauge(for: gauge).set(to: Double(value))
    }

    /// Whether ``ConnCore/GaugeMetric/captureRunning`` was last set to a non-zero value.
    public var isCaptureRunning: Bool { captureRunning.load(ordering: .relaxed) }

    /// Registers a closure that runs before every rendering, in the order added, to read values the kernel keeps.
    ///
    /// A hook that throws is logged (once until it succeeds again) and the values it did not set keep their last
    /// value, so one unreadable map does not take the whole endpoint down.
    /// - Important: Hooks run one scrape at a time, under a lock, on the thread that renders (not an event
    ///   loop). They must not call ``exposition()`` or ``addScrapeHook(name:_:)``.
    /// - Parameters:
    ///   - name: names the hook in logs, such as `xdp statistics`.
    public func addScrapeHook(name: String = "scrape hook", _ hook: @escaping ScrapeHook) {
        hooks.withLock { $0.append(NamedHook(name: name, body: hook)) }
    }

    /// Runs the scrape hooks, then renders every series of ``registry`` in the text exposition format.
    public func exposition() -> [UInt8] {
        let hooks = self.hooks.withLock { $0 }
        // One lock around hooks and rendering: two concurrent scrapes must not interleave the delta bookkeeping
        // of `MetricsScrape.setTotal`, and a rendering must not show half of a hook's update.
        return scrapeState.withLock { state in
            var scrape = MetricsScrape(sink: self, lastTotals: state.lastTotals)
            for hook in hooks {
                do {
                    try hook.body(&scrape)
                    state.failingHooks.remove(hook.name)
                } catch {
                    if state.failingHooks.insert(hook.name).inserted {
                        logger.warning(
                            "metrics scrape hook failed; its values are stale until it succeeds",
                            metadata: ["hook": "\(hook.name)", "error": "\(error)"]
                        )
                    }
                }
            }
            state.lastTotals = scrape.lastTotals
            return registry.emitToBuffer()
        }
    }

    /// ``exposition()`` as a string.
    public func expositionText() -> String {
        String(decoding: exposition(), as: UTF8.self)
    }
}

/// What a scrape hook may update: totals the kernel keeps, and gauges.
///
/// Only valid inside the hook it is passed to.
public struct MetricsScrape {
    enum TotalKey: Hashable {
        case counter(CounterMetric)
        case blockedPackets
    }

    private let sink: PrometheusMetricsSink
    fileprivate private(set) var lastTotals: [TotalKey: UInt64]

    fileprivate init(sink: PrometheusMetricsSink, lastTotals: [TotalKey: UInt64]) {
        self.sink = sink
        self.lastTotals = lastTotals
    }

    /// Reports the running total a kernel-side source keeps for `counter`; the counter advances by the growth
    /// since the previous scrape, so the same counter may also be moved by ``PrometheusMetricsSink/increment(_:by:)``.
    ///
    /// A total smaller than the previous one means the source started again (program reloaded, maps recreated):
    /// the counter then advances by the whole new total, as Prometheus treats counter resets.
    /// - Important: Report a monotonic total, such as a per-CPU counter summed. A sum over map entries that can be
    ///   deleted (per-entry drop counters of expired blocks) goes down without a restart and would be counted twice.
    public mutating func setTotal(_ counter: CounterMetric, to total: UInt64) {
        advance(.counter(counter), to: total, sink.series.counter(for: counter))
    }

    /// Reports the kernel's running total for `conntrackr_blocked_packets_total`, as ``setTotal(_:to:)`` does.
    public mutating func setBlockedPacketsTotal(_ total: UInt64) {
        advance(.blockedPackets, to: total, sink.series.blockedPackets)
    }

    /// Sets a gauge, such as ``ConnCore/GaugeMetric/blockedSources`` read from the blocklist.
    public func set(_ gauge: GaugeMetric, to value: Int) {
        sink.set(gauge, to: value)
    }

    private mutating func advance(_ key: TotalKey, to total: UInt64, _ counter: Counter) {
        let previous = lastTotals[key] ?? 0
        lastTotals[key] = total
        let growth = total >= previous ? total - previous : total
        if growth > 0 { counter.increment(by: Int64(clamping: growth)) }
    }
}

@available(*, unavailable)
extension MetricsScrape: Sendable {}

private struct NamedHook: Sendable {
    let name: String
    let body: PrometheusMetricsSink.ScrapeHook
}

private struct ScrapeState: Sendable {
    var lastTotals: [MetricsScrape.TotalKey: UInt64] = [:]
    var failingHooks: Set<String> = []
}

/// Every conntrackr series, registered once; lookups are a `switch`, not a search by name.
struct SeriesTable: Sendable {
    let newConnections: Counter
    let portScans: Counter
    let blocksLocal: Counter
    let blocksFleet: Counter
    let unblocksExpired: Counter
    let unblocksRemoved: Counter
    let blocksRefused: [BlockRefusal.Kind: Counter]
    let blockedPackets: Counter
    let captureDropped: [CaptureLoss: Counter]
    let malformed: [MalformedReason: Counter]
    let trackedPairsEvicted: Counter
    let trackedConnectionsEvicted: Counter
    let eventsDropped: Counter
    let frames: Counter
    let scanRuleDisagreements: Counter
    let kernelScanPairsInserted: Counter
    let tinyFragmentsDropped: Counter
    let longHeaderChainsDropped: Counter
    let trackedPairs: Gauge
    let trackedConnections: Gauge
    let blockedSources: Gauge
    let captureRunning: Gauge
    let fleetConnected: Gauge
    let fleetPublications: Counter
    let fleetPublicationsDropped: Counter
    let fleetRefused: [FleetRefusalReason: Counter]

    init(registry: PrometheusCollectorRegistry) {
        newConnections = MetricFamily.newConnections.makeCounter(in: registry)
        portScans = MetricFamily.portScans.makeCounter(in: registry)
        blocksLocal = MetricFamily.blocks.makeCounter(in: registry, labelValue: BlockOrigin.local.rawValue)
        blocksFleet = MetricFamily.blocks.makeCounter(in: registry, labelValue: BlockOrigin.fleet.rawValue)
        unblocksExpired = MetricFamily.unblocks.makeCounter(in: registry, labelValue: UnblockReason.expired.rawValue)
        unblocksRemoved = MetricFamily.unblocks.makeCounter(in: registry, labelValue: UnblockReason.removed.rawValue)
        blocksRefused = MetricFamily.blocksRefused.makeCounters(in: registry, for: BlockRefusal.Kind.self)
        blockedPackets = MetricFamily.blockedPackets.makeCounter(in: registry)
        captureDropped = MetricFamily.captureDropped.makeCounters(in: registry, for: CaptureLoss.self)
        malformed = MetricFamily.malformedFrames.makeCounters(in: registry, for: MalformedReason.self)
        trackedPairsEvicted = MetricFamily.trackedPairsEvicted.makeCounter(in: registry)
        trackedConnectionsEvicted = MetricFamily.trackedConnectionsEvicted.makeCounter(in: registry)
        eventsDropped = MetricFamily.eventsDropped.makeCounter(in: registry)
        frames = MetricFamily.frames.makeCounter(in: registry)
        scanRuleDisagreements = MetricFamily.scanRuleDisagreements.makeCounter(in: registry)
        kernelScanPairsInserted = MetricFamily.kernelScanPairsInserted.makeCounter(in: registry)
        tinyFragmentsDropped = MetricFamily.tinyFragmentsDropped.makeCounter(in: registry)
        longHeaderChainsDropped = MetricFamily.longHeaderChainsDropped.makeCounter(in: registry)
        trackedPairs = MetricFamily.trackedPairs.makeGauge(in: registry)
        trackedConnections = MetricFamily.trackedConnections.makeGauge(in: registry)
        blockedSources = MetricFamily.blockedSources.makeGauge(in: registry)
        captureRunning = MetricFamily.captureRunning.makeGauge(in: registry)
        fleetConnected = MetricFamily.fleetConnected.makeGauge(in: registry)
        fleetPublications = MetricFamily.fleetPublications.makeCounter(in: registry)
        fleetPublicationsDropped = MetricFamily.fleetPublicationsDropped.makeCounter(in: registry)
        fleetRefused = MetricFamily.fleetRefused.makeCounters(in: registry, for: FleetRefusalReason.self)
    }

    func counter(for metric: CounterMetric) -> Counter {
        switch metric {
        case .newConnections: newConnections
        case .portScans: portScans
        case .blocks(.local): blocksLocal
        case .blocks(.fleet): blocksFleet
        case .unblocks(.expired): unblocksExpired
        case .unblocks(.removed): unblocksRemoved
        // Present by construction: each labelled table is filled from its label type's `allCases`.
        case .blocksRefused(let kind): blocksRefused[kind]!
        case .malformedFrames(let reason): malformed[reason]!
        case .captureDropped(let loss): captureDropped[loss]!
        case .trackedPairsEvicted: trackedPairsEvicted
        case .trackedConnectionsEvicted: trackedConnectionsEvicted
        case .eventsDropped: eventsDropped
        case .framesProcessed: frames
        case .scanRuleDisagreements: scanRuleDisagreements
        case .kernelScanPairsInserted: kernelScanPairsInserted
        case .tinyFragmentsDropped: tinyFragmentsDropped
        case .longHeaderChainsDropped: longHeaderChainsDropped
        case .fleetPublications: fleetPublications
        case .fleetPublicationsDropped: fleetPublicationsDropped
        case .fleetRefused(let reason): fleetRefused[reason]!
        }
    }

    func gauge(for metric: GaugeMetric) -> Gauge {
        switch metric {
        case .trackedPairs: trackedPairs
        case .trackedConnections: trackedConnections
        case .blockedSources: blockedSources
        case .captureRunning: captureRunning
        case .fleetConnected: fleetConnected
        }
    }
}
