import ConnCore
import ConnMetrics
import ConnTesting
import Testing

/// The counters a real pipeline moves, read back through the exposition.
@Suite("Pipeline metrics")
struct PipelineMetricsTests {
    let scanner = IPAddress("198.51.100.56")!
    let benign = IPAddress("198.51.100.7")!
    let victim = IPAddress("203.0.113.5")!
    let start = Timestamp(seconds: 1_619_623_685)

    private func attempt(_ source: IPAddress, _ sourcePort: UInt16, port: UInt16, after seconds: Int64)
        -> ConnectionAttempt
    {
        ConnectionAttempt(
            time: start + .seconds(seconds),
            source: source,
            sourcePort: sourcePort,
            destination: victim,
            destinationPort: port
        )
    }

    @Test func attemptsScansAndTrackedStateAreCounted() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let pipeline = ConnectionPipeline(events: CollectingEventSink(), metrics: sink)
        // A scan of five ports (over the threshold of three), one of them retransmitted, and one benign client.
        for (index, port) in [80, 81, 82, 83, 84].enumerated() {
            pipeline.process(attempt(scanner, 40000, port: UInt16(port), after: Int64(index)))
        }
        pipeline.process(attempt(scanner, 40000, port: 80, after: 5))
        pipeline.process(attempt(benign, 51000, port: 443, after: 6))
        pipeline.endOfBatch(now: start + .seconds(6))

        let exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_new_connections_total") == 6)
        #expect(exposition.value("conntrackr_port_scans_total") == 1)
        #expect(exposition.value("conntrackr_tracked_pairs") == 2)
        #expect(exposition.value("conntrackr_tracked_connections") == 6)
        #expect(exposition.value("conntrackr_frames_total") == 0)
        #expect(exposition.value("conntrackr_blocks_total", ["origin": "local"]) == 0)

        // Counts are reported once: a second batch with nothing new changes nothing.
        pipeline.endOfBatch(now: start + .seconds(7))
        #expect(try Exposition(sink.expositionText()).value("conntrackr_new_connections_total") == 6)
    }

    @Test func framesAndMalformedFramesAreCountedByReason() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let pipeline = ConnectionPipeline(events: CollectingEventSink(), metrics: sink)
        let frames: [[UInt8]] = [
            FrameBuilder.tcp(from: benign, 51000, to: victim, 22),
            FrameBuilder.tcp(from: benign, 51000, to: victim, 22, flags: [.syn, .ack]),
            FrameBuilder.udp(from: benign, 53, to: victim, 53),
            Array(FrameBuilder.tcp(from: benign, 51001, to: victim, 22).prefix(20)),
            Array(FrameBuilder.tcp(from: benign, 51002, to: victim, 22).prefix(30)),
        ]
        for frame in frames {
            frame.withUnsafeBytes { pipeline.process(frame: $0, linkType: .ethernet, time: start) }
        }
        pipeline.endOfBatch(now: start)

        let exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_frames_total") == 5)
        #expect(exposition.value("conntrackr_new_connections_total") == 1)
        #expect(exposition.value("conntrackr_malformed_frames_total", ["reason": "truncated"]) == 2)
        #expect(exposition.value("conntrackr_malformed_frames_total", ["reason": "invalid_header"]) == 0)
        #expect(pipeline.statistics.malformedFrames == 2)
    }

    @Test func captureDropsAreCountedBySource() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let pipeline = ConnectionPipeline(events: CollectingEventSink(), metrics: sink)
        pipeline.recordCaptureDrops(12, source: .pcap)
        pipeline.recordCaptureDrops(0, source: .pcap)
        #expect(
            try Exposition(sink.expositionText()).value("conntrackr_capture_dropped_total", ["source": "pcap"]) == 12
        )
    }

    @Test func blocksRefusalsAndExpiriesAreCounted() throws {
        let sink = PrometheusMetricsSink(version: "test")
        let allowedScanner = IPAddress("198.51.100.99")!
        let blocker = InMemoryBlocker()
        let controller = BlockController(
            blocker: blocker,
            policy: BlockPolicy(ttl: .seconds(10)),
            allowlist: Allowlist([.init(prefix: IPPrefix(host: allowedScanner), reason: .configured)]),
            metrics: sink
        )
        let pipeline = ConnectionPipeline(events: CollectingEventSink(), blocking: controller, metrics: sink)
        for (index, port) in [80, 81, 82, 83].enumerated() {
            pipeline.process(attempt(scanner, 40000, port: UInt16(port), after: Int64(index)))
            pipeline.process(attempt(allowedScanner, 40000, port: UInt16(port), after: Int64(index)))
        }
        pipeline.endOfBatch(now: start + .seconds(4))
        var exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_port_scans_total") == 2)
        #expect(exposition.value("conntrackr_blocks_total", ["origin": "local"]) == 1)
        #expect(exposition.value("conntrackr_blocks_refused_total", ["reason": "allowlisted"]) == 1)
        #expect(exposition.value("conntrackr_unblocks_total", ["reason": "expired"]) == 0)

        pipeline.endOfBatch(now: start + .seconds(20))
        exposition = try Exposition(sink.expositionText())
        #expect(exposition.value("conntrackr_unblocks_total", ["reason": "expired"]) == 1)
        #expect(blocker.entries().isEmpty)
    }
}
