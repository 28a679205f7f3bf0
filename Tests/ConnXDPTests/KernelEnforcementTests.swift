import ConnCore
import ConnTesting
import ConnXDP
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The scan rule enforced by the XDP program itself, run on hand-built SYNs with BPF_PROG_TEST_RUN: the SYN that
/// takes a pair over the threshold is dropped and its source blocked, at once, within the same guard rails as user
/// space (allowlist, per-minute budget), and a refused block is retried.
@Suite(.enabled(if: geteuid() == 0, "loading BPF programs needs root"))
struct KernelEnforcementTests {
    static let victim = IPAddress("203.0.113.5")!

    static func syn(_ source: IPAddress, to port: UInt16, destination: IPAddress = victim) -> [UInt8] {
        FrameBuilder.tcp(from: source, 40001, to: destination, port, flags: .syn, link: .ethernet(vlanTags: []))
    }

    static func program(_ root: TemporaryPinRoot, threshold: Int = 3, perMinute: Int = 120) throws -> XDPProgram {
        let enforcement = try #require(
            KernelEnforcement(
                rule: ScanRule(portThreshold: threshold, window: .seconds(60)),
                policy: BlockPolicy(ttl: .seconds(600), maxBlocksPerMinute: perMinute)
            )
        )
        return try XDPProgram(pinRoot: root.path, enforcement: enforcement)
    }

    /// Sends `frame` once and returns the verdict and the decision its record carries (`nil`: no record).
    static func send(_ program: XDPProgram, _ frame: [UInt8]) throws -> (XDPProgram.Verdict, KernelDecision??) {
        let verdict = try program.testRun(frame)
        var records: [XDPRecord] = []
        try program.poll(timeout: .zero) { records.append($0) }
        return (verdict, records.last.map(\.kernelDecision))
    }

    @Test(arguments: [1, 3, 7, 32])
    func theSYNThatCrossesTheThresholdIsDroppedAndItsSourceBlocked(threshold: Int) throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try Self.program(root, threshold: threshold)
        let scanner = IPAddress("198.51.100.56")!
        for port in 1...UInt16(threshold) {
            let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: port))
            #expect(verdict == .pass)
            #expect(decision == .some(nil), "port \(port) is under the threshold")
            // A retransmission reaches the same port again: still under.
            #expect(try Self.send(program, Self.syn(scanner, to: port)).0 == .pass)
        }
        let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: 1000))
        #expect(verdict == .drop)
        #expect(decision == .some(.blocked))
        // Every later packet from the scanner is dropped, to any port; another source is not.
        #expect(try program.testRun(Self.syn(scanner, to: 1)) == .drop)
        #expect(try program.testRun(Self.syn(IPAddress("198.51.100.20")!, to: 80)) == .pass)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        let entry = try #require(try maps.blockEntries().first)
        #expect(entry.prefix == IPPrefix(host: scanner))
        #expect(entry.reason == .portScan)
        #expect(entry.expires != nil)
        let statistics = try program.scanStatistics()
        #expect(statistics.scans == 1 && statistics.blocks == 1)
        // User space takes the block over with its exact times, as BlockController.adopt does: still dropped.
        let now = Timestamp.now()
        let adopted = BlockEntry(prefix: IPPrefix(host: scanner), reason: .portScan, since: now, expires: now + .seconds(600))
        #expect(try maps.block(adopted))
        #expect(try program.testRun(Self.syn(scanner, to: 443)) == .drop)
        #expect(try maps.blockEntries().count == 1)
    }

    /// A scanner spreading its ports over the host's addresses: under the rule per address; blocked at the
    /// fourth distinct port when the host counts as one (`one_destination`), as in user space.
    @Test(arguments: DestinationUnit.allCases)
    func portsSpreadOverTheHostsAddresses(unit: DestinationUnit) throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let enforcement = try #require(
            KernelEnforcement(rule: ScanRule(portThreshold: 3, destinationUnit: unit), policy: BlockPolicy())
        )
        let program = try XDPProgram(pinRoot: root.path, enforcement: enforcement)
        let scanner = IPAddress("198.51.100.57")!, other = IPAddress("203.0.113.6")!
        let syns = [Self.syn(scanner, to: 1), Self.syn(scanner, to: 2), Self.syn(scanner, to: 3, destination: other),
                    Self.syn(scanner, to: 2, destination: other)]
        for frame in syns { #expect(try Self.send(program, frame).1 == .some(nil)) }
        let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: 4, destination: other))
        #expect(verdict == (unit == .host ? .drop : .pass))
        #expect(decision == .some(unit == .host ? .blocked : nil))
    }

    /// A mail client reaching 25, 465, 587, 993 and 995 within a minute is no scan where those ports are ignored,
    /// in the kernel exactly as in user space.
    @Test func ignoredPortsNeverCount() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        var rule = ScanRule(portThreshold: 3)
        rule.ignoredPorts = PortSet([25...25, 465...465, 587...587, 993...995])
        let enforcement = try #require(KernelEnforcement(rule: rule, policy: BlockPolicy()))
        let program = try XDPProgram(pinRoot: root.path, enforcement: enforcement)
        let client = IPAddress("198.51.100.25")!
        for port: UInt16 in [25, 465, 587, 993, 995, 1, 2, 3] {
            let (verdict, decision) = try Self.send(program, Self.syn(client, to: port))
            #expect(verdict == .pass)
            #expect(decision == .some(nil), "port \(port)")
        }
        // The fourth counted port crosses the threshold.
        #expect(try Self.send(program, Self.syn(client, to: 4)).1 == .some(.blocked))
    }

    @Test func anAllowlistedScannerIsReportedAndNeverDropped() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try Self.program(root)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        let scanner = IPAddress("198.51.100.9")!
        try maps.syncAllowlist(Allowlist([.init(prefix: IPPrefix("198.51.100.0/24")!, reason: .configured)]))
        var decisions: [KernelDecision?] = []
        for port in UInt16(1)...10 {
            let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: port))
            #expect(verdict == .pass)
            decisions.append(decision ?? nil)
        }
        #expect(decisions.compactMap { $0 } == [.refusedAllowlisted], "reported once, at the fourth port")
        #expect(try maps.blockEntries().isEmpty)
    }

    /// A neighbour inside the host's own /64 (lateral movement on a LAN) is counted and blocked as its /128: the
    /// /64 holds the host's address, so it is a shared unit, and blocking it would cut the host off. Another
    /// neighbour of the same /64 is counted apart and still served; the host's own address is never blocked.
    @Test func aNeighbourInsideTheHostsOwnUnitIsBlockedAsItself() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try Self.program(root)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        let allowlist = Allowlist([.init(prefix: IPPrefix("2001:db8:1::5/128")!, reason: .hostAddress)])
        try maps.syncAllowlist(allowlist)
        try maps.syncAllowedUnits(allowlist, ipv6UnitLength: 64)
        let neighbour = IPAddress("2001:db8:1::77")!
        let other = IPAddress("2001:db8:1::78")!
        let victim6 = IPAddress("2001:db8:1::5")!
        // Three ports each from two neighbours: counted apart, so no scan.
        for port in UInt16(1)...3 {
            #expect(try Self.send(program, Self.syn(neighbour, to: port, destination: victim6)) == (.pass, .some(nil)))
            #expect(try Self.send(program, Self.syn(other, to: port + 10, destination: victim6)) == (.pass, .some(nil)))
        }
        let (verdict, decision) = try Self.send(program, Self.syn(neighbour, to: 4, destination: victim6))
        #expect(verdict == .drop)
        #expect(decision == .some(.blocked))
        #expect(try maps.blockEntries().map(\.prefix) == [IPPrefix(host: neighbour)])
        // The other neighbour is served (a port it reached before: still 3 of them).
        #expect(try program.testRun(Self.syn(other, to: 11, destination: victim6)) == .pass)
        // The host's own address, scanning itself across the wire, stays allowlisted.
        var last: KernelDecision??
        for port in UInt16(1)...4 { last = try Self.send(program, Self.syn(victim6, to: port, destination: victim6)).1 }
        #expect(last == .some(.refusedAllowlisted))
        #expect(try maps.blockEntries().count == 1)
    }

    @Test func anIPv6ScannerRotatingInsideItsUnitIsCountedAsOneSource() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try Self.program(root)
        let victim6 = IPAddress("2001:db8:1::5")!
        var verdicts: [XDPProgram.Verdict] = []
        for port in UInt16(1)...4 {
            // A new address of the same /64 for every port.
            let source = IPAddress("2001:db8:bad::\(String(port, radix: 16))")!
            verdicts.append(try Self.send(program, Self.syn(source, to: port, destination: victim6)).0)
        }
        #expect(verdicts == [.pass, .pass, .pass, .drop])
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        #expect(try maps.blockEntries().map(\.prefix) == [IPPrefix("2001:db8:bad::/64")!])
    }

    /// Forged scans from many sources get at most the per-minute budget of blocks; a refused scanner's later SYNs
    /// keep retrying (quietly) rather than being forgotten.
    @Test func theBudgetHoldsAndARefusedScannerIsRetried() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let program = try Self.program(root, perMinute: 3)
        var blocked = 0
        var refused = 0
        for index in 1...10 {
            let source = IPAddress("198.51.100.\(index)")!
            for port in UInt16(1)...4 {
                let (_, decision) = try Self.send(program, Self.syn(source, to: port))
                if decision == .some(.blocked) { blocked += 1 }
                if decision == .some(.refusedRateLimited) { refused += 1 }
            }
        }
        #expect(blocked == 3)
        #expect(refused == 7)
        // A refused scanner's later SYNs retry the block: still refused within the minute, and quietly (no event
        // decision), but never forgotten; they pass meanwhile.
        let (verdict, decision) = try Self.send(program, Self.syn(IPAddress("198.51.100.10")!, to: 5))
        #expect(verdict == .pass)
        #expect(decision == .some(nil))
        #expect(try program.scanStatistics().refusedRateLimited == 8)
    }

    /// A scanner refused because the blocklist was full is blocked at its next SYN once there is room: it cannot
    /// wait for the refusal and then scan the rest unblocked.
    @Test func aScannerRefusedForAFullBlocklistIsBlockedOnceThereIsRoom() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let enforcement = try #require(
            KernelEnforcement(rule: ScanRule(portThreshold: 3), policy: BlockPolicy(maxBlocked: 5))
        )
        let program = try XDPProgram(pinRoot: root.path, enforcement: enforcement)
        let maps = try PinnedBlockMaps(pinRoot: root.path, createIfMissing: false)
        try maps.setBlockedCount(5)
        let scanner = IPAddress("198.51.100.56")!
        var decisions: [KernelDecision] = []
        for port in UInt16(1)...6 {
            let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: port))
            #expect(verdict == .pass)
            if let decision = decision ?? nil { decisions.append(decision) }
        }
        #expect(decisions == [.refusedBlocklistFull])
        try maps.setBlockedCount(4)
        let (verdict, decision) = try Self.send(program, Self.syn(scanner, to: 7))
        #expect(verdict == .drop)
        #expect(decision == .some(.blockedLater))
        #expect(try maps.blockEntries().map(\.prefix) == [IPPrefix(host: scanner)])
    }
}
