/// The link-layer header type of captured frames, by its libpcap `DLT_`/`LINKTYPE_` number.
public struct LinkType: Hashable, Sendable, CustomStringConvertible {
    /// How frames of this type are framed, as far as the parser cares.
    @usableFromInline
    enum Framing: Sendable {
        case ethernet, linuxCooked, linuxCooked2, rawIP, ipv4Only, ipv6Only, bsdLoopback
    }

    /// The numeric link type, as `pcap_datalink` or a capture file reports it.
    public let rawValue: Int32
    @usableFromInline
    let framing: Framing

    /// The link type for a numeric value; `nil` when conntrackr cannot parse that link layer.
    public init?(rawValue: Int32) {
        switch rawValue {
        case 1: framing = .ethernet  // DLT_EN10MB
        case 113: framing = .linuxCooked  // DLT_LINUX_SLL, what `-i any` gives
        case 276: framing = .linuxCooked2  // DLT_LINUX_SLL2
        case 12, 14, 101: framing = .rawIP  // DLT_RAW (Linux and BSD numbering) and LINKTYPE_RAW
        case 228: framing = .ipv4Only  // DLT_IPV4
        case 229: framing = .ipv6Only  // DLT_IPV6
        case 0, 108: framing = .bsdLoopback  // DLT_NULL, DLT_LOOP
        default: return nil
        }
        self.rawValue = rawValue
    }

    public static let ethernet = LinkType(rawValue: 1)!
    public static let linuxCooked = LinkType(rawValue: 113)!
    public static let linuxCooked2 = LinkType(rawValue: 276)!
    public static let rawIP = LinkType(rawValue: 101)!

    public var description: String {
        switch framing {
        case .ethernet: "Ethernet"
        case .linuxCooked: "Linux cooked v1"
        case .linuxCooked2: "Linux cooked v2"
        case .rawIP: "raw IP"
        case .ipv4Only: "raw IPv4"
        case .ipv6Only: "raw IPv6"
        case .bsdLoopback: "BSD loopback"
        }
    }
}
