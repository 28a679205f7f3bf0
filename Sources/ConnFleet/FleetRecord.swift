public import ConnCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One block as the fleet shares it: the value stored under ``FleetKeys/key(for:host:)``.
///
/// Stored as JSON so that people can read it with `etcdctl get --prefix /conntrackr/blocks/`:
///
/// ```json
/// {"prefix":"198.51.100.7/32","host":"web-1","reason":"port_scan","ports":[22,80,443,8080],
///  "time":"2026-11-23T01:32:23.123456Z","since_ns":1795397543123456000,"expires_ns":1795401143123456000}
/// ```
///
/// `time` repeats `since_ns` for readers; `expires_ns` is absent for a permanent block.
public struct FleetRecord: Hashable, Sendable {
    /// The blocked prefix.
    public var prefix: IPPrefix
    /// The host that decided the block.
    public var host: String
    public var reason: BlockReason
    /// The ports the scan reached (empty for blocks not made from a scan).
    public var ports: [UInt16]
    /// When the block was made, on the reporting host's clock.
    public var since: Timestamp
    /// When the block lapses; `nil` for a permanent block.
    public var expires: Timestamp?

    public init(
        prefix: IPPrefix,
        host: String,
        reason: BlockReason,
        ports: [UInt16],
        since: Timestamp,
        expires: Timestamp?
    ) {
        self.prefix = prefix
        self.host = host
        self.reason = reason
        self.ports = ports
        self.since = since
        self.expires = expires
    }

    /// The record of a block this agent made because of `scan`; at most ``FleetTrust/maxPorts`` ports are kept.
    public init(entry: BlockEntry, scan: PortScan?, host: String) {
        self.init(
            prefix: entry.prefix,
            host: host,
            reason: entry.reason,
            ports: Array((scan?.ports ?? []).prefix(FleetTrust.maxPorts)),
            since: entry.since,
            expires: entry.expires
        )
    }

    /// The entry that applying this record adds to the local blocklist.
    public var learnedEntry: BlockEntry {
        BlockEntry(prefix: prefix, reason: reason, origin: .fleet, since: since, expires: expires)
    }

    /// Whether the block has lapsed by `now`.
    public func hasExpired(at now: Timestamp) -> Bool {
        expires.map { $0 <= now } ?? false
    }

    /// The JSON stored in the fleet store.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain strings and integers cannot fail.
        return (try? Array(encoder.encode(self))) ?? []
    }

    /// Decodes a stored record; throws a ``FleetError`` with code ``FleetError/Code/malformedRecord`` naming what is
    /// wrong.
    public init(decoding bytes: [UInt8]) throws {
        do {
            self = try JSONDecoder().decode(FleetRecord.self, from: Data(bytes))
        } catch let error as FleetError {
            throw error
        } catch {
            throw FleetError(.malformedRecord, "fleet record is not valid JSON of a block: \(error)")
        }
    }
}

extension FleetRecord: Codable {
    private enum CodingKeys: String, CodingKey {
        case prefix, host, reason, ports, time
        case sinceNanoseconds = "since_ns"
        case expiresNanoseconds = "expires_ns"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let prefixText = try container.decode(String.self, forKey: .prefix)
        guard let prefix = IPPrefix(prefixText) else {
            throw FleetError(.malformedRecord, "fleet record has an invalid prefix \"\(prefixText.prefix(64))\"")
        }
        self.prefix = prefix
        self.host = try container.decode(String.self, forKey: .host)
        let reasonText = try container.decode(String.self, forKey: .reason)
        // A reason this version does not know (a newer agent's) still blocks: the prefix is what matters.
        self.reason = BlockReason(rawValue: reasonText) ?? .portScan
        self.ports = try container.decodeIfPresent([UInt16].self, forKey: .ports) ?? []
        self.since = Timestamp(nanoseconds: try container.decode(Int64.self, forKey: .sinceNanoseconds))
        self.expires = try container.decodeIfPresent(Int64.self, forKey: .expiresNanoseconds).map {
            Timestamp(nanoseconds: $0)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(prefix.description, forKey: .prefix)
        try container.encode(host, forKey: .host)
        try container.encode(reason.rawValue, forKey: .reason)
        try container.encode(ports, forKey: .ports)
        try container.encode(since.description, forKey: .time)
        try container.encode(since.nanoseconds, forKey: .sinceNanoseconds)
        try container.encodeIfPresent(expires?.nanoseconds, forKey: .expiresNanoseconds)
    }
}

/// Where blocks live in the store: one key per host and prefix, each host's reports under a key prefix of its own.
///
/// `198.51.100.7/32` reported by `web-1` under `/conntrackr/blocks/` is `/conntrackr/blocks/web-1/198.51.100.7_32`
/// (the prefix's `/` becomes `_`), and `2001:db8::/64` is `/conntrackr/blocks/web-1/2001:db8::_64`. Two hosts
/// blocking the same scanner write two keys, so an agent can count how many hosts reported a source
/// (``FleetTrust/minReporters``), and etcd's permission model, which grants key prefixes, can let each host write
/// only under `/conntrackr/blocks/HOST/` while an operator role deletes anywhere (fleet-wide unblock deletes every
/// host's report of the prefix).
///
/// Every key has exactly one spelling: ``parse(_:)`` accepts a key only when ``key(for:host:)`` of what it names
/// gives the same key back, so aliases (`128.0.0.1_1` for `128.0.0.0/1`, `::ffff:` forms, upper-case IPv6) are
/// refused rather than applied as a second copy.
public struct FleetKeys: Hashable, Sendable {
    /// The common key prefix, always ending in `/`.
    public let prefix: String

    /// - Parameter prefix: such as `/conntrackr/blocks`; a missing trailing `/` is added.
    public init(prefix: String) {
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// The key of `host`'s report of `blocked`.
    public func key(for blocked: IPPrefix, host: String) -> String {
        hostPrefix(host) + String(blocked.description.map { $0 == "/" ? "_" : $0 })
    }

    /// The key prefix under which `host` writes its reports: what an etcd role for that host is granted.
    public func hostPrefix(_ host: String) -> String {
        prefix + host + "/"
    }

    /// The host and prefix a key names, or `nil` for a key that is not the canonical key of a host's report.
    public func parse(_ key: String) -> (host: String, blocked: IPPrefix)? {
        guard key.utf8.count <= FleetTrust.maxKeyBytes, key.hasPrefix(prefix) else { return nil }
        let rest = key.dropFirst(prefix.count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let host = String(rest[..<slash])
        guard Self.isValidHostName(host),
            let blocked = IPPrefix(String(rest[rest.index(after: slash)...].map { $0 == "_" ? "/" : $0 })),
            self.key(for: blocked, host: host) == key
        else { return nil }
        return (host, blocked)
    }

    /// Whether `name` can name a host in a key: 1 to ``FleetTrust/maxHostBytes`` letters, digits, `.`, `-` or
    /// `_`, and not `.` or `..`.
    public static func isValidHostName(_ name: String) -> Bool {
        guard (1...FleetTrust.maxHostBytes).contains(name.utf8.count), name != ".", name != ".." else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
                true
            default:
                false
            }
        }
    }
}
