import ConnCore
import ConnTesting
import Testing

/// What a busy host needs (issue 16, item 5): ports that never count toward a scan, and output limited to chosen
/// kinds of event while the counts stay whole.
@Suite("Ignored ports and event selection")
struct BusyHostTests {
    static let client = address("198.51.100.7")
    static let attacker = address("198.51.100.56")
    static let victim = address("203.0.113.5")
    static let mailPorts: [UInt16] = [25, 465, 587, 993, 995]

    func attempt(_ seconds: Int64, _ port: UInt16, from source: IPAddress = attacker, sourcePort: UInt16 = 40000)
        -> ConnectionAttempt
    {
        ConnectionAttempt(
            time: referenceTime + .seconds(seconds), source: source, sourcePort: sourcePort, destination: Self.victim,
            destinationPort: port
        )
    }

    // MARK: PortSet

    @Test("Port lists parse ports and ranges, and print back as ranges", arguments: [
        (["25", "465", "587", "993", "995"], "25,465,587,993,995", 5),
        (["8000-8100"], "8000-8100", 101),
        ([], "", 0),
        (["0", "65535", "1-2"], "0-2,65535", 4),
        (["80", "81", "79-79"], "79-81", 3),
        ([" 443 ", "0-65535"], "0-65535", 65536),
    ])
    func parsing(items: [String], printed: String, count: Int) throws {
        let set = try PortSet(parsing: items)
        #expect(set.description == printed)
        #expect(set.count == count)
        #expect(set.isEmpty == (count == 0))
        #expect(try PortSet(parsing: printed.split(separator: ",").map(String.init)) == set)
    }

    @Test("Bad port lists are refused with the item", arguments: ["65536", "-1", "http", "8100-8000", "1-", "1-2-3", ""])
    func badItems(item: String) {
        let error = #expect(throws: ConntrackrError.self) { try PortSet(parsing: [item]) }
        #expect(error?.message.contains(item.debugDescription) == true, "\(error?.message ?? "")")
    }

    @Test("The bitmap the kernel side takes: 1024 words, port p at bit p % 64 of word p / 64")
    func bitmap() {
        let set = PortSet([25...25, 64...65, 65535...65535])
        let words = set.bitmap
        #expect(words.count == PortSet.wordCount)
        #expect(words[0] == 1 << 25)
        #expect(words[1] == 0b11)
        #expect(words[1023] == 1 << 63)
        #expect(words.reduce(0) { $0 + $1.nonzeroBitCount } == 4)
        #expect(PortSet().bitmap == Array(repeating: 0, count: PortSet.wordCount))
        #expect(PortSet() == PortSet([] as [ClosedRange<UInt16>]) && PortSet().isEmpty)
        #expect(set.contains(65) && !set.contains(66) && !PortSet().contains(25))
    }

    // MARK: The detector

    @Test("An ignored port never counts: a mail client reaching 25, 465, 587, 993 and 995 is no scan")
    func mailClientIsNoScan() {
        let detector = SlidingWindowScanDetector(rule: ScanRule(ignoredPorts: PortSet(Self.mailPorts.map { $0...$0 })))
        for (index, port) in Self.mailPorts.enumerated() {
            #expect(detector.observe(attempt(Int64(index), port)) == nil)
        }
        #expect(detector.trackedPairs == 0, "ignored SYNs leave no state behind")
        // Without the setting the same client is a scan.
        let plain = SlidingWindowScanDetector(rule: ScanRule())
        #expect(Self.mailPorts.enumerated().compactMap { plain.observe(attempt(Int64($0), $1)) }.count == 1)
    }

    @Test("Ignored ports are neither counted nor listed in a scan of other ports")
    func ignoredNotListed() {
        let detector = SlidingWindowScanDetector(rule: ScanRule(ignoredPorts: PortSet([25...25, 8000...8100])))
        let ports: [UInt16] = [25, 8000, 22, 8050, 80, 8100, 443, 25, 3306]
        let scans = ports.enumerated().compactMap { detector.observe(attempt(Int64($0), $1)) }
        #expect(scans.map(\.ports) == [[22, 80, 443, 3306]])
        #expect(scans.first?.time == attempt(8, 3306).time)
    }

    @Test("Every ignored-port SYN of a random stream is invisible to the detector", arguments: [1, 2, 3] as [UInt64])
    func randomStreamsAgree(seed: UInt64) {
        // The detector with ignored ports sees the same as one without them fed only the other SYNs.
        var random = SplitMix64(seed: seed)
        let ignored = PortSet([20...30, 443...443, 60000...65535])
        let filtering = SlidingWindowScanDetector(rule: ScanRule(maxTrackedPairs: 64, ignoredPorts: ignored))
        let reference = SlidingWindowScanDetector(rule: ScanRule(maxTrackedPairs: 64))
        var time = referenceTime
        for _ in 0..<20_000 {
            time = time + .milliseconds(Int64(random.next() % 3000))
            let port = UInt16(truncatingIfNeeded: random.next() % 3 == 0 ? random.next() % 40 : random.next())
            let source = IPAddress(ipv4: 0xc633_6400 | UInt32(random.next() % 8))
            let syn = ConnectionAttempt(
                time: time, source: source, sourcePort: 1, destination: Self.victim, destinationPort: port
            )
            let found = filtering.observe(syn)
            let expected = ignored.contains(port) ? nil : reference.observe(syn)
            #expect(found == expected)
            if let found { #expect(!found.ports.contains { ignored.contains($0) }) }
        }
    }

    // MARK: Event selection

    @Test("Only chosen kinds are written, while the pipeline and metrics count every event")
    func selection() {
        let written = CollectingEventSink()
        let metrics = RecordingMetricsSink()
        let controller = BlockController(
            blocker: InMemoryBlocker(capacity: 0), policy: BlockPolicy(), allowlist: Allowlist(),
            metrics: DiscardingMetricsSink()
        )
        let pipeline = ConnectionPipeline(
            events: FilteringEventSink.wrapping(written, kinds: [.portScan, .blocked]),
            blocking: controller, metrics: metrics
        )
        for port: UInt16 in 1...5 { pipeline.process(attempt(0, port)) }
        pipeline.process(attempt(0, 443, from: Self.client))
        pipeline.finish()
        #expect(written.events.map(\.kind) == [.portScan])
        #expect(pipeline.statistics.newConnections == 6)
        #expect(metrics[.newConnections] == 6)
        #expect(metrics[.portScans] == 1)
    }

    @Test("Choosing every kind wraps nothing; each kind passes exactly its own events", arguments: ConnEvent.Kind.allCases)
    func eachKind(kind: ConnEvent.Kind) {
        let sink = CollectingEventSink()
        #expect(FilteringEventSink.wrapping(sink, kinds: Set(ConnEvent.Kind.allCases)) === sink)
        let filter = FilteringEventSink(kinds: [kind], wrapping: sink)
        let prefix = IPPrefix(host: Self.attacker)
        let all: [ConnEvent] = [
            .newConnection(attempt(0, 22)),
            .portScan(PortScan(time: referenceTime, source: Self.attacker, destination: Self.victim, ports: [1, 2, 3, 4])),
            .blocked(BlockEntry(prefix: prefix, reason: .portScan, since: referenceTime, expires: nil), at: referenceTime),
            .unblocked(prefix, reason: .expired, at: referenceTime),
            .notBlocked(Self.attacker, reason: .rateLimited, at: referenceTime),
        ]
        #expect(Set(all.map(\.kind)) == Set(ConnEvent.Kind.allCases))
        for event in all { filter.emit(event) }
        #expect(sink.events == all.filter { $0.kind == kind })
    }
}
