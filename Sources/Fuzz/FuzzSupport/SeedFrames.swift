public import ConnCore
import ConnTesting

/// Frames built with ``FrameBuilder`` that cover every branch the parser documents: each link layer, IPv4 and IPv6,
/// every flag combination that matters, IPv4 options and fragments, each IPv6 extension header, too many VLAN tags
/// or extension headers, other protocols, and frames cut or damaged at each header. The fuzz seed corpus and the
/// user-space/kernel differential test start from them.
public enum SeedFrames: Sendable {
    /// A named frame and its link type.
    public struct Frame: Hashable, Sendable {
        public var name: String
        public var bytes: [UInt8]
        public var linkType: LinkType
    }

    static let source4 = IPAddress(ipv4: 0xC633_6438)  // 198.51.100.56
    static let destination4 = IPAddress(ipv4: 0xCB00_7105)  // 203.0.113.5
    static let source6 = IPAddress(high: 0x2001_0DB8_0001_0000, low: 0x56)  // 2001:db8:1::56
    static let destination6 = IPAddress(high: 0x2001_0DB8_0001_0000, low: 0x05)  // 2001:db8:1::5

    static let links: [(String, LinkLayer)] = [
        ("ethernet", .ethernet()),
        ("vlan", .ethernet(vlanTags: [VLANTag(id: 10)])),
        ("qinq", .ethernet(vlanTags: [VLANTag(tpid: 0x88A8, id: 100), VLANTag(id: 10)])),
        (
            "vlan4",
            .ethernet(vlanTags: [
                VLANTag(tpid: 0x88A8, id: 1), VLANTag(id: 2), VLANTag(tpid: 0x9100, id: 3), VLANTag(id: 4),
            ])
        ),
        ("vlan5", .ethernet(vlanTags: (1...5).map { VLANTag(id: $0) })),
        ("sll", .linuxCooked),
        ("sll2", .linuxCooked2),
        ("raw", .rawIP),
    ]

    /// The frames, with unique names.
    public static var all: [Frame] {
        var frames: [Frame] = []
        func add(_ name: String, _ bytes: [UInt8], _ linkType: LinkType) {
            frames.append(Frame(name: name, bytes: bytes, linkType: linkType))
        }
        for (linkName, link) in links {
            for (family, source, destination) in [("v4", source4, destination4), ("v6", source6, destination6)] {
                let prefix = "\(linkName)-\(family)"
                add(
                    "\(prefix)-syn",
                    FrameBuilder.tcp(from: source, 40_001, to: destination, 22, link: link),
                    link.linkType
                )
                add(
                    "\(prefix)-synack",
                    FrameBuilder.tcp(from: destination, 22, to: source, 40_001, flags: [.syn, .ack], link: link),
                    link.linkType
                )
                add("\(prefix)-udp", FrameBuilder.udp(from: source, 53, to: destination, 53, link: link), link.linkType)
            }
        }
        let ethernet = LinkType.ethernet
        for (name, flags) in [
            ("ack", TCPFlags.ack), ("rst", .rst), ("synfin", [.syn, .fin]), ("synpsh", [.syn, .psh]), ("none", []),
        ] as [(String, TCPFlags)] {
            add(
                "ethernet-v4-\(name)",
                FrameBuilder.tcp(from: source4, 40_002, to: destination4, 80, flags: flags),
                ethernet
            )
        }
        add(
            "ethernet-v4-payload",
            FrameBuilder.tcp(
                from: source4,
                40_003,
                to: destination4,
                443,
                flags: [.ack, .psh],
                payload: Array(repeating: 0x41, count: 48)
            ),
            ethernet
        )
        add(
            "ethernet-v4-options",
            FrameBuilder.tcp(
                from: source4,
                40_004,
                to: destination4,
                8080,
                ipv4Options: [0x94, 0x04, 0, 0, 1, 1, 1, 0]
            ),
            ethernet
        )
        add(
            "ethernet-v4-options-40",
            FrameBuilder.tcp(
                from: source4,
                40_004,
                to: destination4,
                8081,
                ipv4Options: Array(repeating: 1, count: 40)
            ),
            ethernet
        )
        add(
            "ethernet-v4-first-fragment",
            FrameBuilder.tcp(from: source4, 40_005, to: destination4, 25, moreFragments: true),
            ethernet
        )
        add(
            "ethernet-v4-later-fragment",
            FrameBuilder.tcp(from: source4, 40_005, to: destination4, 25, fragmentOffset: 3),
            ethernet
        )
        let extensions: [(String, [IPv6Extension])] = [
            ("hop", [.hopByHop()]), ("routing", [.routing]), ("dstopts", [.destinationOptions(optionBytes: 14)]),
            ("fragment", [.fragment(moreFragments: true)]), ("later-fragment", [.fragment(offset: 5)]),
            ("auth", [.authentication]),
            (
                "chain6",
                [.hopByHop(), .routing, .destinationOptions(), .fragment(), .authentication, .destinationOptions()]
            ),
            (
                "chain7",
                [
                    .hopByHop(), .routing, .destinationOptions(), .fragment(), .authentication, .destinationOptions(),
                    .routing,
                ]
            ),
        ]
        for (name, chain) in extensions {
            add(
                "ethernet-v6-\(name)",
                FrameBuilder.tcp(from: source6, 40_006, to: destination6, 443, ipv6Extensions: chain),
                ethernet
            )
        }
        add("ethernet-arp", FrameBuilder.arp(), ethernet)
        // The same packets behind the link types only raw and loopback captures use.
        let packet4 = FrameBuilder.tcp(from: source4, 40_007, to: destination4, 3306, link: .rawIP)
        let packet6 = FrameBuilder.tcp(from: source6, 40_007, to: destination6, 3306, link: .rawIP)
        for raw: Int32 in [12, 14] { add("raw\(raw)-v4-syn", packet4, LinkType(rawValue: raw)!) }
        add("ipv4-syn", packet4, LinkType(rawValue: 228)!)
        add("ipv6-syn", packet6, LinkType(rawValue: 229)!)
        add("null-v4-syn", [2, 0, 0, 0] + packet4, LinkType(rawValue: 0)!)
        add("loop-v6-syn", [0, 0, 0, 30] + packet6, LinkType(rawValue: 108)!)

        // Damaged frames: cut inside each header, and impossible header fields.
        let syn4 = FrameBuilder.tcp(from: source4, 40_008, to: destination4, 22)
        let syn6 = FrameBuilder.tcp(from: source6, 40_008, to: destination6, 22)
        for cut in [0, 13, 20, 33, 40, 53] { add("cut-v4-\(cut)", Array(syn4.prefix(cut)), ethernet) }
        for cut in [30, 53, 60, 73] { add("cut-v6-\(cut)", Array(syn6.prefix(cut)), ethernet) }
        func damaged(_ name: String, _ frame: [UInt8], _ changes: [(Int, UInt8)]) {
            var bytes = frame
            for (index, value) in changes { bytes[index] = value }
            add("bad-\(name)", bytes, ethernet)
        }
        damaged("v4-ihl-4", syn4, [(14, 0x44)])
        damaged("v4-ihl-15", syn4, [(14, 0x4F)])
        damaged("v4-version-6", syn4, [(14, 0x65)])
        damaged("v4-total-length-short", syn4, [(16, 0), (17, 30)])
        damaged("v4-total-length-0", syn4, [(16, 0), (17, 0)])
        damaged("v4-tcp-offset-4", syn4, [(46, 0x40)])
        damaged("v6-version-4", syn6, [(14, 0x40)])
        damaged("v6-payload-length-short", syn6, [(18, 0), (19, 10)])
        return frames
    }
}
