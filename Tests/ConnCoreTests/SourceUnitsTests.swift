import ConnCore
import ConnTesting
import Testing

/// The unit counted is the unit blocked: an IPv6 scanner is counted by its /64 (it cannot rotate out of the rule),
/// while a neighbour inside the host's own /64 is counted and blocked as itself.
@Suite struct SourceUnitsTests {
    static let hostAddress = Allowlist.Entry(prefix: prefix("2001:db8:1::5/128"), reason: .hostAddress)

    func syn(_ seconds: Int64, from source: String, to port: UInt16, destination: String = "2001:db8:1::5")
        -> ConnectionAttempt
    {
        ConnectionAttempt(
            time: referenceTime + .seconds(seconds), source: address(source), sourcePort: 40000,
            destination: address(destination), destinationPort: port
        )
    }

    @Test(arguments: [
        ("198.51.100.7", 64, "198.51.100.7/32"),
        ("2001:db8:bad::1234", 64, "2001:db8:bad::/64"),
        ("2001:db8:bad::1234", 48, "2001:db8:bad::/48"),
        ("2001:db8:bad::1234", 128, "2001:db8:bad::1234/128"),
        // Inside the host's /64: its own unit.
        ("2001:db8:1::77", 64, "2001:db8:1::77/128"),
        // A /56 holding the host's address is shared as well.
        ("2001:db8:1::77", 56, "2001:db8:1::77/128"),
        // A /48 elsewhere is not.
        ("2001:db8:2::77", 48, "2001:db8:2::/48"),
    ])
    func theUnitOfASource(source: String, length: Int, unit: String) {
        let units = SourceUnits(ipv6PrefixLength: length, allowlist: Allowlist([Self.hostAddress]))
        #expect(units.unit(of: address(source)) == prefix(unit))
    }

    @Test func aReplacedAllowlistChangesTheSharedUnits() {
        let units = SourceUnits(allowlist: Allowlist([Self.hostAddress]))
        #expect(units.unit(of: address("2001:db8:1::77")) == prefix("2001:db8:1::77"))
        units.replaceAllowlist(Allowlist())
        #expect(units.unit(of: address("2001:db8:1::77")) == prefix("2001:db8:1::/64"))
        // Loopback is always listed: ::/64 is shared.
        #expect(units.unit(of: address("::2")) == prefix("::2"))
    }

    /// When the host gains an address (a VIP, SLAAC), the allowlist takes it in place of the old host addresses,
    /// keeping every other entry, and a neighbour in its /64 becomes its own unit.
    @Test func anAddressAddedAfterStartIsAllowlistedAndSplitsItsUnit() {
        let configured = Allowlist.Entry(prefix: prefix("198.51.100.0/24"), reason: .configured)
        let before = Allowlist([Self.hostAddress, configured])
        let after = before.replacingHostAddresses(with: [address("2001:db8:7::1"), address("::1"), address("127.0.0.1")])
        #expect(after.reason(for: address("2001:db8:7::1")) == .hostAddress)
        #expect(after.reason(for: address("2001:db8:1::5")) == nil)
        #expect(after.reason(for: address("198.51.100.9")) == .configured)
        #expect(after.reason(for: address("::1")) == .loopback)
        #expect(after.entries.count == before.entries.count)
        let units = SourceUnits(allowlist: before)
        #expect(units.unit(of: address("2001:db8:7::9")) == prefix("2001:db8:7::/64"))
        units.replaceAllowlist(after)
        #expect(units.unit(of: address("2001:db8:7::9")) == prefix("2001:db8:7::9"))
        #expect(units.unit(of: address("2001:db8:1::77")) == prefix("2001:db8:1::/64"))
    }

    @Test func aScannerRotatingInsideItsUnitIsReportedOnce() {
        let detector = SlidingWindowScanDetector()
        var scans: [PortScan] = []
        // A new address of 2001:db8:bad::/64 every 3 ports, 12 ports in all.
        for port in UInt16(1)...12 {
            let source = "2001:db8:bad::\(String((port - 1) / 3 + 1, radix: 16))"
            if let scan = detector.observe(syn(Int64(port), from: source, to: port)) { scans.append(scan) }
        }
        #expect(scans.count == 1)
        #expect(scans.first?.source == address("2001:db8:bad::2"), "the address of the SYN that crossed")
        #expect(scans.first?.ports == [1, 2, 3, 4])
        #expect(detector.trackedPairs == 1)
    }

    @Test func neighboursInsideTheHostsUnitAreCountedApart() {
        let detector = SlidingWindowScanDetector(units: SourceUnits(allowlist: Allowlist([Self.hostAddress])))
        for port in UInt16(1)...3 {
            #expect(detector.observe(syn(Int64(port), from: "2001:db8:1::77", to: port)) == nil)
            #expect(detector.observe(syn(Int64(port), from: "2001:db8:1::78", to: port + 10)) == nil)
        }
        let scan = detector.observe(syn(5, from: "2001:db8:1::77", to: 4))
        #expect(scan?.ports == [1, 2, 3, 4])
        #expect(detector.trackedPairs == 2)
    }

    /// The pipeline, the detector and the controller together: a neighbour in the host's /64 scanning the host is
    /// blocked as its /128 (before, it was reported and never blocked, as its /64 holds the host's address).
    @Test func aNeighbourInsideTheHostsUnitIsBlockedAsItself() throws {
        let blocker = InMemoryBlocker()
        let controller = BlockController(
            blocker: blocker, policy: BlockPolicy(), allowlist: Allowlist([Self.hostAddress]),
            metrics: DiscardingMetricsSink()
        )
        let events = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: events, blocking: controller)
        for port in UInt16(1)...4 { pipeline.process(syn(Int64(port), from: "2001:db8:1::77", to: port)) }
        pipeline.finish()
        #expect(try controller.entries().map(\.prefix) == [prefix("2001:db8:1::77")])
        #expect(events.events.contains { if case .blocked = $0 { true } else { false } })
        // The host itself is never blocked, and its /64 neither.
        #expect(controller.handle(PortScan(time: referenceTime, source: address("2001:db8:1::5"),
            destination: address("2001:db8:1::5"), ports: [1, 2, 3, 4])).isBlocked == false)
    }
}
