public import ConnCore

/// The kernel BPF filter (libpcap syntax) that lets only connection attempts reach user space.
///
/// libpcap's `tcp[...]` offsets follow the IPv4 header length but not IPv6 extension headers, so IPv6 is matched
/// against the fixed header, and IPv6 packets that start with an extension header are let through for the Swift
/// parser to judge. Each clause is repeated after `vlan` and `vlan and vlan` to cover 802.1Q and QinQ frames (the
/// first `vlan` in an alternative shifts the offsets for the rest of that alternative).
public enum SYNFilter: Sendable {
    /// The filter expression.
    /// - Parameter destinations: when given, only attempts to these addresses pass (the host's own addresses, for
    ///   "inbound only"); an empty list lets nothing through, so pass `nil` for every destination.
    public static func expression(destinations: [IPAddress]?) -> String {
        let ipv4Destinations = destinations?.filter(\.isIPv4) ?? []
        let ipv6Destinations = destinations?.filter { !$0.isIPv4 } ?? []
        let synWithoutACK = "(tcp[13] & 0x12) == 0x02"
        var ipv4 = "(ip and \(synWithoutACK))"
        // A TCP header split across IPv4 fragments (`nmap -f`): `tcp[13]` reads nothing there, so fragments at
        // offset 0 or 8 bytes pass for the Swift parser to put back together.
        var ipv4Fragments = "(ip and ip[9] == 6 and (ip[6:2] & 0x3fff) != 0 and (ip[6:2] & 0x1fff) < 2)"
        var ipv6Fixed = "(ip6 and ip6[6] == 6 and (ip6[53] & 0x12) == 0x02)"
        // Hop-by-hop, routing, fragment, AH, destination options: the Swift parser follows the chain.
        var ipv6Extended = "(ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60))"
        if destinations != nil {
            let v4 = hostClause(ipv4Destinations)
            let v6 = hostClause(ipv6Destinations)
            ipv4 = v4.map { "(ip and \(synWithoutACK) and \($0))" } ?? ""
            ipv4Fragments =
                v4.map { "(ip and ip[9] == 6 and (ip[6:2] & 0x3fff) != 0 and (ip[6:2] & 0x1fff) < 2 and \($0))" } ?? ""
            ipv6Fixed = v6.map { "(ip6 and ip6[6] == 6 and (ip6[53] & 0x12) == 0x02 and \($0))" } ?? ""
            ipv6Extended =
                v6.map {
                    "(ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 51 or ip6[6] == 60) and \($0))"
                } ?? ""
        }
        // Fragments first: in the kernel, reading `tcp[13]` past the end of a tiny first fragment ends the whole
        // filter with "reject", so no later alternative would be tried.
        let clauses = [ipv4Fragments, ipv4, ipv6Fixed, ipv6Extended].filter { !$0.isEmpty }
        guard !clauses.isEmpty else { return "less 0" }  // nothing can match
        let untagged = "(" + clauses.joined(separator: " or ") + ")"
        return "\(untagged) or (vlan and \(untagged)) or (vlan and vlan and \(untagged))"
    }

    private static func hostClause(_ addresses: [IPAddress]) -> String? {
        guard !addresses.isEmpty else { return nil }
        return "(" + addresses.map { "dst host \($0)" }.joined(separator: " or ") + ")"
    }
}
