import ConnCore
import ConnTesting
import Dispatch
import Foundation
import Testing

/// A blocker whose additions wait until the test opens its gate (at most 10 s), as a slow kernel call would.
final class GatedBlocker: Blocker {
    let name = "gated"
    let inner = InMemoryBlocker()
    private let gate = DispatchSemaphore(value: 0)

    func open() {
        // Enough permits for every waiting and later call of a test.
        for _ in 0..<64 { gate.signal() }
    }

    func add(_ entry: BlockEntry) throws -> Bool {
        _ = gate.wait(timeout: .now() + 10)
        return inner.add(entry)
    }

    func remove(_ prefix: IPPrefix) throws -> Bool { inner.remove(prefix) }
    func entries() throws -> [BlockEntry] { inner.entries() }
    func replaceAllowlist(_ allowlist: Allowlist) throws {}
}

/// Issue 12: block decisions are applied on a thread of the pipeline's own, so capture never waits for the
/// blocker; the `port_scan` event comes at detection, the `blocked` event once the block is in force.
@Suite(.timeLimit(.minutes(1))) struct BlockThreadTests {
    func syn(_ seconds: Int64, from source: String, to port: UInt16) -> ConnectionAttempt {
        ConnectionAttempt(
            time: referenceTime + .seconds(seconds), source: address(source), sourcePort: 40000,
            destination: address("203.0.113.5"), destinationPort: port
        )
    }

    func kinds(_ events: [ConnEvent]) -> [String] {
        events.compactMap {
            switch $0 {
            case .portScan(let scan): "port_scan \(scan.source)"
            case .blocked(let entry, _): "blocked \(entry.prefix)"
            case .notBlocked(let source, let reason, _): "not_blocked \(source) \(reason.kind.rawValue)"
            default: nil
            }
        }
    }

    /// Ends batches until `done` holds or 10 s pass.
    func endBatches(_ pipeline: ConnectionPipeline, at seconds: Int64, until done: () -> Bool) {
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            pipeline.endOfBatch(now: referenceTime + .seconds(seconds))
            if done() { return }
            usleep(5_000)
        } while ContinuousClock.now < deadline
    }

    /// A pipeline whose blocking thread applies blocks through a blocker held at its gate until opened.
    func gatedPipeline(queueCapacity: Int) -> (GatedBlocker, CollectingEventSink, ConnectionPipeline) {
        let blocker = GatedBlocker()
        let controller = BlockController(
            blocker: blocker, policy: BlockPolicy(), allowlist: Allowlist(), metrics: DiscardingMetricsSink()
        )
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(
            events: sink, blocking: controller, blockExecution: .dedicatedThread(queueCapacity: queueCapacity)
        )
        return (blocker, sink, pipeline)
    }

    @Test func captureGoesOnWhileTheBlockerIsBusy() throws {
        let (blocker, sink, pipeline) = gatedPipeline(queueCapacity: 16)
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.7", to: port)) }
        // Further packets are processed although the block waits at the gate (inline, this would wait 10 s and
        // the blocked event would already be there).
        pipeline.process(syn(0, from: "198.51.100.8", to: 80))
        pipeline.endOfBatch(now: referenceTime)
        #expect(kinds(sink.events) == ["port_scan 198.51.100.7"])
        #expect(blocker.inner.entries().isEmpty)

        blocker.open()
        endBatches(pipeline, at: 0) { sink.events.count { if case .blocked = $0 { true } else { false } } > 0 }
        #expect(kinds(sink.events) == ["port_scan 198.51.100.7", "blocked 198.51.100.7/32"])
        #expect(blocker.inner.entries().map(\.prefix) == [prefix("198.51.100.7")])
    }

    @Test func refusalsAreReportedAndRetriedAsInline() throws {
        let controller = BlockController(
            blocker: InMemoryBlocker(), policy: BlockPolicy(maxBlocksPerMinute: 1), allowlist: Allowlist(),
            metrics: DiscardingMetricsSink()
        )
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(
            events: sink, blocking: controller, blockExecution: .dedicatedThread(queueCapacity: 16)
        )
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.1", to: port)) }
        for port in UInt16(1)...4 { pipeline.process(syn(1, from: "198.51.100.56", to: port)) }
        endBatches(pipeline, at: 1) { kinds(sink.events).count > 3 }
        #expect(
            kinds(sink.events) == [
                "port_scan 198.51.100.1", "port_scan 198.51.100.56", "blocked 198.51.100.1/32",
                "not_blocked 198.51.100.56 rate_limited",
            ]
        )
        // A minute later the budget allows: the scanner's next SYN gets it blocked, reported once.
        pipeline.process(syn(62, from: "198.51.100.56", to: 9))
        endBatches(pipeline, at: 62) { kinds(sink.events).count > 4 }
        #expect(kinds(sink.events).last == "blocked 198.51.100.56/32")
    }

    @Test func aFullQueueIsCountedAndTheScannerRetriedLater() throws {
        let (blocker, sink, pipeline) = gatedPipeline(queueCapacity: 1)
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.7", to: port)) }
        for port in UInt16(1)...4 { pipeline.process(syn(0, from: "198.51.100.9", to: port)) }
        pipeline.endOfBatch(now: referenceTime)
        #expect(pipeline.statistics.blockQueueOverflows == 1)
        #expect(kinds(sink.events) == ["port_scan 198.51.100.7", "port_scan 198.51.100.9"])

        blocker.open()
        endBatches(pipeline, at: 0) { kinds(sink.events).count > 2 }
        // The scanner that found no room is blocked at its next SYN a second later.
        pipeline.process(syn(2, from: "198.51.100.9", to: 10))
        endBatches(pipeline, at: 2) { kinds(sink.events).count > 3 }
        #expect(
            kinds(sink.events) == [
                "port_scan 198.51.100.7", "port_scan 198.51.100.9",
                "blocked 198.51.100.7/32", "blocked 198.51.100.9/32",
            ]
        )
    }
}
