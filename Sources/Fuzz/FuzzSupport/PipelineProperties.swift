import ConnCore
import ConnTesting

/// Runs a ``PipelineFuzzInput`` through a real ``ConnectionPipeline`` and through ``PipelineModel`` and reports
/// where they part, plus the invariants that need no model:
/// - the detector never tracks more pairs than its cap, nor the retransmission filter more 4-tuples than its two
///   generations of at most the cap each;
/// - every `port_scan` lists exactly threshold + 1 distinct ports in ascending order;
/// - no frame the parser calls malformed or other produces an event (the model only makes events from attempts,
///   and the events must be equal, in order, after every batch).
public enum PipelineProperties: Sendable {
    /// The violations an input causes, each as one line.
    public static func violations(_ input: PipelineFuzzInput) -> [String] {
        let configuration = input.configuration
        let sink = CollectingEventSink()
        let metrics = RecordingMetricsSink()
        let detector = SlidingWindowScanDetector(rule: configuration.scanRule)
        let pipeline = ConnectionPipeline(
            configuration: configuration,
            events: sink,
            detector: detector,
            metrics: metrics
        )
        var model = PipelineModel(configuration)
        var found: [String] = []
        var checkedEvents = 0

        func compare(after what: String) {
            // Events before `checkedEvents` were equal at the previous comparison (or it reported and stopped).
            if sink.events.count != model.events.count
                || sink.events[checkedEvents...] != model.events[checkedEvents...]
            {
                let index =
                    zip(sink.events, model.events).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    ?? min(sink.events.count, model.events.count)
                let got = index < sink.events.count ? "\(sink.events[index])" : "nothing"
                let expected = index < model.events.count ? "\(model.events[index])" : "nothing"
                found.append("after \(what): event \(index) is \(got), the model expects \(expected)")
            }
            for event in sink.events.dropFirst(checkedEvents) {
                if case .portScan(let scan) = event { found += scanViolations(scan, threshold: model.threshold) }
            }
            checkedEvents = sink.events.count
            if detector.trackedPairs != model.pairs.values.count {
                found.append(
                    "after \(what): \(detector.trackedPairs) pairs tracked, the model has \(model.pairs.values.count)"
                )
            }
            if detector.evictedPairs != model.pairs.evictions {
                found.append(
                    "after \(what): \(detector.evictedPairs) pairs evicted, the model evicted \(model.pairs.evictions)"
                )
            }
            let connections = metrics.value(of: GaugeMetric.trackedConnections) ?? -1
            if connections != model.connections.count {
                found.append(
                    "after \(what): \(connections) connections tracked, the model has \(model.connections.count)"
                )
            }
            if metrics.value(of: CounterMetric.trackedConnectionsEvicted) != model.connections.evictions {
                found.append(
                    "after \(what): connection evictions differ from the model's \(model.connections.evictions)"
                )
            }
        }

        for (index, step) in input.steps.enumerated() {
            switch step {
            case .frame(let frame, let linkType, let time):
                frame.withUnsafeBytes { pipeline.process(frame: $0, linkType: linkType, time: time) }
                model.process(frame: frame, linkType: linkType, time: time)
            case .endOfBatch(let now):
                pipeline.endOfBatch(now: now)
                model.endOfBatch(now: now)
                compare(after: "step \(index) (end of batch)")
            }
            if detector.trackedPairs > configuration.scanRule.maxTrackedPairs {
                found.append("step \(index): \(detector.trackedPairs) pairs tracked, over the cap")
            }
            // The retransmission filter keeps two generations of at most the cap each.
            if let tracked = metrics.value(of: GaugeMetric.trackedConnections),
                tracked > 2 * configuration.maxTrackedConnections
            {
                found.append("step \(index): \(tracked) connections tracked, over twice the cap")
            }
            if !found.isEmpty { return found }
        }
        pipeline.finish()
        compare(after: "finish")
        let statistics = PipelineModel.Statistics(pipeline.statistics)
        if statistics != model.statistics || pipeline.statistics.captureDropped != 0 {
            found.append("statistics: \(statistics), the model counts \(model.statistics)")
        }
        for reason in MalformedReason.allCases
        where metrics.value(of: CounterMetric.malformedFrames(reason)) != model.malformed[reason, default: 0] {
            let reported = metrics.value(of: CounterMetric.malformedFrames(reason))
            let counted = model.malformed[reason, default: 0]
            found.append("malformed frames (\(reason.rawValue)) reported \(reported), the model counts \(counted)")
        }
        return found
    }

    static func scanViolations(_ scan: PortScan, threshold: Int) -> [String] {
        var found: [String] = []
        if scan.ports.count != threshold + 1 {
            found.append("port_scan with \(scan.ports.count) ports at threshold \(threshold): \(scan)")
        }
        if zip(scan.ports, scan.ports.dropFirst()).contains(where: { $0 >= $1 }) {
            found.append("port_scan ports not ascending and distinct: \(scan.ports)")
        }
        return found
    }
}
