public import ConnCore
import ConnTesting

/// Ethernet frames for comparing ``FrameParser`` with the XDP program (which sees only Ethernet): the committed
/// frames first, then, from a seed, an endless mix of random well-formed frames, mutations of earlier frames and
/// deliberately malformed ones.
public struct DifferentialFrames: Sendable {
    /// Whether an Ethernet frame carries more VLAN tags than the parsers follow (``ConnCore/FrameParser/maxVLANTags``),
    /// read here on its own: both parsers call that `header_chain_too_long` as they do a long IPv6 chain, but only
    /// the IPv6 chain makes the XDP program drop the packet.
    public static func hasTooManyVLANTags(_ frame: [UInt8]) -> Bool {
        var offset = 12
        var tags = 0
        while offset + 2 <= frame.count {
            let type = UInt16(frame[offset]) << 8 | UInt16(frame[offset + 1])
            guard type == 0x8100 || type == 0x88A8 || type == 0x9100 else { break }
            tags += 1
            offset += 4
        }
        return tags > FrameParser.maxVLANTags
    }

    /// Where a frame came from, for the report.
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case committed, random, mutated, malformed
    }

    private var random: SplitMix64
    private let committed: [[UInt8]]
    private var nextCommitted = 0
    /// Recent frames to mutate, besides the committed ones.
    private var recent: [[UInt8]] = []
    private var nextRecent = 0

    /// The largest frame produced: `BPF_PROG_TEST_RUN` takes an XDP frame of at most about a page.
    public static let maxLength = 3000
    /// The smallest frame produced: `BPF_PROG_TEST_RUN` refuses XDP frames shorter than an Ethernet header.
    public static let minLength = 14

    /// - Parameter committed: frames given first, as they are (those outside the length limits are skipped).
    public init(seed: UInt64, committed: [[UInt8]]) {
        random = SplitMix64(seed: seed)
        self.committed = committed.filter { (Self.minLength...Self.maxLength).contains($0.count) }
    }

    /// The next frame, between ``minLength`` and ``maxLength`` bytes.
    public mutating func next() -> (kind: Kind, frame: [UInt8]) {
        if nextCommitted < committed.count {
            defer { nextCommitted += 1 }
            return (.committed, committed[nextCommitted])
        }
        let roll = Int.random(in: 0..<10, using: &random)
        let (kind, frame): (Kind, [UInt8]) =
            switch roll {
            case 0..<3: (.random, randomFrame())
            case 3..<7: (.mutated, mutate(source()))
            default: (.malformed, malform(source()))
            }
        let bounded = Array(frame.prefix(Self.maxLength))
        let result =
            bounded.count >= Self.minLength ? bounded : bounded + Array(repeating: 0, count: 14 - bounded.count)
        if kind == .random || Int.random(in: 0..<4, using: &random) == 0 { remember(result) }
        return (kind, result)
    }

    private mutating func remember(_ frame: [UInt8]) {
        if recent.count < 512 {
            recent.append(frame)
        } else {
            recent[nextRecent] = frame
            nextRecent = (nextRecent + 1) % recent.count
        }
    }

    private mutating func source() -> [UInt8] {
        if !committed.isEmpty && (recent.isEmpty || Bool.random(using: &random)) {
            return committed.randomElement(using: &random)!
        }
        return recent.randomElement(using: &random) ?? randomFrame()
    }

    // MARK: Random well-formed frames

    private mutating func address(ipv6: Bool) -> IPAddress {
        if !ipv6 { return IPAddress(ipv4: random.next(upperBound: UInt32.max)) }
        return IPAddress(high: random.next(), low: random.next())
    }

    /// Now and then writes an IPv4-mapped address (`::ffff:a.b.c.d`) over the source or the destination of the
    /// IPv6 header at `ip`: as a source both sides must judge the frame malformed, as a destination report it as
    /// the IPv4 address. (``FrameBuilder`` writes an IPv4-mapped ``IPAddress`` as IPv4, so it is patched in.)
    private mutating func mapAddresses(_ frame: inout [UInt8], ip: Int) {
        for offset in [ip + 8, ip + 24]
        where Int.random(in: 0..<12, using: &random) == 0 && offset + 16 <= frame.count {
            let ipv4 = random.next(upperBound: UInt32.max)
            let mapped: [UInt8] = Array(repeating: 0, count: 10) + [0xFF, 0xFF]
                + [UInt8(ipv4 >> 24), UInt8(ipv4 >> 16 & 0xFF), UInt8(ipv4 >> 8 & 0xFF), UInt8(ipv4 & 0xFF)]
            frame.replaceSubrange(offset..<offset + 16, with: mapped)
        }
    }

    private mutating func randomFrame() -> [UInt8] {
        let ipv6 = Int.random(in: 0..<10, using: &random) < 3
        let tpids: [UInt16] = [0x8100, 0x88A8, 0x9100]
        let tagCount = [0, 0, 0, 0, 1, 1, 2, 3, 4, 5].randomElement(using: &random)!
        let tags = (0..<tagCount).map { _ in
            VLANTag(tpid: tpids.randomElement(using: &random)!, id: UInt16.random(in: 0...4095, using: &random))
        }
        let source = address(ipv6: ipv6)
        let destination = address(ipv6: ipv6)
        let link = LinkLayer.ethernet(vlanTags: tags)
        let sourcePort = UInt16.random(in: 0...UInt16.max, using: &random)
        let destinationPort = UInt16.random(in: 0...UInt16.max, using: &random)
        if Int.random(in: 0..<12, using: &random) == 0 {
            var frame = FrameBuilder.udp(from: source, sourcePort, to: destination, destinationPort, link: link)
            if ipv6 { mapAddresses(&frame, ip: 14 + 4 * tagCount) }
            return frame
        }
        // Half the segments are SYNs, the rest any flags at all.
        let flags =
            Bool.random(using: &random)
            ? TCPFlags.syn : TCPFlags(rawValue: UInt8.random(in: 0...255, using: &random))
        let payload = (0..<[0, 0, 0, 8, 40, 200].randomElement(using: &random)!).map { _ in
            UInt8.random(in: 0...255, using: &random)
        }
        if ipv6 {
            let kinds = (0..<[0, 0, 0, 1, 1, 2, 3, 5, 6, 7].randomElement(using: &random)!).map { _ in
                randomExtension()
            }
            var frame = FrameBuilder.tcp(
                from: source,
                sourcePort,
                to: destination,
                destinationPort,
                flags: flags,
                link: link,
                ipv6Extensions: kinds,
                payload: payload
            )
            mapAddresses(&frame, ip: 14 + 4 * tagCount)
            return frame
        }
        let optionLength = [0, 0, 0, 4, 8, 20, 40].randomElement(using: &random)!
        let options = (0..<optionLength).map { _ in UInt8.random(in: 0...255, using: &random) }
        let fragmented = Int.random(in: 0..<8, using: &random) == 0
        return FrameBuilder.tcp(
            from: source,
            sourcePort,
            to: destination,
            destinationPort,
            flags: flags,
            link: link,
            ipv4Options: options,
            fragmentOffset: fragmented ? UInt16.random(in: 0...0x1FFF, using: &random) : 0,
            moreFragments: fragmented && Bool.random(using: &random),
            payload: payload
        )
    }

    private mutating func randomExtension() -> IPv6Extension {
        switch Int.random(in: 0..<5, using: &random) {
        case 0: .hopByHop(optionBytes: Int.random(in: 2...120, using: &random))
        case 1: .routing
        case 2: .destinationOptions(optionBytes: Int.random(in: 2...120, using: &random))
        case 3:
            .fragment(
                offset: Bool.random(using: &random) ? 0 : UInt16.random(in: 1...0x1FFF, using: &random),
                moreFragments: Bool.random(using: &random)
            )
        default: .authentication
        }
    }

    // MARK: Mutations

    /// Offsets where a change matters most: the EtherType, VLAN tags, IP and TCP header fields.
    private mutating func interestingOffset(_ count: Int) -> Int {
        Bool.random(using: &random)
            ? Int.random(in: 0..<min(count, 100), using: &random) : Int.random(in: 0..<count, using: &random)
    }

    private mutating func mutate(_ original: [UInt8]) -> [UInt8] {
        var frame = original
        let interesting: [UInt8] = [0, 1, 4, 5, 6, 0x2C, 0x33, 0x3A, 0x3B, 0x40, 0x45, 0x4F, 0x50, 0x60, 0x81, 0xFF]
        for _ in 0..<Int.random(in: 1...3, using: &random) where !frame.isEmpty {
            let offset = interestingOffset(frame.count)
            switch Int.random(in: 0..<8, using: &random) {
            case 0: frame[offset] ^= 1 << UInt8.random(in: 0...7, using: &random)
            case 1: frame[offset] = UInt8.random(in: 0...255, using: &random)
            case 2: frame[offset] = interesting.randomElement(using: &random)!
            case 3: frame = Array(frame.prefix(Int.random(in: 14...max(14, frame.count), using: &random)))
            case 4:
                frame += (0..<Int.random(in: 1...64, using: &random)).map { _ in
                    UInt8.random(in: 0...255, using: &random)
                }
            case 5:
                // Insert or remove a VLAN-sized chunk after the MAC addresses.
                if frame.count > 16 && Bool.random(using: &random) {
                    frame.removeSubrange(12..<16)
                } else {
                    frame.insert(
                        contentsOf: [[0x81, 0x00], [0x88, 0xA8], [0x91, 0x00]].randomElement(using: &random)! + [0, 7],
                        at: 12
                    )
                }
            case 6:
                // A 16-bit field set to a small or large value: lengths, fragment offsets, ports.
                if offset + 1 < frame.count {
                    let value = [0, 1, 20, 40, 0x1FFF, 0xFFFF].randomElement(using: &random)!
                    frame[offset] = UInt8(value >> 8)
                    frame[offset + 1] = UInt8(value & 0xFF)
                }
            default:
                // The EtherType (or a tag's) to one the parsers follow.
                let types: [[UInt8]] = [
                    [0x08, 0x00], [0x86, 0xDD], [0x81, 0x00], [0x88, 0xA8], [0x91, 0x00], [0x08, 0x06],
                ]
                let at = [12, 16, 20].randomElement(using: &random)!
                if at + 1 < frame.count {
                    frame.replaceSubrange(at..<at + 2, with: types.randomElement(using: &random)!)
                }
            }
        }
        return frame
    }

    // MARK: Malformed frames

    /// Cuts a frame short, or contradicts one of its header fields, where the IP header is found plainly behind
    /// Ethernet and up to five tags.
    private mutating func malform(_ original: [UInt8]) -> [UInt8] {
        var frame = original
        var offset = 12
        var tags = 0
        while offset + 2 <= frame.count,
            [0x8100, 0x88A8, 0x9100].contains(UInt16(frame[offset]) << 8 | UInt16(frame[offset + 1])),
            tags < 5
        {
            offset += 4
            tags += 1
        }
        let ip = offset + 2
        guard ip < frame.count else {
            return Array(frame.prefix(Int.random(in: 14...max(14, frame.count), using: &random)))
        }
        switch Int.random(in: 0..<7, using: &random) {
        case 0, 1:
            // Cut anywhere inside the headers.
            return Array(frame.prefix(Int.random(in: 14...min(frame.count, ip + 80), using: &random)))
        case 2: frame[ip] = (frame[ip] & 0xF0) | UInt8.random(in: 0...4, using: &random)  // IHL under 5
        case 3: frame[ip] = (frame[ip] & 0x0F) | [0x40, 0x60, 0x00, 0x50].randomElement(using: &random)!  // version
        case 4:
            // IPv4 total length or IPv6 payload length too small.
            let field = frame[ip] >> 4 == 6 ? ip + 4 : ip + 2
            if field + 1 < frame.count {
                let value = UInt16.random(in: 0...60, using: &random)
                frame[field] = UInt8(value >> 8)
                frame[field + 1] = UInt8(value & 0xFF)
            }
        case 5:
            // TCP data offset under 5, where a plain IPv4 header puts the TCP header.
            let tcp = ip + Int(frame[ip] & 0x0F) * 4
            if frame[ip] >> 4 == 4, tcp + 12 < frame.count {
                frame[tcp + 12] = (frame[tcp + 12] & 0x0F) | UInt8.random(in: 0...4, using: &random) << 4
            }
        default:
            // IPv6: a next header that starts a chain the frame cannot hold.
            if frame[ip] >> 4 == 6, ip + 6 < frame.count {
                frame[ip + 6] = [0, 43, 44, 51, 60].randomElement(using: &random)!
                frame = Array(frame.prefix(min(frame.count, ip + 40 + Int.random(in: 0...9, using: &random))))
            }
        }
        return frame
    }

    // MARK: Ethernet from other link types

    /// `frame` of `linkType` as an Ethernet frame carrying the same network-layer bytes, or `nil` when the link
    /// header is cut short.
    public static func ethernet(_ frame: [UInt8], linkType: LinkType) -> [UInt8]? {
        let macs: [UInt8] = [0x02, 0, 0, 0, 0, 0x05, 0x02, 0, 0, 0, 0, 0x56]
        func byVersion(_ packet: ArraySlice<UInt8>) -> [UInt8] {
            macs + (packet.first.map { $0 >> 4 == 6 } == true ? [0x86, 0xDD] : [0x08, 0x00]) + packet
        }
        switch linkType.rawValue {
        case 1: return frame
        case 113: return frame.count >= 16 ? macs + frame[14..<16] + frame[16...] : nil
        case 276: return frame.count >= 20 ? macs + frame[0..<2] + frame[20...] : nil
        case 12, 14, 101, 228, 229: return byVersion(frame[...])
        case 0, 108: return frame.count >= 4 ? byVersion(frame[4...]) : nil
        default: return nil
        }
    }
}
