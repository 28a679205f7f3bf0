import ConnCapture
import ConnCore
import ConnTesting
import Testing

@Suite("Replay of capture files")
struct PcapFileSourceTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let client = IPAddress("198.51.100.7")!
    static let victim = IPAddress("203.0.113.5")!
    static let attacker6 = IPAddress("2001:db8:1::56")!
    static let victim6 = IPAddress("2001:db8::5")!
    static let start = Timestamp(seconds: 1_619_623_685, microseconds: 250)

    /// A small scene: a client's three connections (one retransmitted), an IPv4 and an IPv6 scan, and noise.
    static func scene(link: LinkLayer, format: PcapWriter.Format) -> [UInt8] {
        var writer = PcapWriter(linkType: link.linkType, format: format)
        var time = start
        func add(_ frame: [UInt8]) {
            writer.write(frame, at: time)
            time = time + .milliseconds(100)
        }
        for port: UInt16 in [22, 80, 443] { add(FrameBuilder.tcp(from: client, 40000 + port, to: victim, port, link: link)) }
        add(FrameBuilder.tcp(from: client, 40022, to: victim, 22, link: link))  // retransmission
        add(FrameBuilder.tcp(from: victim, 22, to: client, 40022, flags: [.syn, .ack], link: link))
        add(FrameBuilder.udp(from: client, 53, to: victim, 53, link: link))
        for port: UInt16 in 1...6 { add(FrameBuilder.tcp(from: attacker, 55555, to: victim, port, link: link)) }
        for port: UInt16 in [8080, 8081, 8082, 8083] {
            add(FrameBuilder.tcp(from: attacker6, 55555, to: victim6, port, link: link, ipv6Extensions: [.hopByHop()]))
        }
        return writer.bytes
    }

    func replay(_ bytes: [UInt8]) throws -> (events: [ConnEvent], statistics: ConnectionPipeline.Statistics) {
        let file = TemporaryFile(bytes)
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: sink)
        try PcapFileSource(path: file.path).run(into: pipeline)
        return (sink.events, pipeline.statistics)
    }

    static let shapes: [(LinkLayer, PcapWriter.Format)] = [
        (.ethernet(), .pcap(nanosecond: false)), (.ethernet(), .pcap(nanosecond: true)), (.ethernet(), .pcapng),
        (.ethernet(vlanTags: [VLANTag(id: 7)]), .pcap(nanosecond: false)), (.linuxCooked, .pcap(nanosecond: false)),
        (.linuxCooked2, .pcapng), (.rawIP, .pcap(nanosecond: false)),
    ]

    @Test("Every container and link type replays to the same events, with the file's timestamps", arguments: shapes)
    func replayShapes(link: LinkLayer, format: PcapWriter.Format) throws {
        let (events, statistics) = try replay(Self.scene(link: link, format: format))
        let connections = events.compactMap { if case .newConnection(let attempt) = $0 { attempt } else { nil } }
        #expect(connections.count == 13)
        #expect(connections.first?.time == Self.start)
        #expect(connections.first?.source == Self.client)
        let scans = events.compactMap { if case .portScan(let scan) = $0 { scan } else { nil } }
        #expect(scans.map(\.source) == [Self.attacker, Self.attacker6])
        #expect(scans.map(\.ports) == [[1, 2, 3, 4], [8080, 8081, 8082, 8083]])
        // The 4th attacker SYN is the 10th frame: 9 intervals of 100 ms after the start.
        #expect(scans.first?.time == Self.start + .milliseconds(900))
        #expect(statistics.frames == 16)
        #expect(statistics.malformedFrames == 0)
    }

    @Test("Malformed frames in a capture are skipped and counted")
    func malformedFrames() throws {
        var writer = PcapWriter(linkType: .ethernet)
        writer.write([1, 2, 3], at: Self.start)
        writer.write(Array(FrameBuilder.tcp(from: Self.client, 1, to: Self.victim, 2).prefix(40)), at: Self.start)
        writer.write(FrameBuilder.tcp(from: Self.client, 1, to: Self.victim, 2), at: Self.start)
        let (events, statistics) = try replay(writer.bytes)
        #expect(events.count == 1)
        #expect(statistics.malformedFrames == 2)
    }

    @Test("A capture cut off mid-record delivers its complete records, then fails with a reason")
    func truncatedCapture() throws {
        let bytes = Self.scene(link: .ethernet(), format: .pcap(nanosecond: false))
        let cut = Array(bytes.dropLast(30))
        let file = TemporaryFile(cut)
        let sink = CollectingEventSink()
        let pipeline = ConnectionPipeline(events: sink)
        let error = #expect(throws: ConntrackrError.self) { try PcapFileSource(path: file.path).run(into: pipeline) }
        #expect(error?.code == .truncatedCapture)
        #expect(error?.message.contains(file.path) == true)
        // Everything but the last IPv6 SYN: 12 new connections and the IPv4 scan.
        #expect(sink.events.count == 13)
    }

    @Test("Unreadable inputs fail with a one-line reason", arguments: [
        ("missing", nil as [UInt8]?), ("text", Array("hello, this is not a capture\n".utf8)), ("empty", []),
        ("short header", [0xD4, 0xC3, 0xB2, 0xA1, 2, 0]),
    ])
    func unreadable(name: String, bytes: [UInt8]?) {
        let file = bytes.map { TemporaryFile($0) }
        let path = file?.path ?? "/nonexistent/conntrackr-missing.pcap"
        let error = #expect(throws: ConntrackrError.self) {
            try PcapFileSource(path: path).run(into: ConnectionPipeline(events: CollectingEventSink()))
        }
        #expect(error?.code == .unreadableCapture)
        #expect(error?.message.contains("\n") == false)
        #expect(error?.message.contains(path) == true)
    }

    /// Crafted pcapng interfaces and timestamps: libpcap adds `if_tsoffset` to every record time unchecked, and
    /// divides the raw 64-bit timestamp by the resolution, so a file can make it report any `tv_sec`.
    static let craftedTimes: [(name: String, resolution: UInt8, offset: Int64, units: UInt64)] = [
        ("if_tsoffset Int64.min", 6, .min, 1_619_623_685_000_250),
        ("if_tsoffset Int64.max", 6, .max, 1_619_623_685_000_250),
        ("if_tsoffset before the epoch", 9, -10_000_000_000_000, 0),
        ("if_tsoffset just past the clamp", 9, 7_258_118_400, 1),
        ("largest timestamp in seconds", 0, 0, .max),
        ("largest timestamp in nanoseconds with an offset", 9, 9_000_000_000, .max),
        ("largest timestamp in 2^-1 seconds", 0x81, .max / 2, .max),
    ]

    @Test("No record time from a crafted pcapng traps: it is clamped into the record time range",
        arguments: craftedTimes.indices)
    func craftedRecordTimes(index: Int) throws {
        let crafted = Self.craftedTimes[index]
        var writer = PcapWriter(
            linkType: .ethernet,
            format: .pcapngInterface(timeResolution: crafted.resolution, timeOffsetSeconds: crafted.offset)
        )
        for port: UInt16 in 1...6 {
            writer.write(FrameBuilder.tcp(from: Self.attacker, 55555, to: Self.victim, port), timestampUnits: crafted.units)
        }
        let (events, statistics) = try replay(writer.bytes)
        #expect(statistics.frames == 6)
        #expect(statistics.malformedFrames == 0)
        let times = events.compactMap { event -> Timestamp? in
            switch event {
            case .newConnection(let attempt): attempt.time
            case .portScan(let scan): scan.time
            default: nil
            }
        }
        #expect(times.count == 7, "6 connections and a scan")
        #expect(times.allSatisfy { Timestamp.recordTimeRange.contains($0) })
        // The times print (the event formatter's path), whatever they are.
        for time in times { #expect(!time.description.isEmpty) }
    }

    @Test("if_tsoffset is honoured within the record time range")
    func timeOffsetHonoured() throws {
        var writer = PcapWriter(
            linkType: .ethernet,
            format: .pcapngInterface(timeResolution: 6, timeOffsetSeconds: 1_000_000_000)
        )
        writer.write(FrameBuilder.tcp(from: Self.client, 40000, to: Self.victim, 22), timestampUnits: 2_500_000)
        let (events, _) = try replay(writer.bytes)
        let connections = events.compactMap { if case .newConnection(let attempt) = $0 { attempt } else { nil } }
        #expect(connections.map(\.time) == [Timestamp(seconds: 1_000_000_002, microseconds: 500_000)])
    }

    @Test("An unknown link type is refused with its number")
    func unknownLinkType() throws {
        var bytes = PcapWriter(linkType: .ethernet).bytes
        bytes[20] = 147  // LINKTYPE_USER0
        let file = TemporaryFile(bytes)
        let error = #expect(throws: ConntrackrError.self) {
            try PcapFileSource(path: file.path).run(into: ConnectionPipeline(events: CollectingEventSink()))
        }
        #expect(error?.code == .unsupportedLinkType)
        #expect(error?.message.contains("147") == true)
    }
}

@Suite("Kernel capture filter")
struct SYNFilterTests {
    @Test("The filter covers IPv4, IPv6 and VLAN, and restricts destinations when asked")
    func expression() {
        let open = SYNFilter.expression(destinations: nil)
        #expect(open.contains("(tcp[13] & 0x12) == 0x02"))
        #expect(open.contains("ip6[6] == 44"))
        #expect(open.contains("vlan and vlan"))
        let inbound = SYNFilter.expression(destinations: [IPAddress("203.0.113.5")!, IPAddress("2001:db8::5")!])
        #expect(inbound.contains("dst host 203.0.113.5"))
        #expect(inbound.contains("dst host 2001:db8::5"))
        let v4Only = SYNFilter.expression(destinations: [IPAddress("203.0.113.5")!])
        #expect(!v4Only.contains("ip6"))
    }
}
