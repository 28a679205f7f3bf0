import ConnCore

/// The nftables commands an ``NftablesBlocker`` runs through libnftables. Each script is one transaction: the kernel
/// applies all of it or none of it.
struct NftablesScript: Hashable, Sendable {
    static let family = "inet"
    static let chain = "prerouting"
    static let blocked4 = "blocked4"
    static let blocked6 = "blocked6"
    static let allowed4 = "allowed4"
    static let allowed6 = "allowed6"
    /// Longer timeouts are not put into the kernel (nft refuses some large values); such entries are lifted by the
    /// agent's expiry sweep instead.
    static let longestKernelTimeout: Duration = .seconds(365 * 86_400)

    /// The table name, already checked to be a plain nftables identifier.
    let table: String

    private var qualified: String { "\(Self.family) \(table)" }

    /// Replaces any table of this name with an empty one: allow sets accepted first, then block sets dropped,
    /// in a base chain at the raw priority (-300), before connection tracking spends any work on the packet.
    func create(allowing allowed: [IPPrefix]) -> String {
        var lines = [
            // "table" first makes the "delete" valid when no such table exists yet.
            "table \(qualified)",
            "delete table \(qualified)",
            "table \(qualified) {",
            "    set \(Self.allowed4) { type ipv4_addr; flags interval; auto-merge; }",
            "    set \(Self.allowed6) { type ipv6_addr; flags interval; auto-merge; }",
            "    set \(Self.blocked4) { type ipv4_addr; flags interval, timeout; counter; }",
            "    set \(Self.blocked6) { type ipv6_addr; flags interval, timeout; counter; }",
            "    chain \(Self.chain) {",
            "        type filter hook prerouting priority raw; policy accept;",
            "        ip saddr @\(Self.allowed4) accept",
            "        ip6 saddr @\(Self.allowed6) accept",
            "        ip saddr @\(Self.blocked4) drop",
            "        ip6 saddr @\(Self.blocked6) drop",
            "    }",
            "}",
        ]
        lines += addAllowed(allowed)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Adds and deletes an element in each block set, changing nothing: the first element a fresh set takes costs
    /// a few milliseconds more than later ones, which the first scanner's block should not pay.
    func warm() -> String {
        """
        add element \(qualified) \(Self.blocked4) { 0.0.0.0 }
        delete element \(qualified) \(Self.blocked4) { 0.0.0.0 }
        add element \(qualified) \(Self.blocked6) { :: }
        delete element \(qualified) \(Self.blocked6) { :: }

        """
    }

    /// Deletes the table; nothing happens when it does not exist.
    func delete() -> String {
        "table \(qualified)\ndelete table \(qualified)\n"
    }

    /// Replaces the contents of the allow sets.
    func replaceAllowed(_ allowed: [IPPrefix]) -> String {
        let lines = [
            "flush set \(qualified) \(Self.allowed4)",
            "flush set \(qualified) \(Self.allowed6)",
        ]
        return (lines + addAllowed(allowed)).joined(separator: "\n") + "\n"
    }

    /// Adds `entry`, replacing an element for the same prefix. The element carries the entry in its comment
    /// (so another process listing the table sees reason, origin and times) and a kernel timeout of `timeout`
    /// (`nil`: none).
    func add(_ entry: BlockEntry, timeout: Duration?) -> String {
        let set = Self.set(for: entry.prefix)
        let value = Self.element(entry.prefix)
        let element = Self.element(entry, timeout: timeout)
        // "add" of an existing element changes nothing, so: make sure it exists, delete it, add it afresh.
        return """
            add element \(qualified) \(set) { \(value) }
            delete element \(qualified) \(set) { \(value) }
            add element \(qualified) \(set) { \(element) }

            """
    }

    /// Adds `entry` as a new element, which the kernel refuses ("File exists") when the set holds the prefix
    /// already: one command where ``add(_:timeout:)`` needs three, for the first block of a prefix.
    func create(_ entry: BlockEntry, timeout: Duration?) -> String {
        "create element \(qualified) \(Self.set(for: entry.prefix)) { \(Self.element(entry, timeout: timeout)) }\n"
    }

    private static func element(_ entry: BlockEntry, timeout: Duration?) -> String {
        var element = Self.element(entry.prefix)
        if let timeout { element += " timeout \(Self.format(timeout))" }
        return element + " comment \"\(EntryComment.encode(entry))\""
    }

    /// Deletes the elements for `prefixes`, whether or not they still exist (one may time out meanwhile).
    func remove(_ prefixes: [IPPrefix]) -> String {
        var lines: [String] = []
        for prefix in prefixes {
            let set = Self.set(for: prefix)
            let value = Self.element(prefix)
            lines.append("add element \(qualified) \(set) { \(value) }")
            lines.append("delete element \(qualified) \(set) { \(value) }")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func addAllowed(_ allowed: [IPPrefix]) -> [String] {
        var lines: [String] = []
        for (set, family) in [
            (Self.allowed4, allowed.filter { $0.address.isIPv4 }),
            (Self.allowed6, allowed.filter { !$0.address.isIPv4 }),
        ]
        where !family.isEmpty {
            lines.append("add element \(qualified) \(set) { \(family.map(Self.element).joined(separator: ", ")) }")
        }
        return lines
    }

    static func set(for prefix: IPPrefix) -> String {
        prefix.address.isIPv4 ? blocked4 : blocked6
    }

    /// A prefix as nft writes it: a bare address for a host, `address/length` otherwise.
    static func element(_ prefix: IPPrefix) -> String {
        prefix.compactDescription
    }

    /// A timeout in nft's syntax, rounded up to the millisecond. Seconds and milliseconds are written apart
    /// because nft refuses a millisecond count above about 2^31.
    static func format(_ timeout: Duration) -> String {
        let nanoseconds = max(timeout.nanosecondsClamped, 1)
        let milliseconds = (nanoseconds + 999_999) / 1_000_000
        let (seconds, rest) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        switch (seconds, rest) {
        case (0, _): return "\(rest)ms"
        case (_, 0): return "\(seconds)s"
        default: return "\(seconds)s\(rest)ms"
        }
    }
}

/// A ``BlockEntry`` stored in an nftables element comment: `conntrackr REASON ORIGIN SINCE EXPIRES`, times in
/// nanoseconds since the epoch, `-` for no expiry.
enum EntryComment {
    static func encode(_ entry: BlockEntry) -> String {
        let expires = entry.expires.map { String($0.nanoseconds) } ?? "-"
        return "conntrackr \(entry.reason.rawValue) \(entry.origin.rawValue) \(entry.since.nanoseconds) \(expires)"
    }

    /// The entry for `prefix` a comment describes; `nil` when the comment is not one of ours.
    static func decode(_ comment: String, prefix: IPPrefix, droppedPackets: UInt64) -> BlockEntry? {
        let words = comment.split(separator: " ")
        guard words.count == 5, words[0] == "conntrackr",
            let reason = BlockReason(rawValue: String(words[1])),
            let origin = BlockOrigin(rawValue: String(words[2])),
            let since = Int64(words[3])
        else { return nil }
        let expires: Timestamp?
        if words[4] == "-" {
            expires = nil
        } else if let nanoseconds = Int64(words[4]) {
            expires = Timestamp(nanoseconds: nanoseconds)
        } else {
            return nil
        }
        return BlockEntry(
            prefix: prefix,
            reason: reason,
            origin: origin,
            since: Timestamp(nanoseconds: since),
            expires: expires,
            droppedPackets: droppedPackets
        )
    }
}
