import ConnCore
import ConnTesting
import Testing

@Suite("Pipeline")
struct PipelineTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let client = IPAddress("198.51.100.7")!
    static let victim = IPAddress("203.0.113.5")!

    @Test("Frames become new-connection and scan events; retransmissions, junk and non-SYNs do not")
    func framesToEvents() {
        let sink = CollectingEventSink()
        let metrics = RecordingMetricsSink()
        let pipeline = ConnectionPipeline(events: sink, metrics: metrics)
        let start = Timestamp(seconds: 1_619_623_685)
        var frames: [[UInt8]] = []
        frames.append(FrameBuilder.tcp(from: Self.client, 5000, to: Self.victim, 443))
        frames.append(FrameBuilder.tcp(from: Self.client, 5000, to: Self.victim, 443))  // retransmission
        frames.append(FrameBuilder.tcp(from: Self.victim, 443, to: Self.client, 5000, flags: [.syn, .ack]))
        frames.append([0x01, 0x02, 0x03])
        for port: UInt16 in [22, 80, 443, 8080, 8443] {
            frames.append(FrameBuilder.tcp(from: Self.attacker, 40000, to: Self.victim, port))
        }
        for (index, frame) in frames.enumerated() {
            frame.withUnsafeBytes {
                pipeline.process(frame: $0, linkType: .ethernet, time: start + .milliseconds(Int64(index) * 10))
            }
        }
        pipeline.finish()
        let newConnections = sink.events.filter { if case .newConnection = $0 { true } else { false } }
        #expect(newConnections.count == 6)
        let scans = sink.events.compactMap { if case .portScan(let scan) = $0 { scan } else { nil } }
        #expect(scans.map(\.ports) == [[22, 80, 443, 8080]])
        #expect(pipeline.statistics.frames == 9)
        #expect(pipeline.statistics.attempts == 7)
        #expect(pipeline.statistics.malformedFrames == 1)
        #expect(metrics.value(of: .newConnections) == 6)
        #expect(metrics.value(of: .portScans) == 1)
        #expect(metrics.value(of: .malformedFrames(.truncated)) == 1)
        #expect(metrics.value(of: .framesProcessed) == 9)
        #expect(metrics.value(of: GaugeMetric.trackedPairs) == 2)
    }

    @Test("A scan events line precedes the events of the blocking decision")
    func scanThenDecision() {
        let sink = CollectingEventSink()
        let controller = BlockController(blocker: InMemoryBlocker(capacity: 0), policy: BlockPolicy(), allowlist: Allowlist(), metrics: DiscardingMetricsSink())
        let pipeline = ConnectionPipeline(events: sink, blocking: controller)
        for port: UInt16 in 1...4 {
            pipeline.process(ConnectionAttempt(time: Timestamp(seconds: 10), source: Self.attacker, sourcePort: 1, destination: Self.victim, destinationPort: port))
        }
        pipeline.endOfBatch(now: Timestamp(seconds: 10))
        guard sink.events.count == 6 else {
            Issue.record("expected 4 connections, a scan and a decision: \(sink.events)")
            return
        }
        #expect({ if case .portScan = sink.events[4] { true } else { false } }())
        #expect(sink.events[5] == .notBlocked(Self.attacker, reason: .blocklistFull, at: Timestamp(seconds: 10)))
    }
}
