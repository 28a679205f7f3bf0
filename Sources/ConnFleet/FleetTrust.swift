public import ConnCore

/// What an agent accepts from the fleet store, whoever wrote it: every record is checked here before anything is
/// applied, so that a host (or anyone with write access to etcd) cannot turn the fleet against itself.
///
/// The rules, in order, each refusal counted by its ``ConnCore/FleetRefusalReason``:
/// - the key and the value are within ``maxKeyBytes`` and ``maxValueBytes`` (`too_large`);
/// - the key is the canonical key of a host's report (``FleetKeys/parse(_:)``; `key`);
/// - the value decodes as a ``FleetRecord`` (`malformed`) whose prefix and host are the key's (`key`) and which
///   has at most ``maxPorts`` ports (`too_large`);
/// - the prefix is no wider than ``widestIPv4`` or ``widestIPv6``: by default the prefix lengths of the fleet's
///   automatic blocks, so a record for `128.0.0.0/1` is refused (`too_wide`);
/// - the times are clamped, never refused: the start to now at the latest, the expiry to the start plus
///   ``maxLifetime`` at the latest; a record without expiry (permanent) is clamped the same way unless
///   ``allowPermanent``.
public struct FleetTrust: Hashable, Sendable {
    /// The widest IPv4 prefix accepted (the smallest length). Default 32: single addresses, as the fleet blocks.
    public var widestIPv4: Int
    /// The widest IPv6 prefix accepted. Default 64, the default ``ConnCore/BlockPolicy/ipv6PrefixLength``.
    public var widestIPv6: Int
    /// The longest a learned block lasts from its start: normally the local block TTL.
    public var maxLifetime: Duration
    /// Whether records without expiry stay permanent here; otherwise they last ``maxLifetime``. Default off.
    public var allowPermanent: Bool
    /// How many distinct hosts must have reported a prefix (with unexpired records) before it is applied here.
    /// Default 1: any one host's report is applied.
    public var minReporters: Int
    /// The most reports kept from the store (a listing and what watches add); beyond it they are not read.
    /// Default 100,000.
    public var maxRecords: Int
    /// The most bytes of values one listing reads. Default 64 MiB.
    public var maxListingBytes: Int

    /// The longest key read (longer ones are refused unread).
    public static let maxKeyBytes = 512
    /// The largest value read.
    public static let maxValueBytes = 16 << 10
    /// The longest host name in a key or record.
    public static let maxHostBytes = 128
    /// The most ports a record may list (a publisher keeps the first ones).
    public static let maxPorts = 2048

    public init(
        widestIPv4: Int = 32,
        widestIPv6: Int = 64,
        maxLifetime: Duration = .seconds(3600),
        allowPermanent: Bool = false,
        minReporters: Int = 1,
        maxRecords: Int = 100_000,
        maxListingBytes: Int = 64 << 20
    ) {
        self.widestIPv4 = widestIPv4
        self.widestIPv6 = widestIPv6
        self.maxLifetime = maxLifetime
        self.allowPermanent = allowPermanent
        self.minReporters = minReporters
        self.maxRecords = maxRecords
        self.maxListingBytes = maxListingBytes
    }

    /// The record stored as `value` under `key`, with its times clamped, ready to apply.
    /// - Throws: a ``FleetRecordRefusal`` saying why it may not be applied.
    public func check(key: String, value: [UInt8], keys: FleetKeys, now: Timestamp) throws(FleetRecordRefusal)
        -> FleetRecord
    {
        func refuse(_ reason: FleetRefusalReason, _ message: String) -> FleetRecordRefusal {
            FleetRecordRefusal(reason: reason, key: String(key.prefix(200)), message: message)
        }
        guard key.utf8.count <= Self.maxKeyBytes else {
            throw refuse(.tooLarge, "key of \(key.utf8.count) bytes (at most \(Self.maxKeyBytes))")
        }
        guard value.count <= Self.maxValueBytes else {
            throw refuse(.tooLarge, "value of \(value.count) bytes (at most \(Self.maxValueBytes))")
        }
        guard let named = keys.parse(key) else {
            throw refuse(.key, "not the canonical key of a host's report (\(keys.prefix)HOST/ADDRESS_LENGTH)")
        }
        var record: FleetRecord
        do {
            record = try FleetRecord(decoding: value)
        } catch {
            throw refuse(.malformed, "\(error)")
        }
        guard record.prefix == named.blocked, record.host == named.host else {
            throw refuse(.key, "record of \(record.prefix) by \"\(record.host.prefix(64))\" under another key")
        }
        guard record.ports.count <= Self.maxPorts else {
            throw refuse(.tooLarge, "\(record.ports.count) ports (at most \(Self.maxPorts))")
        }
        let widest = record.prefix.address.isIPv4 ? widestIPv4 : widestIPv6
        guard record.prefix.length >= widest else {
            throw refuse(.tooWide, "\(record.prefix) is wider than /\(widest), the widest this fleet applies")
        }
        record.since = min(record.since, now)
        let latest = record.since + maxLifetime
        if let expires = record.expires {
            record.expires = min(expires, latest)
        } else if !allowPermanent {
            record.expires = latest
        }
        return record
    }
}

/// Why one fleet record is not applied: the reason counted, and one line for the log.
public struct FleetRecordRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: FleetRefusalReason
    /// The key, cut to 200 characters.
    public var key: String
    public var message: String

    public init(reason: FleetRefusalReason, key: String, message: String) {
        self.reason = reason
        self.key = key
        self.message = message
    }

    public var description: String { "\(reason.rawValue): \(message)" }
}

/// The fleet's checked reports, by prefix and host: what the store holds that this agent may apply. Pure.
public struct FleetReports: Hashable, Sendable {
    private var byPrefix: [IPPrefix: [String: FleetRecord]] = [:]
    /// How many reports are kept.
    public private(set) var count = 0

    public init() {}

    /// Every prefix reported.
    public var prefixes: Dictionary<IPPrefix, [String: FleetRecord]>.Keys { byPrefix.keys }

    /// Adds or replaces `record` (by its prefix and host).
    public mutating func put(_ record: FleetRecord) {
        if byPrefix[record.prefix, default: [:]].updateValue(record, forKey: record.host) == nil { count += 1 }
    }

    /// Removes `host`'s report of `blocked` and returns it.
    @discardableResult
    public mutating func remove(_ blocked: IPPrefix, host: String) -> FleetRecord? {
        guard let removed = byPrefix[blocked]?.removeValue(forKey: host) else { return nil }
        count -= 1
        if byPrefix[blocked]?.isEmpty == true { byPrefix[blocked] = nil }
        return removed
    }

    /// `host`'s report of `blocked`.
    public func report(of blocked: IPPrefix, by host: String) -> FleetRecord? {
        byPrefix[blocked]?[host]
    }

    /// The record to reconcile `blocked` with: when at least `minReporters` distinct hosts have unexpired reports
    /// of it, the one that lasts longest; when every report has expired, the last to expire (the local sweep lifts
    /// the block as expired); otherwise `nil` (not reported, or by too few hosts).
    public func effective(for blocked: IPPrefix, minReporters: Int, now: Timestamp) -> FleetRecord? {
        guard let reports = byPrefix[blocked]?.values, !reports.isEmpty else { return nil }
        let live = reports.filter { !$0.hasExpired(at: now) }
        if live.isEmpty { return reports.max(by: Self.expiresEarlier) }
        guard live.count >= max(minReporters, 1) else { return nil }
        return live.max(by: Self.expiresEarlier)
    }

    /// Whether `lhs` lapses before `rhs` (a permanent record lapses last); ties go by host name, for a stable
    /// choice.
    private static func expiresEarlier(_ lhs: FleetRecord, _ rhs: FleetRecord) -> Bool {
        switch (lhs.expires, rhs.expires) {
        case (nil, nil): lhs.host < rhs.host
        case (nil, _): false
        case (_, nil): true
        case (let left?, let right?): left == right ? lhs.host < rhs.host : left < right
        }
    }
}
