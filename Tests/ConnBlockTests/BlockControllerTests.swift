import ConnBlock
import ConnCore
import Dispatch
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct BlockControllerTests {
    let metrics = CountingMetricsSink()

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
        let events = controller.handle(scan(from: "198.51.100.56"))
        let expected = BlockEntry(
            prefix: prefix("198.51.100.56"),
            reason: .portScan,
            origin: .local,
            since: referenceTime,
            expires: referenceTime + .seconds(600)
        )
        #expect(events == [.blocked(expected, at: referenceTime)])
        #expect(try controller.blocker.entries() == [expected])
        #expect(metrics[.blocks(.local)] == 1)
    }

    @Test func anAllowlistedScannerIsReportedWithItsReasonAndNotBlocked() throws {
        let allowlist = try HostAllowlist(
            allowed: [prefix("198.51.100.0/24")],
            ipv4RouteTable: fixturePath("route"),
            ipv6RouteTable: fixturePath("ipv6_route")
        ).build(hostAddresses: [address("203.0.113.5")])
        let controller = controller(allowlist: allowlist)
        let cases = [
            ("198.51.100.77", "allowlisted: configured 198.51.100.0/24"),
            ("203.0.113.1", "allowlisted: gateway 203.0.113.1"),
            ("203.0.113.5", "allowlisted: host address 203.0.113.5"),
            ("127.0.0.1", "allowlisted: loopback 127.0.0.0/8"),
            // The IPv6 gateway is link-local; a scan from its /64 would block it.
            ("fe80::1234", "allowlisted: gateway fe80::1"),
        ]
        for (source, reason) in cases {
            #expect(
                controller.handle(scan(from: source)) == [
                    .notBlocked(address(source), reason: reason, at: referenceTime)
                ]
            )
        }
        #expect(try controller.blocker.entries().isEmpty)
        #expect(metrics[.blocksRefused(reason: "allowlisted")] == cases.count)
        #expect(metrics[.blocks(.local)] == 0)
    }

    @Test func aLearnedBlockCoveringAnAllowlistedAddressIsRefused() {
        let allowlist = Allowlist([.init(prefix: prefix("203.0.113.9"), reason: "gateway")])
        let controller = controller(allowlist: allowlist)
        let learned = BlockEntry(
            prefix: prefix("203.0.113.0/24"),
            reason: .portScan,
            origin: .fleet,
            since: referenceTime,
            expires: nil
        )
        #expect(
            controller.applyLearned(learned, at: referenceTime)
                == [.notBlocked(address("203.0.113.0"), reason: "allowlisted: gateway 203.0.113.9", at: referenceTime)]
        )
    }

    @Test(arguments: [(64, "2001:db8:0:bad::/64"), (48, "2001:db8::/48"), (128, "2001:db8:0:bad::1234")])
    func anIPv6ScannerIsBlockedAsItsPrefix(length: Int, blocked: String) throws {
        let controller = controller(BlockPolicy(ipv6PrefixLength: length))
        let events = controller.handle(scan(from: "2001:db8:0:bad::1234"))
        guard case .blocked(let entry, _)? = events.first else {
            Issue.record("not blocked: \(events)")
            return
        }
        #expect(entry.prefix == prefix(blocked))
        // A neighbour in the same /64 goes down with the scanner unless hosts are blocked one by one.
        #expect(entry.prefix.contains(address("2001:db8:0:bad::1")) == (length < 128))
    }

    @Test(arguments: [-1, 129, 1000])
    func anOutOfRangeIPv6PrefixLengthDoesNotCrash(length: Int) {
        let controller = controller(BlockPolicy(ipv6PrefixLength: length))
        let events = controller.handle(scan(from: "2001:db8:0:bad::1234"))
        #expect(events.count == 1)
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
        #expect(try controller.blocker.entries().isEmpty)
        #expect(metrics[.unblocks(.expired)] == 2)
    }

    @Test func permanentBlocksNeverExpire() throws {
        let controller = controller(BlockPolicy(ttl: nil))
        guard case .blocked(let entry, _)? = controller.handle(scan(from: "198.51.100.56")).first else {
            Issue.record("not blocked")
            return
        }
        #expect(entry.expires == nil)
        #expect(controller.sweep(now: referenceTime + .seconds(100 * 365 * 86_400)).isEmpty)
        #expect(try controller.blocker.entries().count == 1)
    }

    @Test func maxBlockedRefusesNewSourcesButRenewsExistingOnes() {
        let controller = controller(BlockPolicy(maxBlocked: 2))
        #expect(controller.handle(scan(from: "198.51.100.1")).first?.isBlocked == true)
        #expect(controller.handle(scan(from: "198.51.100.2")).first?.isBlocked == true)
        #expect(
            controller.handle(scan(from: "198.51.100.3")) == [
                .notBlocked(address("198.51.100.3"), reason: "blocklist_full", at: referenceTime)
            ]
        )
        #expect(controller.handle(scan(from: "198.51.100.2", at: referenceTime + .seconds(1))).first?.isBlocked == true)
        #expect(metrics[.blocksRefused(reason: "blocklist_full")] == 1)
        #expect(metrics[.blocks(.local)] == 3)
    }

    @Test func aFullBlockerIsCountedAsBlocklistFull() {
        let controller = controller(blocker: InMemoryBlocker(capacity: 1))
        _ = controller.handle(scan(from: "198.51.100.1"))
        #expect(
            controller.handle(scan(from: "198.51.100.2")) == [
                .notBlocked(address("198.51.100.2"), reason: "blocklist_full", at: referenceTime)
            ]
        )
        #expect(metrics[.blocksRefused(reason: "blocklist_full")] == 1)
    }

    @Test func maxBlocksPerMinuteRefusesTheRestOfTheMinute() {
        let controller = controller(BlockPolicy(maxBlocksPerMinute: 3))
        for index in 1...3 {
            #expect(
                controller.handle(scan(from: "198.51.100.\(index)", at: referenceTime + .seconds(index))).first?
                    .isBlocked == true
            )
        }
        let limited = referenceTime + .seconds(30)
        #expect(
            controller.handle(scan(from: "198.51.100.4", at: limited)) == [
                .notBlocked(address("198.51.100.4"), reason: "rate_limited", at: limited)
            ]
        )
        #expect(
            controller.handle(scan(from: "198.51.100.5", at: referenceTime + .seconds(60))).first?.isBlocked == false
        )
        // A minute after the first block, one slot is free again.
        #expect(
            controller.handle(scan(from: "198.51.100.6", at: referenceTime + .seconds(61))).first?.isBlocked == true
        )
        #expect(metrics[.blocksRefused(reason: "rate_limited")] == 2)
        #expect(metrics[.blocks(.local)] == 4)
    }

    /// Scans arrive from the capture thread while fleet blocks arrive from other tasks: the limits must hold
    /// under concurrency, not just in sequence.
    @Test func limitsHoldUnderConcurrentScans() throws {
        let blocker = SlowBlocker()
        let controller = controller(BlockPolicy(maxBlocked: 1000, maxBlocksPerMinute: 5), blocker: blocker)
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            _ = controller.handle(scan(from: "198.51.100.\(index + 1)"))
        }
        #expect(blocker.entries().count == 5)
        #expect(metrics[.blocks(.local)] == 5)
        #expect(metrics[.blocksRefused(reason: "rate_limited")] == 11)

        let full = self.controller(BlockPolicy(maxBlocked: 3), blocker: SlowBlocker())
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            _ = full.handle(scan(from: "203.0.113.\(index + 1)"))
        }
        #expect(try full.blocker.entries().count == 3)
    }

    @Test func aFailingBlockerIsReportedAsAnError() {
        let controller = controller(blocker: FailingBlocker())
        let events = controller.handle(scan(from: "198.51.100.1"))
        guard case .notBlocked(_, let reason, _)? = events.first else {
            Issue.record("expected notBlocked, got \(events)")
            return
        }
        #expect(reason.hasPrefix("error: "))
        #expect(metrics[.blocksRefused(reason: "error")] == 1)
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
}

extension ConnEvent {
    var isBlocked: Bool {
        if case .blocked = self { return true }
        return false
    }
}

/// An in-memory blocker whose calls take a moment, as nft's do, so that races between callers show.
final class SlowBlocker: Blocker {
    let name = "slow"
    private let inner = InMemoryBlocker()

    private func pause() { usleepMilliseconds(2) }

    func add(_ entry: BlockEntry) -> Bool {
        pause()
        return inner.add(entry)
    }

    func remove(_ prefix: IPPrefix) -> Bool { inner.remove(prefix) }

    func entries() -> [BlockEntry] {
        pause()
        return inner.entries()
    }

    func removeExpired(asOf now: Timestamp) -> [BlockEntry] { inner.removeExpired(asOf: now) }
}

final class FailingBlocker: Blocker {
    let name = "failing"
    func add(_ entry: BlockEntry) throws -> Bool { throw ConntrackrError(.blockerFailed, "no kernel today") }
    func remove(_ prefix: IPPrefix) throws -> Bool { throw ConntrackrError(.blockerFailed, "no kernel today") }
    func entries() throws -> [BlockEntry] { [] }
}

func usleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: 0, tv_nsec: milliseconds * 1_000_000)
    nanosleep(&request, nil)
}
