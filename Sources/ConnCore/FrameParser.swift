/// What the parser made of one captured frame.
public enum FrameVerdict: Hashable, Sendable {
    /// A TCP SYN without ACK.
    case attempt(source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16)
    /// A well-formed frame that is not a connection attempt (other protocols, other TCP segments, later fragments).
    case other
    /// A frame that is cut short or whose headers contradict themselves; skipped and counted.
    case malformed(MalformedReason)
    /// An IP fragment carrying part of a TCP header's first ``TCPHeaderFragment/headerBytes`` bytes, without the
    /// whole header (`nmap -f`): the host reassembles it, so ``FragmentedHeaderAssembler`` does too.
    case fragment(TCPHeaderFragment)
}

/// A piece of a fragmented TCP header: the bytes of the first ``headerBytes`` of the TCP segment that one IP fragment
/// carries.
public struct TCPHeaderFragment: Hashable, Sendable {
    /// The TCP header bytes that tell a SYN: ports (0..<4), data offset (12) and flags (13); 16 is the fragment
    /// granularity (8 bytes) rounded up.
    public static let headerBytes = 16

    public var source: IPAddress
    public var destination: IPAddress
    /// The IP identification (IPv4's 16 bits, IPv6's 32) that fragments of one packet share.
    public var identification: UInt32
    /// Where ``bytes`` start in the TCP segment: 0 or 8.
    public var offset: Int
    /// The bytes from ``offset`` on; only the first ``count`` are the fragment's.
    public var bytes: SIMD16<UInt8>
    public var count: Int

    public init(source: IPAddress, destination: IPAddress, identification: UInt32, offset: Int, bytes: SIMD16<UInt8>, count: Int) {
        self.source = source
        self.destination = destination
        self.identification = identification
        self.offset = offset
        self.bytes = bytes
        self.count = count
    }

    /// The verdict for a fragment whose payload starts `payload` bytes into the cursor and at `offset` (under
    /// ``headerBytes``) of the TCP segment, the IP header saying `available` bytes follow: the piece with those of
    /// its bytes that fall in the first ``headerBytes`` (possibly none), or `truncated` when the frame was cut
    /// before them, as for any header cut short.
    @inlinable
    static func verdict(
        _ cursor: FrameCursor, at payload: Int, available: Int, offset: Int, source: IPAddress,
        destination: IPAddress, identification: UInt32
    ) -> FrameVerdict {
        let count = min(max(available, 0), headerBytes - offset)
        guard cursor.has(payload + count) else { return .malformed(.truncated) }
        var bytes = SIMD16<UInt8>()
        for index in 0..<count { bytes[index] = cursor.u8(payload + index) }
        return .fragment(
            TCPHeaderFragment(
                source: source, destination: destination, identification: identification, offset: offset,
                bytes: bytes, count: count
            )
        )
    }
}

/// Why a frame was judged malformed. Few enough values to serve as a metric label.
public enum MalformedReason: String, Hashable, Sendable, CaseIterable {
    /// The frame ends before a header the parser needed.
    case truncated
    /// A header field is impossible: IPv4 IHL under 5, a length shorter than the header, a TCP data offset under 5,
    /// an IP version that contradicts the link layer.
    case invalidHeader = "invalid_header"
    /// More VLAN tags or IPv6 extension headers than the parser follows.
    case headerChainTooLong = "header_chain_too_long"
    /// An IPv6 source address in the IPv4-mapped form `::ffff:a.b.c.d`. Such addresses are not valid on the wire
    /// (RFC 4291 §2.5.5.2), and ``IPAddress`` cannot tell one from the IPv4 address it maps: reporting it would make
    /// an uninvolved IPv4 host the scanner.
    case ipv4MappedSource = "ipv4_mapped_source"
}

/// Classifies frames as connection attempts, without allocating.
///
/// Follows Ethernet with up to ``maxVLANTags`` 802.1Q/802.1ad tags, Linux cooked capture v1 and v2, raw IP and BSD
/// loopback; IPv4 with options and fragments (a TCP header split across fragments is handed, piece by piece, to
/// ``FragmentedHeaderAssembler``); IPv6 with up to
/// ``maxIPv6ExtensionHeaders`` extension headers (hop-by-hop, routing, fragment, destination options,
/// authentication). An IPv6 packet from an IPv4-mapped source is malformed (``MalformedReason/ipv4MappedSource``).
/// The XDP program in `bpf/conntrackr.bpf.c` follows the same rules and bounds.
public enum FrameParser: Sendable {
    /// VLAN tags followed before giving up on a frame.
    public static let maxVLANTags = 4
    /// The IPv6 extension headers the XDP program follows (`CT_MAX_IPV6_EXTENSION_HEADERS`); it drops a packet whose
    /// chain goes on, and counts it. ``classify(_:linkType:ipv6HeaderLimit:)`` follows any number by default, as
    /// Linux does: it answers a SYN behind 7, 12 or 20 destination-options headers (checked in the lab).
    public static let maxIPv6ExtensionHeaders = 6
    /// The most bytes of a frame the parser may need to read: the longest link header (Linux cooked v2, 20 bytes),
    /// every VLAN tag and a whole IPv6 packet (40 bytes and a payload of at most 65,535), which may be all headers.
    /// A live capture's snapshot length must be at least this, or a SYN behind a long chain is cut before its TCP
    /// header. (The kernel filter passes only SYNs and fragments, so it costs nothing on other packets.)
    public static let longestHeaders = 20 + 4 * maxVLANTags + 40 + 65_535

    /// Classifies one frame of the given link type.
    ///
    /// - Parameter ipv6HeaderLimit: the IPv6 extension headers followed before the packet is
    ///   `header_chain_too_long`. By default every header the packet holds (the chain ends within its bytes); the
    ///   comparison with the XDP program passes the program's ``maxIPv6ExtensionHeaders``.
    @inlinable
    public static func classify(
        _ frame: UnsafeRawBufferPointer, linkType: LinkType, ipv6HeaderLimit: Int = .max
    ) -> FrameVerdict {
        var cursor = FrameCursor(frame)
        switch linkType.framing {
        case .ethernet:
            guard cursor.has(14) else { return .malformed(.truncated) }
            return classifyEtherType(cursor.u16(12), &cursor, headerLength: 14, ipv6HeaderLimit: ipv6HeaderLimit)
        case .linuxCooked:
            guard cursor.has(16) else { return .malformed(.truncated) }
            return classifyEtherType(cursor.u16(14), &cursor, headerLength: 16, ipv6HeaderLimit: ipv6HeaderLimit)
        case .linuxCooked2:
            guard cursor.has(20) else { return .malformed(.truncated) }
            return classifyEtherType(cursor.u16(0), &cursor, headerLength: 20, ipv6HeaderLimit: ipv6HeaderLimit)
        case .rawIP:
            guard cursor.has(1) else { return .malformed(.truncated) }
            switch cursor.u8(0) >> 4 {
            case 4: return classifyIPv4(&cursor)
            case 6: return classifyIPv6(&cursor, headerLimit: ipv6HeaderLimit)
            default: return .malformed(.invalidHeader)
            }
        case .ipv4Only:
            return classifyIPv4(&cursor)
        case .ipv6Only:
            return classifyIPv6(&cursor, headerLimit: ipv6HeaderLimit)
        case .bsdLoopback:
            // A 4-byte address family in the capturing host's byte order; the IP version nibble is unambiguous.
            guard cursor.has(5) else { return .malformed(.truncated) }
            cursor.advance(4)
            switch cursor.u8(0) >> 4 {
            case 4: return classifyIPv4(&cursor)
            case 6: return classifyIPv6(&cursor, headerLimit: ipv6HeaderLimit)
            default: return .other
            }
        }
    }

    @inlinable
    static func classifyEtherType(
        _ first: UInt16, _ cursor: inout FrameCursor, headerLength: Int, ipv6HeaderLimit: Int
    ) -> FrameVerdict {
        var etherType = first
        var offset = headerLength
        var tags = 0
        while etherType == 0x8100 || etherType == 0x88A8 || etherType == 0x9100 {
            tags += 1
            guard tags <= maxVLANTags else { return .malformed(.headerChainTooLong) }
            guard cursor.has(offset + 4) else { return .malformed(.truncated) }
            etherType = cursor.u16(offset + 2)
            offset += 4
        }
        cursor.advance(offset)
        switch etherType {
        case 0x0800: return classifyIPv4(&cursor)
        case 0x86DD: return classifyIPv6(&cursor, headerLimit: ipv6HeaderLimit)
        default: return .other
        }
    }

    @inlinable
    static func classifyIPv4(_ cursor: inout FrameCursor) -> FrameVerdict {
        guard cursor.has(20) else { return .malformed(.truncated) }
        let versionAndLength = cursor.u8(0)
        let headerLength = Int(versionAndLength & 0x0F) * 4
        guard versionAndLength >> 4 == 4, headerLength >= 20 else { return .malformed(.invalidHeader) }
        let totalLength = Int(cursor.u16(2))
        guard totalLength >= headerLength else { return .malformed(.invalidHeader) }
        guard cursor.u8(9) == 6 else { return .other }  // not TCP
        let fragmentField = cursor.u16(6)
        let fragmentOffset = Int(fragmentField & 0x1FFF) * 8
        // A later fragment: none of the header bytes that tell a SYN are here.
        guard fragmentOffset < TCPHeaderFragment.headerBytes else { return .other }
        guard cursor.has(headerLength) else { return .malformed(.truncated) }
        let source = IPAddress(ipv4: cursor.u32(12))
        let destination = IPAddress(ipv4: cursor.u32(16))
        if fragmentOffset != 0 || (fragmentField & 0x2000 != 0 && totalLength < headerLength + 20) {
            // The TCP header split across fragments (`nmap -f`).
            return TCPHeaderFragment.verdict(
                cursor, at: headerLength, available: totalLength - headerLength, offset: fragmentOffset,
                source: source, destination: destination, identification: UInt32(cursor.u16(4))
            )
        }
        guard totalLength >= headerLength + 20 else {
            // The IP header claims the TCP header is not all there.
            return .malformed(.truncated)
        }
        cursor.advance(headerLength)
        return classifyTCP(&cursor, source: source, destination: destination)
    }

    @inlinable
    static func classifyIPv6(_ cursor: inout FrameCursor, headerLimit: Int) -> FrameVerdict {
        guard cursor.has(40) else { return .malformed(.truncated) }
        guard cursor.u8(0) >> 4 == 6 else { return .malformed(.invalidHeader) }
        // ::ffff:a.b.c.d: 80 zero bits, 16 one bits. Reported, it would read as the IPv4 host a.b.c.d.
        guard cursor.u64(8) != 0 || cursor.u32(16) != 0x0000_FFFF else { return .malformed(.ipv4MappedSource) }
        let source = IPAddress(high: cursor.u64(8), low: cursor.u64(16))
        let destination = IPAddress(high: cursor.u64(24), low: cursor.u64(32))
        var nextHeader = cursor.u8(6)
        var offset = 40
        var followed = 0
        var firstFragmentOf: UInt32?  // the identification, when this is the first of several fragments
        while nextHeader != 6 {
            let length: Int
            switch nextHeader {
            case 0, 43, 60:  // hop-by-hop, routing, destination options
                guard cursor.has(offset + 2) else { return .malformed(.truncated) }
                length = (Int(cursor.u8(offset + 1)) + 1) * 8
            case 44:  // fragment: only the first fragment carries the TCP header, or its first bytes
                guard cursor.has(offset + 8) else { return .malformed(.truncated) }
                let fragmentOffset = Int(cursor.u16(offset + 2) & 0xFFF8)
                let identification = cursor.u32(offset + 4)
                if fragmentOffset != 0 {
                    guard fragmentOffset < TCPHeaderFragment.headerBytes, cursor.u8(offset) == 6 else { return .other }
                    return TCPHeaderFragment.verdict(
                        cursor, at: offset + 8, available: Int(cursor.u16(4)) + 40 - (offset + 8),
                        offset: fragmentOffset, source: source, destination: destination,
                        identification: identification
                    )
                }
                // The last fragment header says (as in the XDP program) whether more fragments follow.
                firstFragmentOf = cursor.u16(offset + 2) & 1 != 0 ? identification : nil
                length = 8
            case 51:  // authentication header, counted in 4-byte units
                guard cursor.has(offset + 2) else { return .malformed(.truncated) }
                length = (Int(cursor.u8(offset + 1)) + 2) * 4
            default:
                return .other  // no next header, ESP, UDP, ICMPv6, ...
            }
            followed += 1
            guard followed <= headerLimit else { return .malformed(.headerChainTooLong) }
            nextHeader = cursor.u8(offset)
            offset += length
        }
        if let identification = firstFragmentOf, Int(cursor.u16(4)) + 40 < offset + 20, cursor.has(offset) {
            return TCPHeaderFragment.verdict(
                cursor, at: offset, available: Int(cursor.u16(4)) + 40 - offset, offset: 0, source: source,
                destination: destination, identification: identification
            )
        }
        guard Int(cursor.u16(4)) + 40 >= offset + 20, cursor.has(offset) else { return .malformed(.truncated) }
        cursor.advance(offset)
        return classifyTCP(&cursor, source: source, destination: destination)
    }

    @inlinable
    static func classifyTCP(_ cursor: inout FrameCursor, source: IPAddress, destination: IPAddress) -> FrameVerdict {
        guard cursor.has(20) else { return .malformed(.truncated) }
        guard cursor.u8(12) >> 4 >= 5 else { return .malformed(.invalidHeader) }
        let flags = cursor.u8(13)
        guard flags & 0x02 != 0, flags & 0x10 == 0 else { return .other }  // SYN set, ACK clear
        return .attempt(
            source: source,
            sourcePort: cursor.u16(0),
            destination: destination,
            destinationPort: cursor.u16(2)
        )
    }
}

/// A read position in a frame; every read is preceded by a `has` check in the parser.
@usableFromInline
struct FrameCursor {
    @usableFromInline var base: UnsafeRawBufferPointer

    @inlinable init(_ base: UnsafeRawBufferPointer) { self.base = base }

    @inlinable func has(_ count: Int) -> Bool { base.count >= count }

    @inlinable mutating func advance(_ count: Int) {
        base = UnsafeRawBufferPointer(rebasing: base[count...])
    }

    @inlinable func u8(_ offset: Int) -> UInt8 { base[offset] }

    @inlinable func u16(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable func u32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable func u64(_ offset: Int) -> UInt64 {
        UInt64(bigEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}

@available(*, unavailable)
extension FrameCursor: Sendable {}
