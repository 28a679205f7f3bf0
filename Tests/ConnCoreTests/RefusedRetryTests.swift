import ConnCore
import ConnTesting
import Testing

/// Issue 14: a scan refused for a limit (`rate_limited`, `blocklist_full`) used to be reported once and never
/// retried, so a scanner that first burned the budget with forged scans then scanned every port unblocked. Now the
/// pipeline retries it at its later SYNs, at most once a second, and blocks it as soon as the limit allows.
@Suite struct RefusedRetryTests {
    func syn(_ seconds: Int64, from source: String, to port: UInt16) -> ConnectionAttempt {
        ConnectionAttempt(
            time: referenceTime + .seconds(seconds), source: address(source), sourcePort: 40000,
            destination: address("203.0.113.5"), destinationPort: port
        )
    }

    /// A pipeline blocking through a controller of `blocker` with `policy`, and the sink of its events.
    func makePipeline(_ blocker: InMemoryBlocker, _ policy: BlockPolicy, allowlist: Allowlist = Allowlist())
        -> (ConnectionPipeline, BlockController, CollectingEventSink)
    {
        let controller = BlockController(
            blocker: blocker, policy: policy, allowlist: allowlist, metrics: DiscardingMetricsSink()
        )
        let sink = CollectingEventSink()
        return (ConnectionPipeline(events: sink, blocking: controller), controller, sink)
    }

    func blocked(_ events: [ConnEvent]) -> [String] {
        events.compactMap { if case .blocked(let entry, _) = $0 { "\(entry.prefix)" } else { nil } }
    }

    @Test func aScannerRefusedByTheBudgetIsBlockedOnceTheBudgetAllows() throws {
        let (pipeline, controller, sink) = makePipeline(InMemoryBlocker(), BlockPolicy(maxBlocksPerMinute: 1))
        // A forged scan spends the minute's only block.
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.1", to: port)) }
        // The real scanner is refused...
        for port in UInt16(1)...4 { pipeline.process(syn(1, from: "198.51.100.56", to: port)) }
        pipeline.endOfBatch(now: referenceTime + .seconds(1))
        #expect(blocked(sink.events) == ["198.51.100.1/32"])
        #expect(sink.events.contains { if case .notBlocked = $0 { true } else { false } })
        // ...and keeps scanning: still refused within the minute, quietly.
        for second in Int64(2)...59 { pipeline.process(syn(second, from: "198.51.100.56", to: UInt16(100 + second))) }
        pipeline.endOfBatch(now: referenceTime + .seconds(59))
        #expect(blocked(sink.events) == ["198.51.100.1/32"])
        #expect(sink.events.count { if case .notBlocked = $0 { true } else { false } } == 1)
        // Its first SYN once the forged block is a minute old blocks it.
        pipeline.process(syn(60, from: "198.51.100.56", to: 200))
        pipeline.endOfBatch(now: referenceTime + .seconds(60))
        #expect(blocked(sink.events) == ["198.51.100.1/32", "198.51.100.56/32"])
        #expect(try controller.entries().count == 2)
    }

    @Test func aScannerRefusedForAFullBlocklistIsBlockedOnceThereIsRoom() throws {
        let (pipeline, _, sink) = makePipeline(InMemoryBlocker(capacity: 1), BlockPolicy(ttl: .seconds(10)))
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.1", to: port)) }
        for port in UInt16(1)...4 { pipeline.process(syn(1, from: "198.51.100.56", to: port)) }
        pipeline.endOfBatch(now: referenceTime + .seconds(1))
        #expect(blocked(sink.events) == ["198.51.100.1/32"])
        // The first block expires at 10 s; the scanner's next SYN after that takes the room.
        pipeline.endOfBatch(now: referenceTime + .seconds(11))
        pipeline.process(syn(12, from: "198.51.100.56", to: 300))
        pipeline.endOfBatch(now: referenceTime + .seconds(12))
        #expect(blocked(sink.events) == ["198.51.100.1/32", "198.51.100.56/32"])
    }

    /// An allowlisted scanner's refusal never lifts by itself: it is not retried.
    @Test func anAllowlistedScannerIsNotRetried() throws {
        let (pipeline, _, sink) = makePipeline(
            InMemoryBlocker(), BlockPolicy(),
            allowlist: Allowlist([.init(prefix: prefix("198.51.100.0/24"), reason: .configured)])
        )
        for second in Int64(0)...70 { pipeline.process(syn(second, from: "198.51.100.56", to: UInt16(1 + second))) }
        pipeline.finish()
        #expect(blocked(sink.events).isEmpty)
        #expect(sink.events.count { if case .notBlocked = $0 { true } else { false } } == 1)
    }
}
