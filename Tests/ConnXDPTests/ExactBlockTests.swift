import ConnCore
import ConnTesting
import ConnXDP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The exact-match block maps in front of the LPM tries (issue 12, flat drop cost): an IPv4 /32 and an IPv6 /64
/// go to the hash maps, every other prefix to the tries, and the program, the listing, expiry, removal and the
/// kernel's own blocks all agree on which is where. Run with BPF_PROG_TEST_RUN.
@Suite(.enabled(if: geteuid() == 0, "loading BPF programs needs root"))
struct ExactBlockTests {
    static let victim = IPAddress("203.0.113.5")!
    static let victim6 = IPAddress("2001:db8:1::5")!
    static let host = IPAddress("198.51.100.56")!  // blocked as a /32
    static let host6 = IPAddress("2001:db8:bad::56")!  // blocked as its /64
    static let inCIDR = IPAddress("198.51.101.77")!  // inside the blocked /24
    static let inCIDR6 = IPAddress("2001:db8:beef:7::1")!  // inside the blocked /48

    static func syn(_ source: IPAddress, to port: UInt16 = 443) -> [UInt8] {
        FrameBuilder.tcp(
            from: source,
            40001,
            to: source.isIPv4 ? victim : victim6,
            port,
            flags: .syn,
            link: .ethernet(vlanTags: [])
        )
    }

    static func entry(_ text: String, expires: Timestamp? = .now() + .seconds(3600)) -> BlockEntry {
        BlockEntry(prefix: IPPrefix(text)!, reason: .manual, since: .now(), expires: expires)
    }

    /// The entries of the exact-match maps and of the tries.
    static func counts(_ maps: PinnedBlockMaps) throws -> [Int] {
        let counts = try maps.blockMapCounts()
        return [counts.exact, counts.trie]
    }

    static let exact = ["198.51.100.56/32", "2001:db8:bad::/64"]
    static let cidr = ["198.51.101.0/24", "2001:db8:beef::/48"]

    @Test func exactPrefixesGoToTheHashMapsCIDRsToTheTriesAndAllDrop() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        for text in Self.exact + Self.cidr { #expect(try maps.block(Self.entry(text))) }
        #expect(try Self.counts(maps) == [2, 2])

        for source in [Self.host, Self.host6, Self.inCIDR, Self.inCIDR6] {
            #expect(try program.testRun(Self.syn(source), repeat: 2) == .drop, "\(source)")
        }
        // The /64 holds every address of it, not only the one that was seen; its neighbours do not drop.
        #expect(try program.testRun(Self.syn(IPAddress("2001:db8:bad::ffff:1")!)) == .drop)
        for source in ["198.51.100.57", "2001:db8:bad:1::56", "198.51.102.1", "2001:db8:bee0::1"] {
            #expect(try program.testRun(Self.syn(IPAddress(source)!)) == .pass, "\(source)")
        }
        #expect(try program.statistics().dropped == 9)

        // Listed together, with each entry's own counter.
        let listed = Dictionary(uniqueKeysWithValues: try maps.blockEntries().map { ($0.prefix, $0) })
        #expect(Set(listed.keys) == Set((Self.exact + Self.cidr).map { IPPrefix($0)! }))
        #expect(listed[IPPrefix("198.51.100.56/32")!]?.droppedPackets == 2)
        #expect(listed[IPPrefix("2001:db8:bad::/64")!]?.droppedPackets == 3)
        #expect(listed[IPPrefix("198.51.101.0/24")!]?.droppedPackets == 2)
        #expect(listed[IPPrefix("2001:db8:beef::/48")!]?.reason == .manual)

        // Replacing an exact entry keeps its counter and stays one entry.
        #expect(try maps.block(Self.entry("198.51.100.56/32", expires: .now() + .seconds(7200))))
        #expect(try maps.blockEntries().count == 4)
        #expect(try maps.blockEntries().first { $0.prefix == IPPrefix("198.51.100.56/32")! }?.droppedPackets == 2)
    }

    @Test func anIPv6PrefixOtherThanTheSlash64GoesToTheTrie() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try maps.block(Self.entry("2001:db8:bad::56/128")))
        #expect(try maps.block(Self.entry("2001:db8:bad:2::/63")))
        #expect(try Self.counts(maps) == [0, 2])
        #expect(try program.testRun(Self.syn(Self.host6)) == .drop)
        #expect(try program.testRun(Self.syn(IPAddress("2001:db8:bad:3::1")!)) == .drop)
        #expect(try program.testRun(Self.syn(IPAddress("2001:db8:bad::57")!)) == .pass)
    }

    /// An expired exact entry does not hide a live CIDR around it (the exact map is looked up first, then the
    /// trie); within the trie, as before, the longest match decides, even when it has expired.
    @Test func expiryHoldsInBothMapsAndAnExpiredExactBlockDoesNotHideALiveCIDR() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        let soon = Timestamp.now() + .milliseconds(300)
        for text in Self.exact + Self.cidr { #expect(try maps.block(Self.entry(text, expires: soon))) }
        // A live /16 around an exact block that is about to lapse.
        #expect(try maps.block(Self.entry("198.51.0.0/16")))
        for source in [Self.host, Self.host6, Self.inCIDR, Self.inCIDR6] {
            #expect(try program.testRun(Self.syn(source)) == .drop)
        }
        usleep(400_000)
        let before = try program.statistics()
        #expect(try program.testRun(Self.syn(Self.host6)) == .pass, "the expired /64 passes")
        #expect(try program.testRun(Self.syn(Self.inCIDR6)) == .pass, "the expired /48 passes")
        #expect(try program.testRun(Self.syn(Self.host)) == .drop, "the live /16 still holds the expired /32")
        #expect(try program.testRun(Self.syn(Self.inCIDR)) == .pass, "the trie's longest match, the expired /24")
        #expect(try program.statistics().expiredHits - before.expiredHits == 3)

        // The sweep takes the four expired entries, from both maps, and leaves the /16.
        let removed = try maps.unblockExpired(asOf: .now())
        #expect(Set(removed.map(\.prefix)) == Set((Self.exact + Self.cidr).map { IPPrefix($0)! }))
        #expect(try maps.blockEntries().map(\.prefix) == [IPPrefix("198.51.0.0/16")!])
        #expect(try Self.counts(maps) == [0, 1])
    }

    @Test func removalTakesExactlyThePrefixFromItsMap() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        for text in Self.exact + Self.cidr { #expect(try maps.block(Self.entry(text))) }
        #expect(try maps.unblock(IPPrefix("198.51.100.56/32")!))
        #expect(try maps.unblock(IPPrefix("2001:db8:bad::/64")!))
        #expect(try !maps.unblock(IPPrefix("2001:db8:bad::/64")!), "already gone")
        #expect(try !maps.unblock(IPPrefix("198.51.101.77/32")!), "a host inside a blocked /24 is not an entry")
        #expect(try Self.counts(maps) == [0, 2])
        #expect(try program.testRun(Self.syn(Self.host)) == .pass)
        #expect(try program.testRun(Self.syn(Self.host6)) == .pass)
        #expect(try program.testRun(Self.syn(Self.inCIDR)) == .drop)
        #expect(try maps.flushBlocks().count == 2)
        #expect(try Self.counts(maps) == [0, 0])
        #expect(try program.testRun(Self.syn(Self.inCIDR6)) == .pass)
    }

    @Test func capacityCountsBothMaps() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let maps = try PinnedBlockMaps(pinRoot: root.path)
        #expect(maps.blockCapacity.ipv4 == 65_536 + 262_144)
        #expect(maps.blockCapacity.ipv6 == 65_536 + 262_144)
    }

    /// The program's own block of an IPv4 scanner, and of an IPv6 scanner's /64, lands in the hash map; with
    /// another IPv6 unit it lands in the trie, where user space would file it too.
    @Test(arguments: [(64, true), (128, false), (48, false)])
    func theKernelsOwnBlockLandsInTheMapUserSpaceWouldUse(unit: Int, exact: Bool) throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let enforcement = try #require(
            KernelEnforcement(
                rule: ScanRule(portThreshold: 3, window: .seconds(60)),
                policy: BlockPolicy(ttl: .seconds(600), ipv6PrefixLength: unit)
            )
        )
        let program = try XDPProgram(pinRoot: root.path, enforcement: enforcement)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        for port in UInt16(1)...4 {
            _ = try program.testRun(Self.syn(Self.host, to: port))
            _ = try program.testRun(Self.syn(Self.host6, to: port))
        }
        #expect(try program.scanStatistics().blocks == 2)
        #expect(try Self.counts(maps) == [exact ? 2 : 1, exact ? 0 : 1])
        let unitPrefix = IPPrefix(address: Self.host6, length: unit)!
        #expect(Set(try maps.blockEntries().map(\.prefix)) == [IPPrefix(host: Self.host), unitPrefix])
        #expect(try program.testRun(Self.syn(Self.host, to: 9)) == .drop)
        #expect(try program.testRun(Self.syn(Self.host6, to: 9)) == .drop)
        // User space takes the block over (BlockController.adopt) in the same entry, not a second one.
        let now = Timestamp.now()
        #expect(
            try maps.block(BlockEntry(prefix: unitPrefix, reason: .portScan, since: now, expires: now + .seconds(600)))
        )
        #expect(try maps.blockEntries().count == 2)
        // And removes it from there.
        #expect(try maps.unblock(unitPrefix))
        #expect(try program.testRun(Self.syn(Self.host6, to: 9)) == .pass)
    }

    /// Pins of a version without the exact-match maps: the program and the maps handle create them beside the
    /// old ones, and the old blocks still hold.
    @Test func pinsWithoutTheExactMapsGetThemAndKeepTheirBlocks() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        do {
            let maps = try PinnedBlockMaps(pinRoot: root.path)
            #expect(try maps.block(Self.entry("198.51.101.0/24")))
        }
        for name in ["ct_block_v4_exact", "ct_block_v6_exact"] { #expect(unlink("\(root.path)/\(name)") == 0) }
        #expect(throws: ConntrackrError.self) { try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false) }

        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try program.testRun(Self.syn(Self.inCIDR)) == .drop, "the old block holds")
        #expect(try maps.block(Self.entry("198.51.100.56/32")))
        #expect(try Self.counts(maps) == [1, 1])
        #expect(try program.testRun(Self.syn(Self.host)) == .drop)

        // The same through the maps handle alone (`conntrackr blocklist` before any agent of this version ran).
        let root2 = try TemporaryPinRoot()
        defer { root2.remove() }
        do { _ = try PinnedBlockMaps(pinRoot: root2.path) }
        for name in ["ct_block_v4_exact", "ct_block_v6_exact"] { #expect(unlink("\(root2.path)/\(name)") == 0) }
        let reopened = try PinnedBlockMaps(pinRoot: root2.path, createIfMissing: true)
        #expect(try reopened.block(Self.entry("2001:db8:bad::/64")))
        #expect(try Self.counts(reopened) == [1, 0])
    }

    /// A drop's cost under BPF_PROG_TEST_RUN with 1 and with 50,001 exact entries, printed. The bound is loose
    /// (the machine is shared, and each run's wall time includes the test-run overhead); the figures that count
    /// come from `make bench`.
    @Test func dropCostIsFlatInTheNumberOfExactBlocks() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try XDPProgram(pinRoot: root.path)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try maps.block(Self.entry("2001:db8:bad::/64")))
        let frame = Self.syn(Self.host6)
        func nanosecondsPerRun() throws -> Double {
            var best = Double.infinity
            for _ in 0..<7 {
                let start = ContinuousClock.now
                #expect(try program.testRun(frame, repeat: 200_000) == .drop)
                let elapsed = (ContinuousClock.now - start).components
                best = min(best, Double(elapsed.seconds) * 1e9 + Double(elapsed.attoseconds) / 1e9)
            }
            return best / 200_000
        }
        let one = try nanosecondsPerRun()
        let since = Timestamp.now()
        for index in 0..<50_000 {
            let address = IPAddress("2001:db8:8000:\(String(index, radix: 16))::")!
            let prefix = IPPrefix(address: address, length: 64)!
            _ = try maps.block(BlockEntry(prefix: prefix, reason: .manual, since: since, expires: nil))
        }
        let many = try nanosecondsPerRun()
        print("drop cost, BPF_PROG_TEST_RUN: \(one) ns with 1 exact entry, \(many) ns with 50,001")
        #expect(many < one * 3)
    }
}
