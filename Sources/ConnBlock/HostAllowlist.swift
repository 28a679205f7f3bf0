public import ConnCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds the ``Allowlist`` an agent runs with: addresses that must never be blocked, whatever a scan
/// seems to say, because a forged scan "from" them would turn the blocker against its own host.
///
/// In order, each with its reason: loopback (`loopback`, always), every address of this host on every
/// interface, IPv4 and IPv6 including link-local (`host address`), the default gateways (`gateway`), then the
/// `--allow` prefixes and the contents of each `--allow-file` (`configured`), then in fleet mode the addresses of
/// the fleet's store (`fleet infrastructure`) and the `--fleet-allow` prefixes (`fleet allow`). The first entry
/// that matches an address gives its reason. Build again on SIGHUP to pick up new addresses and edited files.
public struct HostAllowlist: Hashable, Sendable {
    /// Prefixes given with `--allow`.
    public var allowed: [IPPrefix]
    /// Paths given with `--allow-file`, in the format ``AllowFile`` reads.
    public var allowFiles: [String]
    /// The addresses of the fleet's store (etcd endpoints), never blocked so no record can cut the fleet off.
    public var fleetInfrastructure: [IPAddress]
    /// Prefixes given with `--fleet-allow`: the fleet-wide allowlist every agent applies.
    public var fleetAllowed: [IPPrefix]
    /// The kernel's IPv4 route table, `/proc/net/route` by default (tests pass fixtures).
    public var ipv4RouteTable: String
    /// The kernel's IPv6 route table, `/proc/net/ipv6_route` by default.
    public var ipv6RouteTable: String

    public init(
        allowed: [IPPrefix] = [],
        allowFiles: [String] = [],
        fleetInfrastructure: [IPAddress] = [],
        fleetAllowed: [IPPrefix] = [],
        ipv4RouteTable: String = "/proc/net/route",
        ipv6RouteTable: String = "/proc/net/ipv6_route"
    ) {
        self.allowed = allowed
        self.allowFiles = allowFiles
        self.fleetInfrastructure = fleetInfrastructure
        self.fleetAllowed = fleetAllowed
        self.ipv4RouteTable = ipv4RouteTable
        self.ipv6RouteTable = ipv6RouteTable
    }

    /// Reads this host's addresses, route tables and allow files, and builds the allowlist.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) for an unreadable or malformed allow file or route
    ///   table, or when the interface addresses cannot be listed.
    public func build() throws(ConntrackrError) -> Allowlist {
        try build(hostAddresses: HostAddresses.current())
    }

    /// Builds the allowlist with `hostAddresses` standing for this host's addresses.
    public func build(hostAddresses: [IPAddress]) throws(ConntrackrError) -> Allowlist {
        var entries: [Allowlist.Entry] = []
        let base = Allowlist()
        func add(_ prefix: IPPrefix, _ reason: Allowlist.Reason) {
            // An address already listed keeps its first, more specific reason (127.0.0.1 stays "loopback").
            let listed = (base.entries + entries).contains { $0.prefix == prefix }
            if listed { return }
            entries.append(Allowlist.Entry(prefix: prefix, reason: reason))
        }
        for address in hostAddresses where !address.isLoopback { add(IPPrefix(host: address), .hostAddress) }
        let routes = try DefaultRoutes.read(ipv4RouteTable: ipv4RouteTable, ipv6RouteTable: ipv6RouteTable)
        let gateways = DefaultRoutes.gateways(routes)
        for gateway in gateways { add(IPPrefix(host: gateway), .gateway) }
        for prefix in allowed { add(prefix, .configured) }
        for path in allowFiles {
            for prefix in try AllowFile.load(path: path) { add(prefix, .configured) }
        }
        for address in fleetInfrastructure where !address.isLoopback { add(IPPrefix(host: address), .fleetInfrastructure) }
        for prefix in fleetAllowed { add(prefix, .fleetAllowed) }
        return Allowlist(entries)
    }
}

/// The addresses assigned to this host's interfaces.
public enum HostAddresses: Sendable {
    /// Every IPv4 and IPv6 address on every interface (up or down, link-local included), in ascending order.
    /// - Throws: ``ConntrackrError`` (`invalidConfiguration`) when `getifaddrs` fails.
    public static func current() throws(ConntrackrError) -> [IPAddress] {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0 else {
            throw ConntrackrError(
                .invalidConfiguration,
                "cannot list this host's addresses: getifaddrs: \(String(cString: strerror(errno)))"
            )
        }
        defer { freeifaddrs(head) }
        var addresses: Set<IPAddress> = []
        var cursor = head
        while let entry = cursor {
            cursor = entry.pointee.ifa_next
            guard let socketAddress = entry.pointee.ifa_addr, let address = IPAddress(socketAddress: socketAddress)
            else { continue }
            addresses.insert(address)
        }
        return addresses.sorted()
    }
}
