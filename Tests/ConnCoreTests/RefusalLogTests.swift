import ConnCore
import ConnTesting
import InMemoryLogging
import Logging
import Testing

@Suite("Logging of scanners not blocked")
struct RefusalLogTests {
    static let victim = IPAddress("203.0.113.5")!

    /// Scanner `index` (198.51.100.index, or 2001:db8:2:index::1 when allowlisted: a /64 each, so each is a
    /// scanner of its own) scans four ports at `time`.
    static func scan(_ pipeline: ConnectionPipeline, index: Int, allowlisted: Bool = false, at time: Timestamp) {
        let source = IPAddress(allowlisted ? "2001:db8:2:\(index)::1" : "198.51.100.\(index)")!
        let destination = allowlisted ? IPAddress("2001:db8:1::5")! : victim
        for port: UInt16 in 1...4 {
            pipeline.process(
                ConnectionAttempt(time: time, source: source, sourcePort: 1, destination: destination, destinationPort: port)
            )
        }
        pipeline.endOfBatch(now: time)
    }

    @Test("A storm of refusals is one log line per kind per interval, each event still emitted")
    func stormIsRateLimited() {
        let handler = InMemoryLogHandler()
        let sink = CollectingEventSink()
        let allowlist = Allowlist([Allowlist.Entry(prefix: IPPrefix("2001:db8:2::/48")!, reason: .configured)])
        let controller = BlockController(
            blocker: InMemoryBlocker(capacity: 0), policy: BlockPolicy(), allowlist: allowlist, metrics: DiscardingMetricsSink()
        )
        let pipeline = ConnectionPipeline(events: sink, blocking: controller, logger: Logger(label: "test") { _ in handler })
        let start = Timestamp(seconds: 1_000)
        for index in 1...50 { Self.scan(pipeline, index: index, at: start + .milliseconds(Int64(index))) }
        for index in 1...3 { Self.scan(pipeline, index: index, allowlisted: true, at: start + .milliseconds(100)) }
        Self.scan(pipeline, index: 51, at: start + .seconds(11))

        let refusals = sink.events.filter { if case .notBlocked = $0 { true } else { false } }
        #expect(refusals.count == 54)
        let lines = handler.entries.filter { $0.message == "scanner not blocked" }
        #expect(lines.map { $0.metadata["reason"]?.description } == ["blocklist_full", "allowlisted: configured 2001:db8:2::/48", "blocklist_full"])
        #expect(lines.map { $0.metadata["unlogged_since_last"]?.description } == [nil, nil, "49"])
    }
}
