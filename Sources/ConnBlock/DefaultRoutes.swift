public import ConnCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This host's default routes, read from the kernel's route tables in `/proc`: their next hops must never be
/// blocked (a forged scan "from" the gateway would cut the host off), and their interface is where the agent
/// watches when no `--interface` is given.
/// - Important: `/proc/net/route` and `/proc/net/ipv6_route` show the main routing table only; default routes
///   in other policy-routing tables are not seen (list those gateways with `--allow`).
public enum DefaultRoutes: Sendable {
    /// One default route that is up.
    public struct Route: Hashable, Sendable {
        public var interface: String
        /// The next hop; `nil` for a route straight out of the interface (a point-to-point link, a tunnel).
        public var gateway: IPAddress?
        /// The kernel prefers the lowest metric.
        public var metric: UInt32
        public var isIPv6: Bool

        public init(interface: String, gateway: IPAddress?, metric: UInt32, isIPv6: Bool) {
            self.interface = interface
            self.gateway = gateway
            self.metric = metric
            self.isIPv6 = isIPv6
        }
    }

    /// The default routes in the two route tables, IPv4 first. A missing file (IPv6 disabled, a trimmed `/proc`)
    /// counts as no routes; any other read error is thrown.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) naming the file that could not be read.
    public static func read(
        ipv4RouteTable: String = "/proc/net/route",
        ipv6RouteTable: String = "/proc/net/ipv6_route"
    ) throws(ConntrackrError) -> [Route] {
        try ipv4(routeTable: load(ipv4RouteTable)) + ipv6(routeTable: load(ipv6RouteTable))
    }

    /// The distinct next hops of `routes`, in order.
    public static func gateways(_ routes: [Route]) -> [IPAddress] {
        var gateways: [IPAddress] = []
        for route in routes {
            if let gateway = route.gateway, !gateways.contains(gateway) { gateways.append(gateway) }
        }
        return gateways
    }

    /// The interface the kernel sends through by default: the IPv4 default route with the lowest metric, else the
    /// IPv6 one (the first listed on a tie).
    public static func preferredInterface(_ routes: [Route]) -> String? {
        let ipv4 = routes.filter { !$0.isIPv6 }
        let candidates = ipv4.isEmpty ? routes : ipv4
        return candidates.min { $0.metric < $1.metric }?.interface
    }

    /// Default routes in the text of `/proc/net/route`.
    ///
    /// Each line is `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses as 8 hex digits of
    /// the network-order value read as a native integer. A default route has destination and mask 0 and flag UP;
    /// its gateway counts when flag GATEWAY is set and it is not 0. Lines that do not parse (the header, junk)
    /// are skipped.
    public static func ipv4(routeTable bytes: [UInt8]) -> [Route] {
        var routes: [Route] = []
        for (_, line) in TextFile.lines(bytes) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 8,
                fields[1].count == 8, let destination = UInt32(fields[1], radix: 16),
                fields[2].count == 8, let gateway = UInt32(fields[2], radix: 16),
                let flags = UInt32(fields[3], radix: 16),
                // Signed on kernels that print it with %d: a metric of 2^32-1 reads "-1".
                let metric = Int64(fields[6]).map({ UInt32(truncatingIfNeeded: $0) }),
                fields[7].count == 8, let mask = UInt32(fields[7], radix: 16)
            else { continue }
            guard destination == 0, mask == 0, flags & routeUp != 0 else { continue }
            // The kernel printed the address's in-memory bytes as a native integer; reading the value back as
            // big-endian undoes that on any byte order.
            let nextHop = flags & routeGateway != 0 && gateway != 0 ? IPAddress(ipv4: UInt32(bigEndian: gateway)) : nil
            routes.append(Route(interface: String(fields[0]), gateway: nextHop, metric: metric, isIPv6: false))
        }
        return routes
    }

    /// Default routes in the text of `/proc/net/ipv6_route`.
    ///
    /// Each line is `dest dest_len src src_len next_hop metric refcnt use flags iface`, addresses as 32 hex
    /// digits in network order, numbers in hex. A default route has prefix length 0, flag UP and not REJECT; its
    /// next hop (usually link-local) counts when flag GATEWAY is set and it is not `::`.
    public static func ipv6(routeTable bytes: [UInt8]) -> [Route] {
        var routes: [Route] = []
        for (_, line) in TextFile.lines(bytes) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 10,
                let destinationLength = UInt8(fields[1], radix: 16),
                let nextHop = ipv6Address(hex: fields[4]),
                let metric = UInt32(fields[5], radix: 16),
                let flags = UInt32(fields[8], radix: 16),
                ipv6Address(hex: fields[0]) != nil
            else { continue }
            guard destinationLength == 0, flags & routeUp != 0, flags & routeReject == 0, fields[9] != "lo" else {
                continue
            }
            let gateway = flags & routeGateway != 0 && nextHop != IPAddress(high: 0, low: 0) ? nextHop : nil
            routes.append(Route(interface: String(fields[9]), gateway: gateway, metric: metric, isIPv6: true))
        }
        return routes
    }

    // From <linux/route.h>.
    private static let routeUp: UInt32 = 0x0001
    private static let routeGateway: UInt32 = 0x0002
    private static let routeReject: UInt32 = 0x0200

    private static func ipv6Address(hex: Substring) -> IPAddress? {
        guard hex.utf8.count == 32 else { return nil }
        let high = hex.prefix(16), low = hex.suffix(16)
        guard let highValue = UInt64(high, radix: 16), let lowValue = UInt64(low, radix: 16) else { return nil }
        return IPAddress(high: highValue, low: lowValue)
    }

    private static func load(_ path: String) throws(ConntrackrError) -> [UInt8] {
        do {
            // A kernel table, not a file a user wrote: no owner or mode to check.
            return try TextFile.contents(of: path, requiring: .any)
        } catch where error.errno == ENOENT {
            return []
        } catch {
            throw ConntrackrError(.invalidConfiguration, "cannot read route table \(path): \(error.text)")
        }
    }
}
