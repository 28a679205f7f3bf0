public import ConnCore
import Synchronization

/// A metrics sink that keeps every counter and gauge in memory, for tests and embedders.
public final class RecordingMetricsSink: MetricsSink {
    private let values = Mutex<(counters: [CounterMetric: Int], gauges: [GaugeMetric: Int])>(([:], [:]))

    public init() {}

    public func increment(_ counter: CounterMetric, by amount: Int) {
        guard amount != 0 else { return }
        values.withLock { $0.counters[counter, default: 0] += amount }
    }

    public func set(_ gauge: GaugeMetric, to value: Int) {
        values.withLock { $0.gauges[gauge] = value }
    }

    /// The total of a counter so far.
    public func value(of counter: CounterMetric) -> Int { values.withLock { $0.counters[counter] ?? 0 } }

    /// The total of a counter so far.
    public subscript(_ counter: CounterMetric) -> Int { value(of: counter) }

    /// The total of every counter together.
    public var total: Int { values.withLock { $0.counters.values.reduce(0, +) } }

    /// The last value a gauge was set to.
    public func value(of gauge: GaugeMetric) -> Int? { values.withLock { $0.gauges[gauge] } }
}
