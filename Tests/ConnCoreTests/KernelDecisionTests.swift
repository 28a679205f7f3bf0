import ConnCore
import ConnTesting
import Synchronization
import Testing

/// Attempts whose decision the XDP program made itself (kernel enforcement): the pipeline reports the kernel's
/// decision with the usual events, counts it against the local limits and hands blocks to the fleet hook, and
/// counts and settles disagreements with its own detector.
@Suite("Kernel decisions in the pipeline")
struct KernelDecisionTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let victim = IPAddress("203.0.113.5")!

    struct Setup {
        let sink = CollectingEventSink()
        let metrics = RecordingMetricsSink()
        let blocker = InMemoryBlocker()
        let controller: BlockController
        let pipeline: ConnectionPipeline

        init(allowlist: Allowlist = Allowlist()) {
            controller = BlockController(
                blocker: blocker, policy: BlockPolicy(ttl: .seconds(600)), allowlist: allowlist, metrics: metrics
            )
            pipeline = ConnectionPipeline(events: sink, blocking: controller, metrics: metrics, kernelEnforces: true)
        }

        /// SYNs from the attacker to `ports` at consecutive milliseconds, the last with `decision`.
        func send(_ ports: [UInt16], lastDecision decision: KernelDecision?) {
            send(ports, decisions: [ports.count - 1: decision].compactMapValues { $0 })
        }

        /// SYNs from the attacker to `ports` at consecutive milliseconds, the kernel's decisions by index.
        func send(_ ports: [UInt16], decisions: [Int: KernelDecision]) {
            for (index, port) in ports.enumerated() {
                pipeline.process(
                    ConnectionAttempt(
                        time: referenceTime + .milliseconds(Int64(index)), source: attacker, sourcePort: 40000,
                        destination: victim, destinationPort: port, kernelDecision: decisions[index]
                    )
                )
            }
            pipeline.finish()
        }

        var decisions: [ConnEvent] {
            sink.events.filter {
                switch $0 {
                case .blocked, .notBlocked: true
                default: false
                }
            }
        }
    }

    @Test("The kernel's block at the crossing SYN is reported as a block with the user-space entry")
    func blockAtTheCrossingSYN() throws {
        let setup = Setup()
        let published = Mutex<[IPPrefix]>([])
        setup.controller.onLocalBlock { entry, _ in published.withLock { $0.append(entry.prefix) } }
        setup.send([1, 2, 3, 4], lastDecision: .blocked)
        let scanTime = referenceTime + .milliseconds(3)
        let entry = BlockEntry(
            prefix: IPPrefix(host: Self.attacker), reason: .portScan, since: scanTime, expires: scanTime + .seconds(600)
        )
        #expect(setup.decisions == [.blocked(entry, at: scanTime)])
        #expect(setup.sink.events.filter { if case .portScan = $0 { true } else { false } }.count == 1)
        #expect(setup.blocker.entries() == [entry])
        #expect(setup.metrics[.blocks(.local)] == 1)
        #expect(setup.metrics[.scanRuleDisagreements] == 0)
        #expect(published.withLock { $0 } == [IPPrefix(host: Self.attacker)])
    }

    @Test(
        "Kernel refusals are reported with their reasons",
        arguments: [
            (KernelDecision.refusedRateLimited, BlockRefusal.rateLimited),
            (.refusedBlocklistFull, .blocklistFull),
        ]
    )
    func refusals(kernel: KernelDecision, refusal: BlockRefusal) {
        let setup = Setup()
        setup.send([1, 2, 3, 4], lastDecision: kernel)
        #expect(setup.decisions == [.notBlocked(Self.attacker, reason: refusal, at: referenceTime + .milliseconds(3))])
        #expect(setup.blocker.entries().isEmpty)
        #expect(setup.metrics[.blocksRefused(refusal.kind)] == 1)
    }

    @Test("An allowlisted refusal names the allowlist entry")
    func allowlisted() {
        let listed = Allowlist.Entry(prefix: IPPrefix("198.51.100.0/24")!, reason: .configured)
        let setup = Setup(allowlist: Allowlist([listed]))
        setup.send([1, 2, 3, 4], lastDecision: .refusedAllowlisted)
        #expect(setup.decisions == [.notBlocked(Self.attacker, reason: .allowlisted(listed), at: referenceTime + .milliseconds(3))])
    }

    @Test("A block made later, once a limit lifted, is reported without a second scan and is no disagreement")
    func blockedLater() {
        let setup = Setup()
        setup.send([1, 2, 3, 4, 5], decisions: [3: .refusedRateLimited, 4: .blockedLater])
        #expect(setup.decisions.count == 2)
        #expect({ if case .notBlocked = setup.decisions.first { true } else { false } }())
        #expect({ if case .blocked = setup.decisions.last { true } else { false } }())
        #expect(setup.sink.events.filter { if case .portScan = $0 { true } else { false } }.count == 1)
        #expect(setup.metrics[.scanRuleDisagreements] == 0)
    }

    @Test("A kernel block where the detector saw no scan is reported, and counted as a disagreement")
    func kernelOnly() {
        let setup = Setup()
        setup.send([1, 2], lastDecision: .blocked)
        #expect(setup.decisions.count == 1)
        #expect(setup.blocker.count == 1)
        #expect(setup.metrics[.scanRuleDisagreements] == 1)
    }

    @Test("A scan the kernel did not decide is counted, and blocked from user space unless a block is in force")
    func detectorOnly() {
        let setup = Setup()
        setup.send([1, 2, 3, 4], lastDecision: nil)
        #expect(setup.metrics[.scanRuleDisagreements] == 1)
        #expect(setup.blocker.count == 1)
        #expect(setup.decisions.count == 1)
    }
}
