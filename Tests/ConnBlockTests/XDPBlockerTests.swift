import ConnBlock
import ConnCore
import ConnTesting
import ConnXDP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// XDPBlocker and PinnedBlockMaps against real maps pinned in a bpffs directory of the test's own.
@Suite(.enabled(if: geteuid() == 0, "BPF maps need root"))
struct XDPBlockerTests {
    static func entry(
        _ text: String,
        reason: BlockReason = .portScan,
        origin: BlockOrigin = .local,
        since: Timestamp = .now(),
        ttl: Duration? = .seconds(3600)
    ) -> BlockEntry {
        BlockEntry(
            prefix: IPPrefix(text)!,
            reason: reason,
            origin: origin,
            since: since,
            expires: ttl.map { since + $0 }
        )
    }

    /// Expiry goes through CLOCK_BOOTTIME and back; the two clock readings of each conversion are a few
    /// microseconds apart at most.
    static func nearlyEqual(_ lhs: Timestamp?, _ rhs: Timestamp?) -> Bool {
        switch (lhs, rhs) {
        case (nil, nil): true
        case (let lhs?, let rhs?): abs(lhs.nanoseconds - rhs.nanoseconds) < 1_000_000
        default: false
        }
    }

    @Test func addListRemoveRoundTrip() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let blocker = try XDPBlocker(pinRoot: root.path)
        let scanner = Self.entry("198.51.100.56/32")
        let manual = Self.entry("198.51.100.0/24", reason: .manual, ttl: nil)
        let fleet = Self.entry("2001:db8:bad::/64", origin: .fleet, ttl: .seconds(60))
        for entry in [scanner, manual, fleet] { #expect(try blocker.add(entry)) }

        let listed = try blocker.entries()
        #expect(listed.count == 3)
        for expected in [scanner, manual, fleet] {
            let found = listed.first { $0.prefix == expected.prefix }
            #expect(found?.reason == expected.reason)
            #expect(found?.origin == expected.origin)
            #expect(found?.since == expected.since)
            #expect(found?.droppedPackets == 0)
            #expect(Self.nearlyEqual(found?.expires, expected.expires), "\(String(describing: found?.expires))")
        }

        #expect(try blocker.remove(IPPrefix("198.51.100.56/32")!))
        #expect(try !blocker.remove(IPPrefix("198.51.100.56/32")!), "already gone")
        #expect(try !blocker.remove(IPPrefix("198.51.100.0/25")!), "only exact prefixes are removed")
        #expect(Set(try blocker.entries().map(\.prefix)) == [manual.prefix, fleet.prefix])
    }

    @Test func replacingAPrefixKeepsOneEntry() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let blocker = try XDPBlocker(pinRoot: root.path)
        #expect(try blocker.add(Self.entry("203.0.113.9/32", ttl: .seconds(10))))
        let longer = Self.entry("203.0.113.9/32", ttl: .seconds(7200))
        #expect(try blocker.add(longer))
        let listed = try blocker.entries()
        #expect(listed.count == 1)
        #expect(Self.nearlyEqual(listed.first?.expires, longer.expires))
    }

    @Test func removeExpiredTakesOnlyWhatHasLapsed() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let blocker = try XDPBlocker(pinRoot: root.path)
        let now = Timestamp.now()
        let lapsed = Self.entry("198.51.100.1/32", since: now + .seconds(-120), ttl: .seconds(60))
        let lapsed6 = Self.entry("2001:db8:1::/64", since: now + .seconds(-120), ttl: .seconds(119))
        let running = Self.entry("198.51.100.2/32", since: now, ttl: .seconds(60))
        let permanent = Self.entry("198.51.100.3/32", since: now, ttl: nil)
        for entry in [lapsed, lapsed6, running, permanent] { #expect(try blocker.add(entry)) }

        let removed = try blocker.removeExpired(asOf: now)
        #expect(Set(removed.map(\.prefix)) == [lapsed.prefix, lapsed6.prefix])
        #expect(Set(try blocker.entries().map(\.prefix)) == [running.prefix, permanent.prefix])
        #expect(try blocker.removeExpired(asOf: now).isEmpty)
        // Far in the future everything but the permanent block has lapsed.
        #expect(try blocker.removeExpired(asOf: now + .seconds(86_400)).map(\.prefix) == [running.prefix])
    }

    /// Each family has an exact-match map (/32, /64) and a trie (other prefixes), each with room of its own.
    @Test func fullMapRefusesNewPrefixesButTakesReplacements() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let maps = try PinnedBlockMaps(pinRoot: root.path)
        let blocker = XDPBlocker(maps: maps)
        let capacity = maps.blockCapacity
        let trie = 65_536
        #expect(capacity.ipv4 == trie + 262_144 && capacity.ipv6 == trie + 262_144)
        #expect(blocker.capacity == 2 * (trie + 262_144))
        let since = Timestamp.now()
        for index in 0..<trie {
            let address = IPAddress(ipv4: 0xCA00_0000 | UInt32(index) << 1)  // 202.0.0.0/15, /31 by /31
            let added = try blocker.add(
                BlockEntry(prefix: IPPrefix(address: address, length: 31)!, reason: .manual, since: since, expires: nil)
            )
            if !added {
                Issue.record("refused entry \(index) of \(trie)")
                return
            }
        }
        #expect(try !blocker.add(Self.entry("198.51.100.0/31")), "a new IPv4 CIDR does not fit")
        #expect(try blocker.add(Self.entry("202.0.0.6/31")), "replacing an existing one does")
        #expect(try blocker.add(Self.entry("198.51.100.1/32")), "the exact-match map has its own room")
        #expect(try blocker.add(Self.entry("2001:db8::/48")), "the IPv6 trie has its own room")
        #expect(try blocker.entries().count == trie + 2)
        #expect(try maps.flushBlocks().count == trie + 2)
        #expect(try maps.blockEntries().isEmpty)
    }

    /// The count the program checks --max-blocked against is the blocker's, over both kinds of map: with a /32 and
    /// a /24 blocked and room for three, the kernel blocks one scanner and refuses the next.
    @Test func theKernelsMaxBlockedCountsExactAndCIDRBlocks() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let blocker = try XDPBlocker(pinRoot: root.path)
        #expect(try blocker.add(Self.entry("198.51.100.99/32")))
        #expect(try blocker.add(Self.entry("198.51.101.0/24")))
        #expect(try blocker.entries().count == 2)
        let enforcement = try #require(
            KernelEnforcement(rule: ScanRule(portThreshold: 3), policy: BlockPolicy(maxBlocked: 3))
        )
        let program = try XDPProgram(pinRoot: root.path, enforcement: enforcement)
        var verdicts: [XDPProgram.Verdict] = []
        for source in ["198.51.100.1", "198.51.100.2"] {
            for port in UInt16(1)...4 {
                let frame = FrameBuilder.tcp(
                    from: IPAddress(source)!,
                    40001,
                    to: IPAddress("203.0.113.5")!,
                    port,
                    flags: .syn,
                    link: .ethernet(vlanTags: [])
                )
                verdicts.append(try program.testRun(frame))
            }
        }
        #expect(verdicts == [.pass, .pass, .pass, .drop, .pass, .pass, .pass, .pass])
        #expect(try program.scanStatistics().refusedFull == 1)
    }

    @Test func secondHandleSeesTheSameMaps() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let agent = try XDPBlocker(pinRoot: root.path)
        let command = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try command.block(Self.entry("198.51.100.77/32", reason: .manual)))
        #expect(try agent.entries().map(\.prefix) == [IPPrefix("198.51.100.77/32")!])
        #expect(try agent.remove(IPPrefix("198.51.100.77/32")!))
        #expect(try command.blockEntries().isEmpty)
    }

    @Test func changesByAnotherProcessShowAfterTheRefreshInterval() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let agent = XDPBlocker(maps: try PinnedBlockMaps(pinRoot: root.path), refreshInterval: .milliseconds(200))
        let command = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try agent.entries().isEmpty)
        #expect(try command.block(Self.entry("198.51.100.77/32", reason: .manual)))
        #expect(try agent.entries().isEmpty, "answered from the copy")
        usleep(250_000)
        #expect(try agent.entries().map(\.prefix) == [IPPrefix("198.51.100.77/32")!])
    }

    @Test func sweepLeavesABlockRenewedElsewhere() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let agent = try XDPBlocker(pinRoot: root.path)
        let command = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        let now = Timestamp.now()
        #expect(try agent.add(Self.entry("198.51.100.5/32", since: now, ttl: .seconds(10))))
        #expect(try command.block(Self.entry("198.51.100.5/32", reason: .manual, since: now, ttl: .seconds(3600))))
        #expect(try agent.removeExpired(asOf: now + .seconds(11)).isEmpty)
        let kept = try command.blockEntries()
        #expect(kept.map(\.reason) == [.manual])
        // The agent reads the maps again after such a surprise.
        #expect(try agent.entries().map(\.reason) == [.manual])
    }

    @Test func allowlistSyncAddsAndRemoves() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let maps = try PinnedBlockMaps(pinRoot: root.path)
        let configured = Allowlist.Entry(prefix: IPPrefix("203.0.113.0/24")!, reason: .configured)
        let gateway = Allowlist.Entry(prefix: IPPrefix("2001:db8::1/128")!, reason: .gateway)
        try maps.syncAllowlist(Allowlist([configured, gateway]))
        #expect(
            Set(try maps.allowedPrefixes())
                == [IPPrefix("127.0.0.0/8")!, IPPrefix("::1/128")!, configured.prefix, gateway.prefix]
        )
        try maps.syncAllowlist(Allowlist([gateway]))
        #expect(Set(try maps.allowedPrefixes()) == [IPPrefix("127.0.0.0/8")!, IPPrefix("::1/128")!, gateway.prefix])
        try maps.syncAllowed([])
        #expect(try maps.allowedPrefixes().isEmpty)
    }

    @Test func controllerBlocksAScannerThroughTheMaps() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let blocker = try XDPBlocker(pinRoot: root.path)
        let controller = BlockController(
            blocker: blocker,
            policy: BlockPolicy(ttl: .seconds(30)),
            allowlist: Allowlist(),
            metrics: DiscardingMetricsSink()
        )
        let scan = PortScan(
            time: .now(),
            source: IPAddress("2001:db8:bad::56")!,
            destination: IPAddress("2001:db8::5")!,
            ports: [22, 80, 443, 8080]
        )
        let decision = controller.handle(scan)
        guard case .blocked(let entry) = decision else {
            Issue.record("expected a block, got \(decision)")
            return
        }
        #expect(entry.prefix == IPPrefix("2001:db8:bad::/64")!)
        #expect(try blocker.entries().map(\.prefix) == [entry.prefix])
        #expect(controller.sweep(now: scan.time + .seconds(31)).count == 1)
        #expect(try blocker.entries().isEmpty)
    }

    @Test func missingPinsAreAClearErrorWithoutCreate() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        do {
            _ = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
            Issue.record("opened maps that were never pinned")
        } catch let error as ConntrackrError {
            #expect(error.code == .blockerFailed)
            #expect(error.message.contains("no conntrackr maps pinned under \(root.path)"))
        }
    }

    @Test func pinRootOutsideBPFFileSystemIsAClearError() throws {
        do {
            _ = try PinnedBlockMaps(pinRoot: "/tmp/conntrackr-not-bpffs-\(getpid())", createIfMissing: true)
            Issue.record("opened maps on tmpfs")
        } catch let error as ConntrackrError {
            #expect(error.code == .kernelUnsupported)
            #expect(error.message.contains("mount -t bpf bpf /sys/fs/bpf"))
        }
    }
}
