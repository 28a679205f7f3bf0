public import ConnCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One block as the fleet shares it: the value stored under ``FleetKeys/key(for:)``.
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

    /// The record of a block this agent made because of `scan`.
    public init(entry: BlockEntry, scan: PortScan?, host: String) {
        self.init(
            prefix: entry.prefix,
            host: host,
            reason: entry.reason,
            ports: scan?.ports ?? [],
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

/// Where blocks live in the store: one key per prefix under a common key prefix.
///
/// The prefix's `/` becomes `_`, so `198.51.100.7/32` under `/conntrackr/blocks/` is
/// `/conntrackr/blocks/198.51.100.7_32`, and `2001:db8::/64` is `/conntrackr/blocks/2001:db8::_64`. One key per
/// prefix means two hosts blocking the same scanner share one key: the later publication wins, with its lease.
public struct FleetKeys: Hashable, Sendable {
    /// The common key prefix, always ending in `/`.
    public let prefix: String

    /// - Parameter prefix: such as `/conntrackr/blocks`; a missing trailing `/` is added.
    public init(prefix: String) {
        self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// The key of `blocked`.
    public func key(for blocked: IPPrefix) -> String {
        prefix + String(blocked.description.map { $0 == "/" ? "_" : $0 })
    }

    /// The prefix a key names, or `nil` for a key this scheme did not make.
    public func blockedPrefix(fromKey key: String) -> IPPrefix? {
        guard key.hasPrefix(prefix) else { return nil }
        let name = key.dropFirst(prefix.count)
        return IPPrefix(String(name.map { $0 == "_" ? "/" : $0 }))
    }
}
