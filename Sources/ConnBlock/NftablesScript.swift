import ConnCore

/// A set of conntrackr's table that holds blocks. Automatic blocks (what scanners are blocked as) go into exact-match
/// hash sets, which the kernel updates and looks up in constant time, written over netlink; every other prefix goes
/// into an interval set, written through libnftables.
enum NftablesBlockSet: Hashable, Sendable {
    /// Single IPv4 addresses (/32), exact match.
    case hosts4
    /// IPv6 prefixes of one length (the agent's `--ipv6-block-prefix`), exact match on the source address masked to
    /// that length. The length is in the set's name (`units6_64`), so that any process reading the table knows it.
    case units6(length: Int)
    /// Any other IPv4 prefix (`blocked4`, an interval set).
    case prefixes4
    /// Any other IPv6 prefix (`blocked6`, an interval set).
    case prefixes6

    private static let units6Stem = "units6_"

    /// The set's name in the table.
    var name: String {
        switch self {
        case .hosts4: "hosts4"
        case .units6(let length): Self.units6Stem + String(length)
        case .prefixes4: "blocked4"
        case .prefixes6: "blocked6"
        }
    }

    /// The set named `name`; `nil` for a set that holds no blocks (or a `units6_` length out of 1...128).
    init?(name: String) {
        switch name {
        case "hosts4": self = .hosts4
        case "blocked4": self = .prefixes4
        case "blocked6": self = .prefixes6
        default:
            guard name.hasPrefix(Self.units6Stem), let length = Int(name.dropFirst(Self.units6Stem.count)),
                (1...128).contains(length)
            else { return nil }
            self = .units6(length: length)
        }
    }

    /// Whether elements are exact keys (written over netlink) rather than intervals (written through libnftables).
    var isExact: Bool {
        switch self {
        case .hosts4, .units6: true
        case .prefixes4, .prefixes6: false
        }
    }

    /// The set's declaration in the table: its key type and flags.
    var declaration: String {
        switch self {
        case .hosts4: "type ipv4_addr; flags timeout; counter;"
        case .units6: "type ipv6_addr; flags timeout; counter;"
        case .prefixes4: "type ipv4_addr; flags interval, timeout; counter;"
        case .prefixes6: "type ipv6_addr; flags interval, timeout; counter;"
        }
    }

    /// What the chain looks the set up with: the packet's source address, masked to a unit set's length.
    var match: String {
        switch self {
        case .hosts4, .prefixes4: "ip saddr"
        // A unit of 128 bits is the whole address: no mask to apply.
        case .units6(128), .prefixes6: "ip6 saddr"
        case .units6(let length): "ip6 saddr & \(NftablesScript.mask(length: length))"
        }
    }

    /// The all-zero address of the set's family: the element a warm-up adds and deletes.
    var zeroKey: IPAddress {
        switch self {
        case .hosts4, .prefixes4: IPAddress(ipv4: 0)
        case .units6, .prefixes6: IPAddress(high: 0, low: 0)
        }
    }

    /// The block an element of this set stands for: a key of an exact set is widened to the set's length. `nil`
    /// for an element of the wrong family or shape.
    func prefix(of element: IPPrefix) -> IPPrefix? {
        switch self {
        case .hosts4:
            element.address.isIPv4 && element.length == 32 ? element : nil
        case .units6(let length):
            element.address.isIPv4 || element.length != 128 ? nil : IPPrefix(address: element.address, length: length)
        case .prefixes4:
            element.address.isIPv4 ? element : nil
        case .prefixes6:
            element.address.isIPv4 ? nil : element
        }
    }
}

/// The nftables changes an ``NftablesBlocker`` makes: commands run through libnftables (the table, the allow sets,
/// blocks of CIDR prefixes in the interval sets) and element changes written over netlink (blocks in the exact
/// sets). Each script and each list of changes is one transaction: the kernel applies all of it or none of it.
struct NftablesScript: Hashable, Sendable {
    static let family = "inet"
    static let chain = "prerouting"
    static let allowed4 = "allowed4"
    static let allowed6 = "allowed6"
    /// Longer timeouts are not put into the kernel (nft refuses some large values); such entries are lifted by the
    /// agent's expiry sweep instead.
    static let longestKernelTimeout: Duration = .seconds(365 * 86_400)

    /// The table name, already checked to be a plain nftables identifier.
    let table: String
    /// The length IPv6 sources are blocked as (1...128): the exact IPv6 set holds prefixes of this length.
    let ipv6UnitLength: Int
    /// The scan rule's guard, when the table enforces it (kernel enforcement).
    var scanGuard: NftablesScanGuard? = nil

    private var qualified: String { "\(Self.family) \(table)" }
    private var units6: NftablesBlockSet { .units6(length: ipv6UnitLength) }
    /// The exact IPv6 sets: the unit length's, and single addresses (`units6_128`) when the unit is wider, for the
    /// sources blocked as themselves (one whose unit is shared, such as a neighbour in the host's own /64).
    private var exact6: [NftablesBlockSet] {
        ipv6UnitLength == 128 ? [units6] : [units6, .units6(length: 128)]
    }
    /// Every block set of the table, in the order the chain looks them up: the exact sets, then the interval sets.
    private var blockSets: [NftablesBlockSet] { [.hosts4] + exact6 + [.prefixes4, .prefixes6] }

    /// The set that holds a block of `prefix`: an exact set for a /32, an IPv6 prefix of the unit length and a
    /// single IPv6 address.
    func set(for prefix: IPPrefix) -> NftablesBlockSet {
        if prefix.address.isIPv4 { return prefix.length == 32 ? .hosts4 : .prefixes4 }
        return exact6.first { $0 == .units6(length: prefix.length) } ?? .prefixes6
    }

    /// The sets a listing reads blocks from: those of this table's layout, and any `units6_` set of another length
    /// (a table made by an agent with another `--ipv6-block-prefix`).
    static func holdsBlocks(_ name: String) -> Bool {
        NftablesBlockSet(name: name) != nil
    }

    /// Replaces any table of this name with an empty one: allow sets accepted first, then the exact block sets,
    /// then the interval ones, dropped in a base chain at the raw priority (-300), before connection tracking spends
    /// any work on the packet; with a ``scanGuard``, also the guard's table (``guardTable``), whose chain runs
    /// next.
    func create(allowing allowed: [IPPrefix]) -> String {
        var lines = Self.deleting(qualified) + ["table \(qualified) {"]
        lines += allowSets
        lines += blockSets.map { "    set \($0.name) { \($0.declaration) }" }
        lines += [
            "    chain \(Self.chain) {",
            "        type filter hook prerouting priority raw; policy accept;",
        ]
        lines += acceptAllowed
        lines += blockSets.map { "        \($0.match) @\($0.name) drop" }
        lines += ["    }", "}"]
        lines += addAllowed(allowed, in: qualified)
        // A guard table left by an agent that had one goes, whether or not this one has a guard.
        lines += Self.deleting(guardQualified)
        if let scanGuard {
            lines += ["table \(guardQualified) {"]
            lines += allowSets
            lines += scanGuard.declarations.map { "    " + $0 }
            lines += [
                "    chain \(Self.chain) {",
                // After the block table's chain: its drops are final, its accepts are not, so the allow sets
                // come again here.
                "        type filter hook prerouting priority raw + 1; policy accept;",
            ]
            lines += acceptAllowed
            lines += ["        " + scanGuard.jump, "    }"]
            lines += scanGuard.chains
            lines += ["}"]
            lines += addAllowed(allowed, in: guardQualified)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The scan guard's table (``NftablesScanGuard``), beside the block table so that listing blocks never reads
    /// the guard's sets, which a flood of SYNs fills with tens of thousands of keys.
    var guardTable: String { table + "_guard" }
    private var guardQualified: String { "\(Self.family) \(guardTable)" }

    private var allowSets: [String] {
        [
            "    set \(Self.allowed4) { type ipv4_addr; flags interval; auto-merge; }",
            "    set \(Self.allowed6) { type ipv6_addr; flags interval; auto-merge; }",
        ]
    }

    private var acceptAllowed: [String] {
        ["        ip saddr @\(Self.allowed4) accept", "        ip6 saddr @\(Self.allowed6) accept"]
    }

    /// Adds and deletes an element in each interval set, changing nothing: the first element a fresh interval set
    /// takes costs a few milliseconds more than later ones, which a block there should not pay. The exact sets are
    /// warmed over netlink (``warmExact()``).
    func warm() -> String {
        let lines = blockSets.filter { !$0.isExact }.flatMap { set in
            let element = "\(qualified) \(set.name) { \(set.zeroKey) }"
            return ["add element \(element)", "delete element \(element)"]
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Adds and deletes a key in each exact set, changing nothing, through the socket the blocks take.
    func warmExact() -> [NftablesElementChange] {
        blockSets.filter(\.isExact).flatMap { set in
            [.add(set: set.name, key: set.zeroKey), .delete(set: set.name, key: set.zeroKey)]
        }
    }

    /// Deletes the table and the guard's; nothing happens when they do not exist.
    func delete() -> String {
        (Self.deleting(qualified) + Self.deleting(guardQualified)).joined(separator: "\n") + "\n"
    }

    /// Deletes a table whether or not it exists: declaring it first makes the "delete" valid when it does not.
    private static func deleting(_ qualified: String) -> [String] {
        ["table \(qualified)", "delete table \(qualified)"]
    }

    /// Replaces the contents of the allow sets (the guard table's too).
    func replaceAllowed(_ allowed: [IPPrefix]) -> String {
        var lines: [String] = []
        for table in scanGuard == nil ? [qualified] : [qualified, guardQualified] {
            lines += ["flush set \(table) \(Self.allowed4)", "flush set \(table) \(Self.allowed6)"]
            lines += addAllowed(allowed, in: table)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Blocks in an interval set (libnftables)

    /// Adds `entry` to the interval set of its family, replacing an element for the same prefix. The element
    /// carries the entry in its comment (so another process listing the table sees reason, origin and times) and a
    /// kernel timeout of `timeout` (`nil`: none).
    func add(_ entry: BlockEntry, timeout: Duration?) -> String {
        let set = set(for: entry.prefix).name
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
        "create element \(qualified) \(set(for: entry.prefix).name) { \(Self.element(entry, timeout: timeout)) }\n"
    }

    private static func element(_ entry: BlockEntry, timeout: Duration?) -> String {
        var element = Self.element(entry.prefix)
        if let timeout { element += " timeout \(Self.format(timeout))" }
        return element + " comment \"\(EntryComment.encode(entry))\""
    }

    /// Deletes the elements for `prefixes` from the interval sets named, whether or not they still exist (one may
    /// time out meanwhile).
    func remove(_ prefixes: [(set: NftablesBlockSet, prefix: IPPrefix)]) -> String {
        var lines: [String] = []
        for (set, prefix) in prefixes {
            let value = Self.element(prefix)
            lines.append("add element \(qualified) \(set.name) { \(value) }")
            lines.append("delete element \(qualified) \(set.name) { \(value) }")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Blocks in an exact set (netlink)

    /// Adds `entry` to its exact set as a new element, which the kernel refuses (`EEXIST`) when the set holds the
    /// key already. The element carries the entry in its comment and a kernel timeout of `timeout` (`nil`: none).
    func createExact(_ entry: BlockEntry, timeout: Duration?) -> [NftablesElementChange] {
        [.create(set: set(for: entry.prefix).name, element: Self.exactElement(entry, timeout: timeout))]
    }

    /// Adds `entry` to its exact set, replacing an element for the same key in the same transaction: an addition
    /// of an existing element changes nothing, so it makes sure the key exists, deletes it and adds it afresh.
    func replaceExact(_ entry: BlockEntry, timeout: Duration?) -> [NftablesElementChange] {
        let set = set(for: entry.prefix).name
        let key = entry.prefix.address
        return [
            .add(set: set, key: key), .delete(set: set, key: key),
            .create(set: set, element: Self.exactElement(entry, timeout: timeout)),
        ]
    }

    /// Deletes the key of each of `prefixes` from the exact set named, whether or not it still exists.
    func removeExact(_ prefixes: [(set: NftablesBlockSet, prefix: IPPrefix)]) -> [NftablesElementChange] {
        prefixes.flatMap { set, prefix in
            [.add(set: set.name, key: prefix.address), .delete(set: set.name, key: prefix.address)]
        }
    }

    private static func exactElement(_ entry: BlockEntry, timeout: Duration?) -> NftablesElementChange.Element {
        // An IPPrefix's address is its network address: the key the masked source address is looked up as.
        .init(key: entry.prefix.address, timeout: timeout, comment: EntryComment.encode(entry))
    }

    // MARK: Values

    private func addAllowed(_ allowed: [IPPrefix], in qualified: String) -> [String] {
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

    /// A prefix as nft writes it: a bare address for a host, `address/length` otherwise.
    static func element(_ prefix: IPPrefix) -> String {
        prefix.compactDescription
    }

    /// The IPv6 netmask of `length` bits, as nft writes it (`ffff:ffff:ffff:ffff::` for 64).
    static func mask(length: Int) -> String {
        let ones = IPAddress(high: .max, low: .max)
        return (IPPrefix(address: ones, length: min(max(length, 0), 128))?.address ?? ones).description
    }

    /// A timeout as the kernel takes it: whole milliseconds, rounded up, at least 1.
    static func milliseconds(_ timeout: Duration) -> UInt64 {
        let nanoseconds = max(timeout.nanosecondsClamped, 1)
        return UInt64((nanoseconds - 1) / 1_000_000 + 1)
    }

    /// A timeout in nft's syntax, rounded up to the millisecond. Seconds and milliseconds are written apart
    /// because nft refuses a millisecond count above about 2^31.
    static func format(_ timeout: Duration) -> String {
        let milliseconds = Self.milliseconds(timeout)
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
