import ConnCore
import ConnTesting
import Testing

@Suite("Pipeline fed from another thread")
struct PipelineFeedTests {
    static let victim = IPAddress("203.0.113.5")!

    /// Frames of every verdict: SYNs from many sources (some scanning, some retransmitted), SYN-ACKs, junk.
    static let frames: [[UInt8]] = (0..<20_000).map { index in
        let source = IPAddress("10.\(index % 7).\(index / 256 % 256).\(index % 256)")!
        switch index % 10 {
        case 0: return FrameBuilder.tcp(from: victim, 443, to: source, 5000, flags: [.syn, .ack])
        case 1: return [0x01, 0x02, 0x03]
        case 2: return FrameBuilder.tcp(from: IPAddress("198.51.100.\(index % 50)")!, 40000, to: victim, UInt16(index % 300))
        default: return FrameBuilder.tcp(from: source, UInt16(1024 + index % 3), to: victim, 443)
        }
    }

    /// Runs the frames through `process`, ending batches every 1,000 frames except over one long stretch (longer than
    /// a slot holds), and returns what the pipeline reported.
    static func run(
        _ process: (ConnectionPipeline, UnsafeRawBufferPointer, Timestamp) -> Void,
        endOfBatch: (ConnectionPipeline, Timestamp) -> Void,
        finish: (ConnectionPipeline) -> Void
    ) -> (events: [ConnEvent], statistics: ConnectionPipeline.Statistics, malformed: [MalformedReason: Int], metrics: Int) {
        let sink = CollectingEventSink()
        let metrics = RecordingMetricsSink()
        let pipeline = ConnectionPipeline(events: sink, metrics: metrics)
        let start = Timestamp(seconds: 1_619_623_685)
        for (index, frame) in frames.enumerated() {
            let time = start + .milliseconds(Int64(index))
            frame.withUnsafeBytes { process(pipeline, $0, time) }
            if index % 1_000 == 999 && !(5_000..<15_000).contains(index) { endOfBatch(pipeline, time) }
        }
        finish(pipeline)
        return (sink.events, pipeline.statistics, pipeline.malformedByReason, metrics.value(of: .framesProcessed))
    }

    @Test("Events, counts and metrics are those of the pipeline called directly, threaded or not", arguments: [true, false])
    func sameAsDirect(threaded: Bool) {
        let direct = Self.run(
            { $0.process(frame: $1, linkType: .ethernet, time: $2) },
            endOfBatch: { $0.endOfBatch(now: $1) },
            finish: { $0.finish() }
        )
        var feed: PipelineFeed?
        let fed = Self.run(
            { pipeline, frame, time in
                if feed == nil { feed = PipelineFeed(pipeline: pipeline, threaded: threaded) }
                feed?.process(frame: frame, linkType: .ethernet, time: time)
            },
            endOfBatch: { _, time in feed?.endOfBatch(now: time) },
            finish: { _ in feed?.finish() }
        )
        #expect(direct.statistics.frames == 20_000)
        #expect(direct.statistics.portScans > 0)
        #expect(direct.statistics.malformedFrames == 2_000)
        #expect(fed.events == direct.events)
        #expect(fed.statistics == direct.statistics)
        #expect(fed.malformed == direct.malformed)
        #expect(fed.metrics == direct.metrics)
    }
}
