import ConnCore
import ConnTesting
import Dispatch
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct BlockControllerTests {
    let metrics = RecordingMetricsSink()

    func controller(
        _ policy: BlockPolicy = BlockPolicy(),
        allowlist: Allowlist = Allowlist(),
        blocker: any Blocker = InMemoryBlocker()
    ) -> BlockController {
        BlockController(blocker: blocker, policy: policy, allowlist: allowlist, metrics: metrics)
    }

    func scan(from source: String, at time: Timestamp = referenceTime) -> PortScan {
        PortScan(time: time, source: address(source), destination: address("203.0.113.5"), ports: [80, 81, 82, 83])
    }

    @Test func aScannerIsBlockedForTheTTL() throws {
        let controller = controller(BlockPolicy(ttl: .seconds(600)))
        let decision = controller.handle(scan(from: "198.51.100.56"))
        let expected = BlockEntry(
            prefix: prefix("198.51.100.56"),
            reason: .portScan,
            origin: .local,
            since: referenceTime,
            expires: referenceTime + .seconds(600)
        )
        #expect(decision == .blocked(expected))
        #expect(try controller.entries() == [expected])
        #expect(metrics[.blocks(.local)] == 1)
    }

    @Test func aLearnedBlockCoveringAnAllowlistedAddressIsRefused() {
        let gateway = Allowlist.Entry(prefix: prefix("203.0.113.9"), reason: .gateway)
        let allowlist = Allowlist([gateway])
        let controller = controller(allowlist: allowlist)
        let learned = BlockEntry(
            prefix: prefix("203.0.113.0/24"),
            reason: .portScan,
            origin: .fleet,
            since: referenceTime,
            expires: nil
        )
        let decision = controller.applyLearned(learned, at: referenceTime)
        #expect(decision == .refused(.allowlisted(gateway)))
        #expect(decision.refusalText == "allowlisted: gateway 203.0.113.9")
    }

    @Test(arguments: [(64, "2001:db8:0:bad::/64"), (48, "2001:db8::/48"), (128, "2001:db8:0:bad::1234")])
    func anIPv6ScannerIsBlockedAsItsPrefix(length: Int, blocked: String) throws {
        let controller = controller(BlockPolicy(ipv6PrefixLength: length))
        let decision = controller.handle(scan(from: "2001:db8:0:bad::1234"))
        guard case .blocked(let entry) = decision else {
            Issue.record("not blocked: \(decision)")
            return
        }
        #expect(entry.prefix == prefix(blocked))
        // A neighbour in the same /64 goes down with the scanner unless hosts are blocked one by one.
        #expect(entry.prefix.contains(address("2001:db8:0:bad::1")) == (length < 128))
    }

    @Test(arguments: [-1, 129, 1000])
    func anOutOfRangeIPv6PrefixLengthDoesNotCrash(length: Int) throws {
        let controller = controller(BlockPolicy(ipv6PrefixLength: length))
        // Clamped to 1...128. A /1 holds loopback, so it is a shared unit and the scanner is blocked as itself; a
        // /128 blocks the scanner alone. Either way loopback stays open.
        let decision = controller.handle(scan(from: "2001:db8:0:bad::1234"))
        #expect(decision == .blocked(controller.entry(for: scan(from: "2001:db8:0:bad::1234"))))
        #expect(try controller.entries().map(\.prefix) == [prefix("2001:db8:0:bad::1234")])
    }

    @Test func expiryIsReportedBySweepAsUnblocked() throws {
        let controller = controller(BlockPolicy(ttl: .seconds(10)))
        _ = controller.handle(scan(from: "198.51.100.56"))
        _ = controller.handle(scan(from: "2001:db8:0:bad::1", at: referenceTime + .seconds(5)))
        #expect(controller.sweep(now: referenceTime + .seconds(9)).isEmpty)
        #expect(
            controller.sweep(now: referenceTime + .seconds(12))
                == [.unblocked(prefix("198.51.100.56"), reason: .expired, at: referenceTime + .seconds(10))]
        )
        #expect(controller.sweep(now: referenceTime + .seconds(12)).isEmpty)
        #expect(
            controller.sweep(now: referenceTime + .seconds(15))
                == [.unblocked(prefix("2001:db8:0:bad::/64"), reason: .expired, at: referenceTime + .seconds(15))]
        )
        #expect(try controller.entries().isEmpty)
        #expect(metrics[.unblocks(.expired)] == 2)
    }

    @Test func permanentBlocksNeverExpire() throws {
        let controller = controller(BlockPolicy(ttl: nil))
        guard case .blocked(let entry) = controller.handle(scan(from: "198.51.100.56")) else {
            Issue.record("not blocked")
            return
        }
        #expect(entry.expires == nil)
        #expect(controller.sweep(now: referenceTime + .seconds(100 * 365 * 86_400)).isEmpty)
        #expect(try controller.entries().count == 1)
    }

    @Test func maxBlockedRefusesNewSourcesButRenewsExistingOnes() {
        let controller = controller(BlockPolicy(maxBlocked: 2))
        #expect(controller.handle(scan(from: "198.51.100.1")).isBlocked == true)
        #expect(controller.handle(scan(from: "198.51.100.2")).isBlocked == true)
        #expect(
            controller.handle(scan(from: "198.51.100.3")).event(about: address("198.51.100.3"), at: referenceTime)
                == .notBlocked(address("198.51.100.3"), reason: .blocklistFull, at: referenceTime)
        )
        #expect(controller.handle(scan(from: "198.51.100.2", at: referenceTime + .seconds(1))).isBlocked == true)
        #expect(metrics[.blocksRefused(.blocklistFull)] == 1)
        #expect(metrics[.blocks(.local)] == 3)
    }

    @Test func aFullBlockerIsCountedAsBlocklistFull() {
        let controller = controller(blocker: InMemoryBlocker(capacity: 1))
        _ = controller.handle(scan(from: "198.51.100.1"))
        #expect(
            controller.handle(scan(from: "198.51.100.2")).event(about: address("198.51.100.2"), at: referenceTime)
                == .notBlocked(address("198.51.100.2"), reason: .blocklistFull, at: referenceTime)
        )
        #expect(metrics[.blocksRefused(.blocklistFull)] == 1)
    }

    @Test func maxBlocksPerMinuteRefusesTheRestOfTheMinute() {
        let controller = controller(BlockPolicy(maxBlocksPerMinute: 3))
        for index in 1...3 {
            #expect(
                controller.handle(scan(from: "198.51.100.\(index)", at: referenceTime + .seconds(index)))
                    .isBlocked == true
            )
        }
        let limited = referenceTime + .seconds(30)
        #expect(
            controller.handle(scan(from: "198.51.100.4", at: limited)).event(about: address("198.51.100.4"), at: limited)
                == .notBlocked(address("198.51.100.4"), reason: .rateLimited, at: limited)
        )
        #expect(
            controller.handle(scan(from: "198.51.100.5", at: referenceTime + .seconds(60))).isBlocked == false
        )
        // A minute after the first block, one slot is free again.
        #expect(
            controller.handle(scan(from: "198.51.100.6", at: referenceTime + .seconds(61))).isBlocked == true
        )
        #expect(metrics[.blocksRefused(.rateLimited)] == 2)
        #expect(metrics[.blocks(.local)] == 4)
    }

    /// Scans arrive from the capture thread while fleet blocks arrive from other tasks: the limits must hold
    /// under concurrency, not just in sequence.
    @Test func limitsHoldUnderConcurrentScans() throws {
        let blocker = InMemoryBlocker(latency: .milliseconds(2))
        let controller = controller(BlockPolicy(maxBlocked: 1000, maxBlocksPerMinute: 5), blocker: blocker)
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            _ = controller.handle(scan(from: "198.51.100.\(index + 1)"))
        }
        #expect(blocker.entries().count == 5)
        #expect(metrics[.blocks(.local)] == 5)
        #expect(metrics[.blocksRefused(.rateLimited)] == 11)

        let full = self.controller(BlockPolicy(maxBlocked: 3), blocker: InMemoryBlocker(latency: .milliseconds(2)))
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            _ = full.handle(scan(from: "203.0.113.\(index + 1)"))
        }
        #expect(try full.entries().count == 3)
    }

    @Test func aFailingBlockerIsReportedAsAnError() {
        let controller = controller(blocker: FailingBlocker())
        let decision = controller.handle(scan(from: "198.51.100.1"))
        guard case .refused(let refusal) = decision else {
            Issue.record("expected a refusal, got \(decision)")
            return
        }
        #expect(refusal.description.hasPrefix("error: "))
        #expect(metrics[.blocksRefused(.error)] == 1)
    }

    @Test func localBlocksAreHandedToTheFleetHookAndLearnedOnesAreNot() {
        let controller = controller()
        let published = Mutex<[IPPrefix]>([])
        controller.onLocalBlock { entry, _ in published.withLock { $0.append(entry.prefix) } }
        _ = controller.handle(scan(from: "198.51.100.1"))
        _ = controller.applyLearned(
            BlockEntry(
                prefix: prefix("198.51.100.2"),
                reason: .portScan,
                origin: .fleet,
                since: referenceTime,
                expires: nil
            ),
            at: referenceTime
        )
        #expect(published.withLock { $0 } == [prefix("198.51.100.1")])
        #expect(metrics[.blocks(.fleet)] == 1)
    }

    func learned(_ source: String, at time: Timestamp = referenceTime) -> BlockEntry {
        BlockEntry(prefix: prefix(source), reason: .portScan, origin: .fleet, since: time, expires: time + .seconds(600))
    }

    @Test("Learned blocks spend a budget of their own: a fleet storm leaves this agent's own budget whole")
    func learnedBlocksHaveTheirOwnRateLimit() throws {
        let controller = controller(BlockPolicy(maxBlocksPerMinute: 2, maxFleetBlocksPerMinute: 3))
        let applied = (1...10).map { controller.applyLearned(learned("198.51.100.\($0)"), at: referenceTime) }
        #expect(applied.filter { if case .blocked = $0 { true } else { false } }.count == 3)
        #expect(applied.last == .refused(.rateLimited))
        // This agent's own scans still have their whole budget.
        #expect(controller.handle(scan(from: "203.0.113.1")).isBlocked)
        #expect(controller.handle(scan(from: "203.0.113.2")).isBlocked)
        #expect(controller.handle(scan(from: "203.0.113.3")) == .refused(.rateLimited))
        // And the fleet's budget was not spent by them: a minute later it is whole again.
        let later = referenceTime + .seconds(61)
        #expect(controller.applyLearned(learned("198.51.100.50", at: later), at: later).isBlocked)
        #expect(metrics[.blocks(.fleet)] == 4)
        #expect(metrics[.blocks(.local)] == 2)
    }

    @Test("Learned blocks have a cap of their own within the blocklist; local blocks keep the rest")
    func learnedBlocksHaveTheirOwnCap() throws {
        let controller = controller(
            BlockPolicy(maxBlocked: 4, maxBlocksPerMinute: 100, maxFleetBlocked: 2, maxFleetBlocksPerMinute: 100)
        )
        #expect(controller.applyLearned(learned("198.51.100.1"), at: referenceTime).isBlocked)
        #expect(controller.applyLearned(learned("198.51.100.2"), at: referenceTime).isBlocked)
        #expect(controller.applyLearned(learned("198.51.100.3"), at: referenceTime) == .refused(.blocklistFull))
        // Replacing a learned block already there is not a new one.
        #expect(controller.applyLearned(learned("198.51.100.2"), at: referenceTime).isBlocked)
        #expect(controller.handle(scan(from: "203.0.113.1")).isBlocked)
        #expect(controller.handle(scan(from: "203.0.113.2")).isBlocked)
        #expect(controller.handle(scan(from: "203.0.113.3")) == .refused(.blocklistFull))
    }

    @Test("applyLearned always records the entry as learned from the fleet")
    func applyLearnedMarksTheOrigin() throws {
        let controller = controller()
        var entry = learned("198.51.100.9")
        entry.origin = .local
        guard case .blocked(let applied) = controller.applyLearned(entry, at: referenceTime) else {
            Issue.record("not applied")
            return
        }
        #expect(applied.origin == .fleet)
    }
}

extension BlockDecision {
    var isBlocked: Bool {
        if case .blocked = self { return true }
        return false
    }

    /// The reason as events show it, `nil` for a block.
    var refusalText: String? {
        if case .refused(let refusal) = self { return refusal.description }
        return nil
    }
}
