public import ConnCore

/// TCP flag bits, for building segments.
public struct TCPFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
}

/// An IPv6 extension header to put between the fixed header and the transport header.
public enum IPv6Extension: Hashable, Sendable {
    case hopByHop(optionBytes: Int = 6)
    case routing
    case destinationOptions(optionBytes: Int = 6)
    /// A fragment header; `offset` in 8-byte units.
    case fragment(offset: UInt16 = 0, moreFragments: Bool = false)
    case authentication

    var number: UInt8 {
        switch self {
        case .hopByHop: 0
        case .routing: 43
        case .destinationOptions: 60
        case .fragment: 44
        case .authentication: 51
        }
    }
}

/// The link layer to wrap a packet in.
public enum LinkLayer: Hashable, Sendable {
    /// Ethernet II, with VLAN tags outermost first, each as (TPID, VLAN ID): 0x8100 for 802.1Q, 0x88a8 for 802.1ad.
    case ethernet(vlanTags: [VLANTag] = [])
    case linuxCooked
    case linuxCooked2
    case rawIP

    /// The pcap link type for this framing.
    public var linkType: LinkType {
        switch self {
        case .ethernet: .ethernet
        case .linuxCooked: .linuxCooked
        case .linuxCooked2: .linuxCooked2
        case .rawIP: .rawIP
        }
    }
}

/// One VLAN tag.
public struct VLANTag: Hashable, Sendable {
    public var tpid: UInt16
    public var id: UInt16
    public init(tpid: UInt16 = 0x8100, id: UInt16) {
        self.tpid = tpid
        self.id = id
    }
}

/// Builds well-formed (or deliberately broken) frames for tests, fuzz seeds and benchmarks.
public enum FrameBuilder: Sendable {
    /// A TCP segment from `source` to `destination` wrapped in `link`.
    /// - Parameters:
    ///   - ipv4Options: bytes of IPv4 options, padded to a multiple of 4.
    ///   - fragmentOffset: IPv4 fragment offset in 8-byte units.
    ///   - ipv6Extensions: extension headers in order.
    public static func tcp(
        from source: IPAddress,
        _ sourcePort: UInt16,
        to destination: IPAddress,
        _ destinationPort: UInt16,
        flags: TCPFlags = .syn,
        link: LinkLayer = .ethernet(),
        ipv4Options: [UInt8] = [],
        fragmentOffset: UInt16 = 0,
        moreFragments: Bool = false,
        ipv6Extensions: [IPv6Extension] = [],
        payload: [UInt8] = []
    ) -> [UInt8] {
        var segment = tcpHeader(sourcePort, destinationPort, flags: flags) + payload
        let packet: [UInt8]
        if source.isIPv4 {
            setTCPChecksum(&segment, pseudoHeader: source.bytes + destination.bytes + [0, 6] + be16(segment.count))
            packet = ipv4(
                source, destination, protocolNumber: 6, payload: segment, options: ipv4Options,
                fragmentOffset: fragmentOffset, moreFragments: moreFragments
            )
        } else {
            setTCPChecksum(&segment, pseudoHeader: source.bytes + destination.bytes + be32(segment.count) + [0, 0, 0, 6])
            packet = ipv6(source, destination, protocolNumber: 6, payload: segment, extensions: ipv6Extensions)
        }
        return wrap(packet, in: link, isIPv6: !source.isIPv4)
    }

    /// A TCP segment cut into IP fragments of `pieceSize` bytes (a multiple of 8), as `nmap -f` sends a SYN: the
    /// first fragment holds the ports, a later one the flags. IPv4 fragments share an identification; IPv6 ones
    /// carry a fragment header (identification 1). Returned in order; `ethernet` framing.
    public static func fragmentedTCP(
        from source: IPAddress,
        _ sourcePort: UInt16,
        to destination: IPAddress,
        _ destinationPort: UInt16,
        flags: TCPFlags = .syn,
        pieceSize: Int = 8,
        identification: UInt16 = 0xBEEF
    ) -> [[UInt8]] {
        precondition(pieceSize > 0 && pieceSize % 8 == 0)
        var segment = tcpHeader(sourcePort, destinationPort, flags: flags)
        let pseudoHeader =
            source.isIPv4
            ? source.bytes + destination.bytes + [0, 6] + be16(segment.count)
            : source.bytes + destination.bytes + be32(segment.count) + [0, 0, 0, 6]
        setTCPChecksum(&segment, pseudoHeader: pseudoHeader)
        return stride(from: 0, to: segment.count, by: pieceSize).map { start in
            let piece = Array(segment[start..<min(start + pieceSize, segment.count)])
            let more = start + pieceSize < segment.count
            let packet: [UInt8]
            if source.isIPv4 {
                var ip = ipv4(
                    source, destination, protocolNumber: 6, payload: piece, fragmentOffset: UInt16(start / 8),
                    moreFragments: more
                )
                ip[4] = UInt8(identification >> 8)
                ip[5] = UInt8(identification & 0xFF)
                ip[10] = 0
                ip[11] = 0
                let checksum = internetChecksum(Array(ip[0..<20]))
                ip[10] = UInt8(checksum >> 8)
                ip[11] = UInt8(checksum & 0xFF)
                packet = ip
            } else {
                packet = ipv6(
                    source, destination, protocolNumber: 6, payload: piece,
                    extensions: [.fragment(offset: UInt16(start / 8), moreFragments: more)]
                )
            }
            return wrap(packet, in: .ethernet(), isIPv6: !source.isIPv4)
        }
    }

    /// A UDP datagram, for frames that are not connection attempts.
    public static func udp(
        from source: IPAddress,
        _ sourcePort: UInt16,
        to destination: IPAddress,
        _ destinationPort: UInt16,
        link: LinkLayer = .ethernet()
    ) -> [UInt8] {
        let datagram = be16(Int(sourcePort)) + be16(Int(destinationPort)) + be16(8) + [0, 0]
        let packet =
            source.isIPv4
            ? ipv4(source, destination, protocolNumber: 17, payload: datagram)
            : ipv6(source, destination, protocolNumber: 17, payload: datagram, extensions: [])
        return wrap(packet, in: link, isIPv6: !source.isIPv4)
    }

    /// An ARP request frame (not IP at all).
    public static func arp() -> [UInt8] {
        ethernetHeader(etherType: 0x0806, vlanTags: []) + [0, 1, 8, 0, 6, 4, 0, 1] + Array(repeating: 0, count: 20)
    }

    // MARK: Layers

    static func tcpHeader(_ sourcePort: UInt16, _ destinationPort: UInt16, flags: TCPFlags) -> [UInt8] {
        var header = be16(Int(sourcePort)) + be16(Int(destinationPort))
        header += [0x12, 0x34, 0x56, 0x78]  // sequence
        header += flags.contains(.ack) ? [0, 0, 0, 1] : [0, 0, 0, 0]
        header += [0x50, flags.rawValue, 0xFA, 0xF0, 0, 0, 0, 0]  // data offset 5, window, checksum, urgent
        return header
    }

    static func ipv4(
        _ source: IPAddress,
        _ destination: IPAddress,
        protocolNumber: UInt8,
        payload: [UInt8],
        options: [UInt8] = [],
        fragmentOffset: UInt16 = 0,
        moreFragments: Bool = false
    ) -> [UInt8] {
        var padded = options
        while padded.count % 4 != 0 { padded.append(0) }
        let headerLength = 20 + padded.count
        var header: [UInt8] = [0x40 | UInt8(headerLength / 4), 0]
        header += be16(headerLength + payload.count)
        header += [0xBE, 0xEF]
        header += be16(Int((moreFragments ? 0x2000 : 0) | (fragmentOffset & 0x1FFF)))
        header += [64, protocolNumber, 0, 0]
        header += source.bytes + destination.bytes + padded
        let checksum = internetChecksum(header)
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xFF)
        return header + payload
    }

    static func ipv6(
        _ source: IPAddress,
        _ destination: IPAddress,
        protocolNumber: UInt8,
        payload: [UInt8],
        extensions: [IPv6Extension]
    ) -> [UInt8] {
        var chain: [UInt8] = []
        for (index, header) in extensions.enumerated() {
            let next = index + 1 < extensions.count ? extensions[index + 1].number : protocolNumber
            chain += extensionBytes(header, next: next)
        }
        let firstNext = extensions.first?.number ?? protocolNumber
        var fixed: [UInt8] = [0x60, 0, 0, 0]
        fixed += be16(chain.count + payload.count)
        fixed += [firstNext, 64]
        return fixed + source.bytes + destination.bytes + chain + payload
    }

    static func extensionBytes(_ header: IPv6Extension, next: UInt8) -> [UInt8] {
        func options(_ optionBytes: Int) -> [UInt8] {
            // Length in 8-byte units past the first 8; pad with PadN.
            let total = ((2 + optionBytes + 7) / 8) * 8
            var bytes: [UInt8] = [next, UInt8(total / 8 - 1)]
            let pad = total - 2
            bytes += [1, UInt8(pad - 2)] + Array(repeating: 0, count: pad - 2)
            return bytes
        }
        switch header {
        case .hopByHop(let optionBytes), .destinationOptions(let optionBytes):
            return options(optionBytes)
        case .routing:
            return [next, 0, 0, 0, 0, 0, 0, 0]  // type 0 with no addresses: enough to be skipped
        case .fragment(let offset, let moreFragments):
            let field = (offset << 3) | (moreFragments ? 1 : 0)
            return [next, 0] + be16(Int(field)) + [0, 0, 0, 1]
        case .authentication:
            return [next, 4] + [0, 0] + Array(repeating: 0xAA, count: 20)  // (4 + 2) * 4 = 24 bytes
        }
    }

    static func wrap(_ packet: [UInt8], in link: LinkLayer, isIPv6: Bool) -> [UInt8] {
        let etherType: UInt16 = isIPv6 ? 0x86DD : 0x0800
        switch link {
        case .ethernet(let tags):
            return ethernetHeader(etherType: etherType, vlanTags: tags) + packet
        case .linuxCooked:
            // Packet type 0 (to us), ARPHRD_ETHER, address length 6, address, protocol.
            return [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0] + be16(Int(etherType)) + packet
        case .linuxCooked2:
            // Protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length, address.
            return be16(Int(etherType)) + [0, 0] + be32(2) + [0, 1, 0, 6] + [2, 0, 0, 0, 0, 1, 0, 0] + packet
        case .rawIP:
            return packet
        }
    }

    static func ethernetHeader(etherType: UInt16, vlanTags: [VLANTag]) -> [UInt8] {
        var header: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]
        for tag in vlanTags {
            header += be16(Int(tag.tpid)) + be16(Int(tag.id & 0x0FFF))
        }
        return header + be16(Int(etherType))
    }

    static func setTCPChecksum(_ segment: inout [UInt8], pseudoHeader: [UInt8]) {
        segment[16] = 0
        segment[17] = 0
        let checksum = internetChecksum(pseudoHeader + segment)
        segment[16] = UInt8(checksum >> 8)
        segment[17] = UInt8(checksum & 0xFF)
    }

    static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    static func be16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func be32(_ value: Int) -> [UInt8] { be16(value >> 16) + be16(value & 0xFFFF) }
}
