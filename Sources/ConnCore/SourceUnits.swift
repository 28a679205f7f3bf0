import Synchronization

/// What the scan rule counts a source as, and what blocking it blocks: the source's *unit*. The unit counted is the
/// unit blocked, in the detector, in ``BlockController`` and in the XDP program.
///
/// - An IPv4 source is its own unit (/32).
/// - An IPv6 source is its ``ipv6PrefixLength`` prefix (default /64): one host owns a whole /64 and can take a new
///   address of it for every few ports, so ports are counted for the prefix, not the address.
/// - Except inside a *shared unit*, a prefix that holds an allowlisted address more specific than itself (this
///   host's own address, a gateway, a configured /128): there each source is its own unit (/128). A neighbour in the
///   host's own /64 is then counted and blocked as itself, where blocking its /64 would block the host's prefix.
///   The XDP program applies the same rule from its map of shared units, filled from ``sharedUnits(of:ipv6PrefixLength:)``.
///
/// Shared by the detector (on the capture thread) and the ``BlockController``; the allowlist may be replaced from
/// any thread (reloads, address changes).
public final class SourceUnits: Sendable {
    /// IPv6 sources are counted and blocked as this prefix of their address, 1 to 128.
    public let ipv6PrefixLength: Int
    private let shared: Mutex<Set<IPPrefix>>

    /// Units of `ipv6PrefixLength` bits (clamped to 1...128), with the shared units of `allowlist`.
    public init(ipv6PrefixLength: Int = BlockPolicy().ipv6PrefixLength, allowlist: Allowlist = Allowlist()) {
        let length = min(max(ipv6PrefixLength, 1), 128)
        self.ipv6PrefixLength = length
        self.shared = Mutex(Self.sharedUnits(of: allowlist, ipv6PrefixLength: length))
    }

    /// The unit of `source`.
    public func unit(of source: IPAddress) -> IPPrefix {
        guard !source.isIPv4, let unit = IPPrefix(address: source, length: ipv6PrefixLength) else {
            return IPPrefix(host: source)
        }
        return shared.withLock { $0.contains(unit) } ? IPPrefix(host: source) : unit
    }

    /// Takes the shared units from `allowlist` from now on.
    public func replaceAllowlist(_ allowlist: Allowlist) {
        let units = Self.sharedUnits(of: allowlist, ipv6PrefixLength: ipv6PrefixLength)
        shared.withLock { $0 = units }
    }

    /// The IPv6 units of `ipv6PrefixLength` bits that hold an allowlisted prefix more specific than themselves.
    public static func sharedUnits(of allowlist: Allowlist, ipv6PrefixLength: Int) -> Set<IPPrefix> {
        let length = min(max(ipv6PrefixLength, 1), 128)
        return Set(
            allowlist.entries.map(\.prefix).filter { !$0.address.isIPv4 && $0.length > length }
                .compactMap { IPPrefix(address: $0.address, length: length) }
        )
    }
}
