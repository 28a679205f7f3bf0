public import ConnCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The next hops of this host's default routes, read from the kernel's route tables in `/proc`.
///
/// A forged scan "from" the gateway must never get the gateway blocked: that would cut the host off.
/// - Important: `/proc/net/route` and `/proc/net/ipv6_route` show the main routing table only; default routes
///   in other policy-routing tables are not seen (list those gateways with `--allow`).
public enum DefaultGateways: Sendable {
    /// The default gateways in the two route tables. A missing file (IPv6 disabled, a trimmed `/proc`) counts as
    /// no routes; any other read error is thrown.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) naming the file that could not be read.
    public static func read(
        ipv4RouteTable: String = "/proc/net/route",
        ipv6RouteTable: String = "/proc/net/ipv6_route"
    ) throws(ConntrackrError) -> [IPAddress] {
        try ipv4(routeTable: load(ipv4RouteTable)) + ipv6(routeTable: load(ipv6RouteTable))
    }

    /// Default gateways in the text of `/proc/net/route`.
    ///
    /// Each line is `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses as 8 hex digits of
    /// the network-order value read as a native integer. A default route has destination and mask 0, flags UP
    /// and GATEWAY, and a non-zero gateway. Lines that do not parse (the header, junk) are skipped.
    public static func ipv4(routeTable bytes: [UInt8]) -> [IPAddress] {
        var gateways: [IPAddress] = []
        for (_, line) in TextFile.lines(bytes) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 8,
                fields[1].count == 8, let destination = UInt32(fields[1], radix: 16),
                fields[2].count == 8, let gateway = UInt32(fields[2], radix: 16),
                let flags = UInt32(fields[3], radix: 16),
                fields[7].count == 8, let mask = UInt32(fields[7], radix: 16)
            else { continue }
            guard destination == 0, mask == 0, flags & routeUp != 0, flags & routeGateway != 0, gateway != 0 else {
                continue
            }
            // The kernel printed the address's in-memory bytes as a native integer; reading the value back as
            // big-endian undoes that on any byte order.
            let address = IPAddress(ipv4: UInt32(bigEndian: gateway))
            if !gateways.contains(address) { gateways.append(address) }
        }
        return gateways
    }

    /// Default gateways in the text of `/proc/net/ipv6_route`.
    ///
    /// Each line is `dest dest_len src src_len next_hop metric refcnt use flags iface`, addresses as 32 hex
    /// digits in network order. A default route has prefix length 0, flags UP and GATEWAY and not REJECT, and a
    /// non-zero next hop (usually link-local).
    public static func ipv6(routeTable bytes: [UInt8]) -> [IPAddress] {
        var gateways: [IPAddress] = []
        for (_, line) in TextFile.lines(bytes) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 10,
                let destinationLength = UInt8(fields[1], radix: 16),
                let nextHop = ipv6Address(hex: fields[4]),
                let flags = UInt32(fields[8], radix: 16),
                ipv6Address(hex: fields[0]) != nil
            else { continue }
            guard destinationLength == 0, flags & routeUp != 0, flags & routeGateway != 0, flags & routeReject == 0,
                nextHop != IPAddress(high: 0, low: 0)
            else { continue }
            if !gateways.contains(nextHop) { gateways.append(nextHop) }
        }
        return gateways
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
            return try TextFile.contents(of: path)
        } catch where error.errno == ENOENT {
            return []
        } catch {
            throw ConntrackrError(.invalidConfiguration, "cannot read route table \(path): \(error.text)")
        }
    }
}
