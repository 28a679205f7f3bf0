import ConnCore
import ConnTesting
import Testing

@Suite("Frame parser")
struct FrameParserTests {
    static let attacker = IPAddress("198.51.100.56")!
    static let victim = IPAddress("203.0.113.5")!
    static let attacker6 = IPAddress("2001:db8:1::56")!
    static let victim6 = IPAddress("2001:db8::5")!

    func classify(_ frame: [UInt8], _ linkType: LinkType = .ethernet) -> FrameVerdict {
        frame.withUnsafeBytes { FrameParser.classify($0, linkType: linkType) }
    }

    func expectAttempt(_ verdict: FrameVerdict, from source: IPAddress, _ sport: UInt16, to destination: IPAddress, _ dport: UInt16, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(verdict == .attempt(source: source, sourcePort: sport, destination: destination, destinationPort: dport), sourceLocation: sourceLocation)
    }

    static let links: [LinkLayer] = [
        .ethernet(), .ethernet(vlanTags: [VLANTag(id: 10)]),
        .ethernet(vlanTags: [VLANTag(tpid: 0x88A8, id: 100), VLANTag(id: 10)]),
        .linuxCooked, .linuxCooked2, .rawIP,
    ]

    @Test("A SYN is an attempt on every link type, IPv4 and IPv6", arguments: links)
    func synOnEveryLink(link: LinkLayer) {
        let v4 = FrameBuilder.tcp(from: Self.attacker, 5973, to: Self.victim, 80, link: link)
        expectAttempt(classify(v4, link.linkType), from: Self.attacker, 5973, to: Self.victim, 80)
        let v6 = FrameBuilder.tcp(from: Self.attacker6, 40000, to: Self.victim6, 443, link: link)
        expectAttempt(classify(v6, link.linkType), from: Self.attacker6, 40000, to: Self.victim6, 443)
    }

    @Test("Only SYN without ACK is an attempt", arguments: [
        (TCPFlags.syn, true), ([.syn, .ack], false), (.ack, false), ([.syn, .fin], true), (.rst, false),
        ([.syn, .psh], true), ([], false),
    ] as [(TCPFlags, Bool)])
    func flags(flags: TCPFlags, isAttempt: Bool) {
        let frame = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2, flags: flags)
        if isAttempt {
            expectAttempt(classify(frame), from: Self.attacker, 1, to: Self.victim, 2)
        } else {
            #expect(classify(frame) == .other)
        }
    }

    @Test("IPv4 options are skipped using IHL")
    func ipv4Options() {
        let frame = FrameBuilder.tcp(from: Self.attacker, 7, to: Self.victim, 8, ipv4Options: [0x94, 0x04, 0, 0, 1, 1, 1, 0])
        #expect(frame[14] == 0x47)
        expectAttempt(classify(frame), from: Self.attacker, 7, to: Self.victim, 8)
    }

    @Test("Only the first IPv4 fragment carries the TCP header")
    func ipv4Fragments() {
        let first = FrameBuilder.tcp(from: Self.attacker, 7, to: Self.victim, 8, moreFragments: true)
        expectAttempt(classify(first), from: Self.attacker, 7, to: Self.victim, 8)
        let later = FrameBuilder.tcp(from: Self.attacker, 7, to: Self.victim, 8, fragmentOffset: 3)
        #expect(classify(later) == .other)
    }

    @Test("IPv6 extension headers are followed", arguments: [
        [IPv6Extension.hopByHop()], [.routing], [.destinationOptions(optionBytes: 14)], [.fragment()],
        [.authentication], [.hopByHop(), .routing, .fragment(moreFragments: true), .destinationOptions()],
    ])
    func ipv6Extensions(chain: [IPv6Extension]) {
        let frame = FrameBuilder.tcp(from: Self.attacker6, 1000, to: Self.victim6, 22, ipv6Extensions: chain)
        expectAttempt(classify(frame), from: Self.attacker6, 1000, to: Self.victim6, 22)
    }

    @Test("A later IPv6 fragment is not an attempt")
    func ipv6LaterFragment() {
        let frame = FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, ipv6Extensions: [.fragment(offset: 10)])
        #expect(classify(frame) == .other)
    }

    @Test("A SYN behind any number of IPv6 extension headers is an attempt, as Linux answers it")
    func longIPv6Chains() {
        for count in [6, 7, 12, 20, 200] {
            let chain = Array(repeating: IPv6Extension.destinationOptions(), count: count)
            let frame = FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, ipv6Extensions: chain)
            expectAttempt(classify(frame), from: Self.attacker6, 1, to: Self.victim6, 2)
            // Cut inside the chain, it is truncated: the chain ends within the captured bytes.
            #expect(classify(Array(frame.prefix(54 + 8 * (count - 1) + 1))) == .malformed(.truncated))
        }
    }

    @Test("With the XDP program's limit, a chain past 6 headers is header_chain_too_long")
    func ipv6ChainLimit() {
        let six = Array(repeating: IPv6Extension.destinationOptions(), count: FrameParser.maxIPv6ExtensionHeaders)
        let limited = { (frame: [UInt8]) in
            frame.withUnsafeBytes {
                FrameParser.classify($0, linkType: .ethernet, ipv6HeaderLimit: FrameParser.maxIPv6ExtensionHeaders)
            }
        }
        let accepted = FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, ipv6Extensions: six)
        expectAttempt(limited(accepted), from: Self.attacker6, 1, to: Self.victim6, 2)
        let tooMany = FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, ipv6Extensions: six + [.routing])
        #expect(limited(tooMany) == .malformed(.headerChainTooLong))
    }

    @Test("VLAN tags are bounded")
    func vlanBound() {
        let tags = Array(repeating: VLANTag(id: 1), count: FrameParser.maxVLANTags + 1)
        let frame = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2, link: .ethernet(vlanTags: tags))
        #expect(classify(frame) == .malformed(.headerChainTooLong))
    }

    @Test("Other protocols are not attempts and not malformed")
    func otherProtocols() {
        #expect(classify(FrameBuilder.udp(from: Self.attacker, 53, to: Self.victim, 53)) == .other)
        #expect(classify(FrameBuilder.udp(from: Self.attacker6, 53, to: Self.victim6, 53)) == .other)
        #expect(classify(FrameBuilder.arp()) == .other)
    }

    @Test("Every truncation of a valid frame is skipped as malformed, never a crash")
    func truncations() {
        let frames: [([UInt8], LinkType)] = [
            (FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2, ipv4Options: [1, 1, 1, 1]), .ethernet),
            (FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, link: .linuxCooked2, ipv6Extensions: [.hopByHop(), .fragment()]), .linuxCooked2),
            (FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2, link: .ethernet(vlanTags: [VLANTag(id: 5)])), .ethernet),
            (FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2, link: .linuxCooked), .linuxCooked),
        ]
        for (frame, linkType) in frames {
            for length in 0..<frame.count {
                let verdict = classify(Array(frame.prefix(length)), linkType)
                #expect(verdict == .malformed(.truncated), "length \(length) of \(frame.count)")
            }
        }
    }

    @Test("Impossible header fields are malformed")
    func invalidHeaders() {
        var shortIHL = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2)
        shortIHL[14] = 0x44
        #expect(classify(shortIHL) == .malformed(.invalidHeader))
        var wrongVersion = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2)
        wrongVersion[14] = 0x65
        #expect(classify(wrongVersion) == .malformed(.invalidHeader))
        var shortTotal = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2)
        shortTotal[16] = 0
        shortTotal[17] = 10
        #expect(classify(shortTotal) == .malformed(.invalidHeader))
        var shortDataOffset = FrameBuilder.tcp(from: Self.attacker, 1, to: Self.victim, 2)
        shortDataOffset[14 + 20 + 12] = 0x40
        #expect(classify(shortDataOffset) == .malformed(.invalidHeader))
        // An extension header whose length runs past the frame.
        var longExtension = FrameBuilder.tcp(from: Self.attacker6, 1, to: Self.victim6, 2, ipv6Extensions: [.hopByHop()])
        longExtension[14 + 40 + 1] = 200
        #expect(classify(longExtension) == .malformed(.truncated))
    }

    /// The IPv6 frame of a SYN from `attacker6`, with its source rewritten to the 16 bytes given.
    static func ipv6SYN(source: [UInt8], link: LinkLayer = .ethernet()) -> [UInt8] {
        var frame = FrameBuilder.tcp(from: attacker6, 40000, to: victim6, 443, link: link)
        let ip = frame.count - 40 - 20
        frame.replaceSubrange(ip + 8..<ip + 24, with: source)
        return frame
    }

    @Test("An IPv4-mapped IPv6 source is malformed, never the IPv4 host it maps", arguments: links)
    func ipv4MappedSource(link: LinkLayer) {
        let mapped: [UInt8] = Array(repeating: 0, count: 10) + [0xFF, 0xFF, 198, 51, 100, 77]
        let frame = Self.ipv6SYN(source: mapped, link: link)
        #expect(classify(frame, link.linkType) == .malformed(.ipv4MappedSource))
        // Also when it is not a SYN: the address itself is what is wrong.
        var ack = frame
        ack[ack.count - 20 + 13] = TCPFlags.ack.rawValue
        #expect(classify(ack, link.linkType) == .malformed(.ipv4MappedSource))
    }

    @Test("Addresses near the IPv4-mapped form are still IPv6 sources", arguments: [
        Array(repeating: 0, count: 10) + [0xFF, 0xFE, 198, 51, 100, 77],  // not ::ffff
        [0, 1] + Array(repeating: 0, count: 8) + [0xFF, 0xFF, 198, 51, 100, 77],  // not 80 zero bits
        Array(repeating: 0, count: 12) + [198, 51, 100, 77],  // IPv4-compatible ::a.b.c.d (deprecated, not mapped)
    ] as [[UInt8]])
    func nearlyMappedSource(source: [UInt8]) {
        let verdict = classify(Self.ipv6SYN(source: source))
        expectAttempt(verdict, from: IPAddress(bytes: source)!, 40000, to: Self.victim6, 443)
    }

    @Test("An IPv4-mapped destination does not make the frame malformed")
    func ipv4MappedDestination() {
        var frame = FrameBuilder.tcp(from: Self.attacker6, 40000, to: Self.victim6, 443)
        frame.replaceSubrange(14 + 24..<14 + 40, with: Array(repeating: 0, count: 10) + [0xFF, 0xFF, 203, 0, 113, 5])
        expectAttempt(classify(frame), from: Self.attacker6, 40000, to: Self.victim, 443)
    }

    @Test("Random junk never crashes the parser")
    func junk() {
        var generator = SystemRandomNumberGenerator()
        let linkTypes: [LinkType] = [.ethernet, .linuxCooked, .linuxCooked2, .rawIP]
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...120, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Bias towards plausible headers so deeper paths are reached.
            if length > 14 && Bool.random(using: &generator) { bytes[12] = 0x86; bytes[13] = 0xDD; bytes[14] = 0x60 }
            _ = classify(bytes, linkTypes.randomElement(using: &generator)!)
        }
    }
}
