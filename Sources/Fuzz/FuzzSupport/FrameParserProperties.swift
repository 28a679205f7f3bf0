public import ConnCore

/// Properties of ``FrameParser`` that hold for every input, checked by the `FuzzFrameParser` target and by the
/// corpus replay test. Each is a consequence of the parser's documented rules, not of its code:
///
/// - Verdicts depend only on bytes the parser read, so appending bytes keeps any verdict but `truncated`, and
///   dropping the last byte gives the same verdict or `truncated`.
/// - The link layer only locates the IP header: the same bytes behind Ethernet (with up to
///   ``FrameParser/maxVLANTags`` tags), Linux cooked v1 and v2, raw IP and BSD loopback get the verdict of the bare
///   IPv4 or IPv6 parse, and one tag too many is `header_chain_too_long`.
/// - The addresses of an attempt print and parse back to themselves.
public enum FrameParserProperties: Sendable {
    /// The properties `frame` of `linkType` breaks, each as one line with the frame in hex.
    public static func violations(_ frame: UnsafeRawBufferPointer, linkType: LinkType) -> [String] {
        var found: [String] = []
        func fail(_ what: String) {
            found.append("\(what) [link type \(linkType.rawValue), frame \(hex(frame))]")
        }
        let verdict = FrameParser.classify(frame, linkType: linkType)
        if FrameParser.classify(frame, linkType: linkType) != verdict { fail("classify is not deterministic") }

        if verdict != .malformed(.truncated) {
            for filler: UInt8 in [0x00, 0xFF] {
                let longer = classifyCopy(Array(frame) + Array(repeating: filler, count: 64), linkType)
                if longer != verdict { fail("appending 64 bytes of \(filler) turned \(verdict) into \(longer)") }
            }
        }
        if !frame.isEmpty {
            let shorter = classifyCopy(Array(frame.dropLast()), linkType)
            if shorter != verdict && shorter != .malformed(.truncated) {
                fail("dropping the last byte turned \(verdict) into \(shorter)")
            }
        }
        for (name, wrapped, wrappedType, expected) in linkLayerCases(packet: Array(frame)) {
            let got = classifyCopy(wrapped, wrappedType)
            if got != expected { fail("the bytes behind \(name) gave \(got), the bare IP parse \(expected)") }
        }
        if case .attempt(let source, _, let destination, _) = verdict {
            for address in [source, destination] {
                if IPAddress(address.description) != address { fail("address \(address) does not parse back") }
                if IPAddress(bytes: address.bytes) != address { fail("address \(address) does not rebuild from bytes") }
            }
        }
        return found
    }

    /// The frame bytes in an allocation of their exact size, so AddressSanitizer catches any read past the end.
    static func classifyCopy(_ bytes: [UInt8], _ linkType: LinkType) -> FrameVerdict {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        return FrameParser.classify(UnsafeRawBufferPointer(copy), linkType: linkType)
    }

    /// `packet` behind each link layer, with the verdict the bare IPv4 or IPv6 parse implies for it.
    static func linkLayerCases(packet: [UInt8]) -> [(String, [UInt8], LinkType, FrameVerdict)] {
        let v4 = classifyCopy(packet, LinkType(rawValue: 228)!)
        let v6 = classifyCopy(packet, LinkType(rawValue: 229)!)
        let macs: [UInt8] = [0x02, 0, 0, 0, 0, 0x05, 0x02, 0, 0, 0, 0, 0x56]
        func tag(_ tpid: UInt16, _ id: UInt8) -> [UInt8] { [UInt8(tpid >> 8), UInt8(tpid & 0xFF), 0, id] }
        let fourTags = tag(0x88A8, 1) + tag(0x8100, 2) + tag(0x9100, 3) + tag(0x8100, 4)
        // What raw IP and BSD loopback make of the version nibble.
        let version = packet.first.map { $0 >> 4 }
        let byVersion: (FrameVerdict) -> FrameVerdict = { unknown in
            switch version {
            case nil: .malformed(.truncated)
            case 4: v4
            case 6: v6
            default: unknown
            }
        }
        var cases: [(String, [UInt8], LinkType, FrameVerdict)] = [
            ("Ethernet 0x0800", macs + [0x08, 0x00] + packet, .ethernet, v4),
            ("Ethernet 0x86dd", macs + [0x86, 0xDD] + packet, .ethernet, v6),
            ("Ethernet ARP", macs + [0x08, 0x06] + packet, .ethernet, .other),
            ("802.1Q", macs + tag(0x8100, 7) + [0x08, 0x00] + packet, .ethernet, v4),
            ("four VLAN tags", macs + fourTags + [0x86, 0xDD] + packet, .ethernet, v6),
            (
                "five VLAN tags", macs + fourTags + tag(0x8100, 5) + [0x08, 0x00] + packet, .ethernet,
                .malformed(.headerChainTooLong)
            ),
            ("Linux cooked v1", [0, 0, 0, 1, 0, 6] + macs.prefix(8) + [0x08, 0x00] + packet, .linuxCooked, v4),
            (
                "Linux cooked v2", [0x86, 0xDD, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6] + macs.prefix(8) + packet,
                .linuxCooked2, v6
            ),
        ]
        for raw: Int32 in [12, 14, 101] {
            cases.append(("raw IP \(raw)", packet, LinkType(rawValue: raw)!, byVersion(.malformed(.invalidHeader))))
        }
        for loopback: Int32 in [0, 108] {
            cases.append(
                (
                    "BSD loopback \(loopback)", [2, 0, 0, 0] + packet, LinkType(rawValue: loopback)!,
                    byVersion(.other)
                )
            )
        }
        return cases
    }
}
