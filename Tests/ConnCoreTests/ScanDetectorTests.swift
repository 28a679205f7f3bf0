import ConnCore
import Testing

@Suite("Port-scan detector")
struct ScanDetectorTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let victim = IPAddress("203.0.113.5")!

    func syn(_ seconds: Double, port: UInt16, from source: IPAddress = attacker, to destination: IPAddress = victim) -> ConnectionAttempt {
        ConnectionAttempt(
            time: Timestamp(nanoseconds: 1_000_000_000_000 + Int64(seconds * 1e9)),
            source: source, sourcePort: 40000, destination: destination, destinationPort: port
        )
    }

    /// Feeds (time, port) SYNs and returns the scans reported.
    func scans(_ syns: [(Double, UInt16)], rule: ScanRule = ScanRule()) -> [PortScan] {
        let detector = SlidingWindowScanDetector(rule: rule)
        return syns.compactMap { detector.observe(syn($0.0, port: $0.1)) }
    }

    @Test("Ports spread over a host's addresses: under the rule per address, a scan when the host counts as one")
    func portsSpreadOverTheHostsAddresses() {
        let other = IPAddress("203.0.113.6")!
        let syns = [syn(0, port: 1), syn(1, port: 2), syn(2, port: 3, to: other), syn(3, port: 2, to: other),
                    syn(4, port: 4, to: other), syn(5, port: 5)]
        let perAddress = SlidingWindowScanDetector(rule: ScanRule())
        #expect(syns.compactMap { perAddress.observe($0) }.isEmpty)
        let perHost = SlidingWindowScanDetector(rule: ScanRule(destinationUnit: .host))
        let found = syns.compactMap { perHost.observe($0) }
        // Port 2 on both addresses is one port; the fourth distinct port (4) crosses, and names its destination.
        #expect(found.count == 1)
        #expect(found.first?.ports == [1, 2, 3, 4])
        #expect(found.first?.destination == other)
        #expect(found.first?.time == syn(4, port: 4).time)
    }

    @Test("Exactly 3 ports is no scan")
    func threePorts() {
        #expect(scans([(0, 80), (1, 81), (2, 82)]).isEmpty)
    }

    @Test("4 ports inside 59 s is a scan, reported at the 4th with ports ascending")
    func fourPortsIn59Seconds() {
        let found = scans([(0, 83), (20, 80), (40, 82), (59, 81)])
        #expect(found.count == 1)
        #expect(found.first?.ports == [80, 81, 82, 83])
        #expect(found.first?.time == syn(59, port: 81).time)
    }

    @Test("4 ports spread over 70 s is not a scan")
    func fourPortsOver70Seconds() {
        #expect(scans([(0, 80), (23, 81), (46, 82), (70, 83)]).isEmpty)
    }

    @Test("A slow scan of one port every 25 s is not a scan")
    func slowScan() {
        let syns = (0..<40).map { (Double($0) * 25, UInt16(1000 + $0)) }
        #expect(scans(syns).isEmpty)
    }

    @Test("Repeats of one port do not count")
    func repeatsDoNotCount() {
        let syns = (0..<100).map { (Double($0) * 0.1, UInt16(80 + $0 % 3)) }
        #expect(scans(syns).isEmpty)
    }

    @Test("The window is (t - 60 s, t]: a port reached exactly 60 s earlier has left it")
    func windowEdge() {
        #expect(scans([(0, 80), (1, 81), (2, 82), (60, 83)]).isEmpty)
        #expect(scans([(0, 80), (1, 81), (2, 82), (59.999999, 83)]).count == 1)
    }

    @Test("A repeat refreshes its port's time in the window")
    func repeatRefreshes() {
        // Port 80 first seen at 0 and again at 50: at 100 it is still within the window.
        #expect(scans([(0, 80), (50, 80), (55, 81), (90, 82), (100, 83)]).count == 1)
    }

    @Test("A pair is reported once per active spell, and again only after a whole quiet window")
    func reportOnce() {
        var syns = (0..<20).map { (Double($0), UInt16(1 + $0)) }
        #expect(scans(syns).count == 1)
        // Still active every 30 s: no second report.
        syns += (0..<5).map { (20 + Double($0) * 30, UInt16(100 + $0)) }
        #expect(scans(syns).count == 1)
        // Quiet for 60 s, then 4 new ports: reported again.
        let last = syns.last!.0
        syns += (1...4).map { (last + 60 + Double($0), UInt16(200 + $0)) }
        let found = scans(syns)
        #expect(found.count == 2)
        #expect(found.last?.ports == [201, 202, 203, 204])
    }

    @Test("Quiet for just under a window keeps the report suppressed")
    func almostQuiet() {
        var syns: [(Double, UInt16)] = (0..<4).map { (Double($0), UInt16(1 + $0)) }
        for index in 0..<4 { syns.append((62.5 + Double(index) * 0.1, UInt16(50 + index))) }
        #expect(scans(syns).count == 1)
    }

    @Test("Pairs are independent: ports to different destinations do not add up")
    func pairsIndependent() {
        let detector = SlidingWindowScanDetector()
        var found: [PortScan] = []
        for (index, last) in [1, 2, 3, 4, 5, 6].enumerated() {
            let destination = IPAddress(ipv4: 0xCB00_7100 | UInt32(last))
            found += [80, 81, 82].compactMap { detector.observe(syn(Double(index), port: $0, to: destination)) }
        }
        #expect(found.isEmpty)
        #expect(detector.trackedPairs == 6)
    }

    @Test("Thresholds and windows are configurable", arguments: [1, 3, 10])
    func configurable(threshold: Int) {
        let rule = ScanRule(portThreshold: threshold, window: .seconds(5))
        let atThreshold = (0..<threshold).map { (Double($0) * 0.1, UInt16(1 + $0)) }
        #expect(scans(atThreshold, rule: rule).isEmpty)
        let over = (0...threshold).map { (Double($0) * 0.1, UInt16(1 + $0)) }
        #expect(scans(over, rule: rule).first?.ports.count == threshold + 1)
        let spread = (0...threshold).map { (Double($0) * 5, UInt16(1 + $0)) }
        #expect(scans(spread, rule: rule).isEmpty)
    }

    @Test("The cap on pairs evicts the least recently active pair, counting it")
    func eviction() {
        let detector = SlidingWindowScanDetector(rule: ScanRule(maxTrackedPairs: 2))
        let sources = (1...3).map { IPAddress(ipv4: 0xC633_6400 | UInt32($0)) }
        // Source 1 reaches 3 ports, then sources 2 and 3 arrive; source 1 is evicted and starts over.
        for port: UInt16 in [1, 2, 3] { _ = detector.observe(syn(0, port: port, from: sources[0])) }
        _ = detector.observe(syn(1, port: 1, from: sources[1]))
        _ = detector.observe(syn(2, port: 1, from: sources[2]))
        #expect(detector.evictedPairs == 1)
        #expect(detector.trackedPairs == 2)
        #expect(detector.observe(syn(3, port: 4, from: sources[0])) == nil)
        // Touching source 3 keeps it; source 2 is now the oldest and goes.
        _ = detector.observe(syn(4, port: 2, from: sources[2]))
        _ = detector.observe(syn(5, port: 5, from: sources[0]))
        #expect(detector.evictedPairs == 2)
    }

    @Test("Idle pairs expire, so memory follows activity")
    func expiry() {
        let detector = SlidingWindowScanDetector()
        for index in 0..<1000 {
            _ = detector.observe(syn(Double(index) * 0.01, port: 80, from: IPAddress(ipv4: UInt32(0xC612_0000 + index))))
        }
        #expect(detector.trackedPairs == 1000)
        detector.expire(now: syn(200, port: 1).time)
        #expect(detector.trackedPairs == 0)
        #expect(detector.evictedPairs == 0)
    }

    @Test("Many pairs under a small cap stay bounded and still detect")
    func churn() {
        let detector = SlidingWindowScanDetector(rule: ScanRule(maxTrackedPairs: 100))
        var found = 0
        for index in 0..<50_000 {
            let source = IPAddress(ipv4: UInt32(0xC612_0000 + index % 5000))
            if detector.observe(syn(Double(index) * 0.0001, port: UInt16(index % 7), from: source)) != nil { found += 1 }
            if index % 1000 == 0 {
                // A real scanner among the churn.
                for port: UInt16 in 1000...1004 {
                    if detector.observe(syn(Double(index) * 0.0001, port: port, from: Self.attacker)) != nil { found += 1 }
                }
            }
        }
        #expect(detector.trackedPairs <= 100)
        #expect(found >= 1)
    }
}

@Suite("Retransmissions")
struct RetransmitFilterTests {
    func attempt(_ seconds: Double, sourcePort: UInt16 = 5973) -> ConnectionAttempt {
        ConnectionAttempt(
            time: Timestamp(nanoseconds: Int64(seconds * 1e9)),
            source: IPAddress("198.51.100.56")!, sourcePort: sourcePort,
            destination: IPAddress("203.0.113.5")!, destinationPort: 80
        )
    }

    @Test("The same 4-tuple within 60 s is a retransmission; each retransmission extends the window")
    func retransmissions() {
        let filter = RetransmitFilter()
        let verdicts = [
            attempt(0), attempt(1), attempt(3),
            attempt(62),  // 59 s after the previous one
            attempt(122),  // 60 s after the previous one
            attempt(122, sourcePort: 5974),
        ].map { filter.isNewConnection($0) }
        #expect(verdicts == [true, false, false, false, true, true])
    }

    @Test("A full generation reports further 4-tuples as new without remembering them, and counts them")
    func cap() {
        let filter = RetransmitFilter(capacity: 2)
        let verdicts = [
            attempt(0, sourcePort: 1), attempt(0, sourcePort: 2), attempt(0, sourcePort: 3),
            attempt(1, sourcePort: 1), attempt(1, sourcePort: 3),
        ].map { filter.isNewConnection($0) }
        #expect(verdicts == [true, true, true, false, true])
        #expect(filter.evictions == 2)
    }

    @Test("Generations keep exactly what the window needs", arguments: [0.5, 59.9, 60.0, 60.1, 119.9, 120.0, 130.0])
    func generations(gap: Double) {
        let filter = RetransmitFilter()
        // Traffic from other tuples moves the generations along in between.
        #expect(filter.isNewConnection(attempt(10)))
        for tick in stride(from: 10.0, through: 10 + gap, by: 7) { _ = filter.isNewConnection(attempt(tick, sourcePort: 9)) }
        #expect(filter.isNewConnection(attempt(10 + gap)) == (gap >= 60))
    }

    @Test("Memory follows traffic: idle generations are dropped")
    func idleGenerationsDropped() {
        let filter = RetransmitFilter()
        for port in 0..<1000 { _ = filter.isNewConnection(attempt(0, sourcePort: UInt16(port))) }
        #expect(filter.count == 1000)
        filter.expire(now: Int64(121e9))
        #expect(filter.count == 0)
    }
}
