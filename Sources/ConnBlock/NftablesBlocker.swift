public import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A ``Blocker`` for hosts where XDP cannot attach: blocked prefixes go into nftables sets in a table of
/// conntrackr's own, and a chain at prerouting priority -300 (raw) drops their packets.
///
/// The table (`table inet conntrackr` by default) holds, in the order the chain looks them up:
/// - `allowed4` and `allowed6`, filled by ``createTable(allowing:)`` and ``replaceAllowlist(_:)`` and accepted
///   before any drop: the allowlist wins in the kernel as well as in ``BlockController``, which refuses to block
///   allowlisted prefixes in the first place. The kernel check keeps a hand-made or fleet-learned block that
///   covers an allowlisted address from cutting it off.
/// - `hosts4` and `units6_N`, exact-match hash sets for what scanners are blocked as: IPv4 addresses (/32), and
///   IPv6 prefixes of ``Configuration/ipv6UnitLength`` bits (N, default 64), looked up as the source address masked
///   to N bits; with N below 128, also `units6_128` for IPv6 sources blocked as themselves (a source whose unit
///   the host shares). One hash lookup however many are blocked, and a change costs the kernel little.
/// - `blocked4` and `blocked6`, interval sets for every other prefix (CIDR blocks from the command line or the
///   fleet).
///
/// With ``Configuration/scanGuard``, a second table (`inet conntrackr_guard`) holds the chains and sets of
/// ``NftablesScanGuard``, which keep a scanner to the threshold's worth of ports until its block lands; it is made,
/// given the allowlist and removed with the first, and never listed.
///
/// Every block set has per-element timeouts and packet counters. A block with a TTL gets a kernel timeout, so it
/// lapses on time even if the agent stalls; ``removeExpired(asOf:)`` reports entries whose time is up (those the
/// kernel already dropped included) and deletes any still present. Each element's comment carries its
/// ``BlockEntry``, so another process listing the table sees the same reason, origin and times.
///
/// Changes are made in this process (``KernelNftables``), each one atomic transaction, with no `nft` process:
/// elements of the exact sets are written over netlink, one batch each; the table, the allow sets and the interval
/// sets' elements go through libnftables. Calls are serialised. Deciding on a block never reads the sets back: the
/// blocker counts the entries it holds in memory (``occupancy(holding:)``), and lists the table (in nftables' JSON)
/// only for ``entries()``, ``remove(_:)``, the expiry sweep when something is due, and to name the block in the way
/// of an overlapping one.
///
/// - Important: an interval set cannot hold overlapping prefixes: blocking 198.51.100.0/25 while 198.51.100.0/24
///   is blocked fails with an error naming the wider block (its traffic is already dropped). Blocks in the exact
///   sets never overlap each other, and may overlap an interval set's.
/// - Important: the table lives until ``removeTable()``; the agent calls it on exit. ``createTable(allowing:)``
///   replaces a table left behind by an agent that was killed.
public final class NftablesBlocker: Blocker {
    /// Where and how the blocker works.
    public struct Configuration: Hashable, Sendable {
        /// The name of conntrackr's table in the `inet` family: letters, digits and `_`, starting with a letter.
        public var table: String
        /// The network namespace to work in, as a file that holds it open (`/run/netns/NAME`); `nil`: the
        /// agent's own.
        public var networkNamespace: String?
        /// The most entries in the sets; further new prefixes are refused. `nil`: no limit of the blocker's own.
        /// Counted in memory: the entries this blocker added and holds (see ``NftablesBlocker/occupancy(holding:)``).
        public var capacity: Int?
        /// The length IPv6 scanners are blocked as (the agent's `--ipv6-block-prefix`, clamped to 1...128): IPv6
        /// blocks of this length go into the exact set, matched on the source address masked to it.
        public var ipv6UnitLength: Int
        /// The scan rule enforced in the table itself (kernel enforcement), or `nil` for blocks only.
        public var scanGuard: NftablesScanGuard?

        /// A configuration; the defaults are the agent's.
        public init(
            table: String = "conntrackr",
            networkNamespace: String? = nil,
            capacity: Int? = nil,
            ipv6UnitLength: Int = BlockPolicy().ipv6PrefixLength,
            scanGuard: NftablesScanGuard? = nil
        ) {
            self.table = table
            self.networkNamespace = networkNamespace
            self.capacity = capacity
            self.ipv6UnitLength = min(max(ipv6UnitLength, 1), 128)
            self.scanGuard = scanGuard
        }
    }

    public let name = "nftables"
    public let configuration: Configuration

    private struct State {
        /// Entries with an expiry that this blocker added and has not yet reported as expired or removed: the
        /// kernel drops timed-out elements silently, so this is how ``removeExpired(asOf:)`` knows to report them.
        var expiring: [IPPrefix: BlockEntry] = [:]
        /// Entries this blocker put into the block sets and still holds, by prefix: what a block decision counts,
        /// kept here so that no decision waits for a listing. Entries expired or removed leave it; a listing that
        /// no longer shows one (deleted by hand) drops it too.
        var held: [IPPrefix: BlockEntry] = [:]
    }

    private let commands: any NftablesCommands
    private let clock: @Sendable () -> Timestamp
    private let script: NftablesScript
    // The lock is held across nftables calls on purpose: it keeps a listing and the change made from it consistent.
    private let state = Mutex(State())

    /// A blocker working on the table `configuration.table`; nothing is changed until a method is called.
    /// - Parameters:
    ///   - commands: what changes nftables; `nil` makes a ``KernelNftables`` in
    ///     `configuration.networkNamespace`. Unit tests pass a recording one.
    ///   - clock: the wall clock, for kernel timeouts (tests pass a fixed one).
    /// - Throws: ``ConntrackrError``: `invalidConfiguration` for a table name nft would misread, `blockerFailed`
    ///   when libnftables cannot make a context or the netlink socket cannot be opened.
    public init(
        _ configuration: Configuration = Configuration(),
        commands: (any NftablesCommands)? = nil,
        clock: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) throws(ConntrackrError) {
        guard Self.isIdentifier(configuration.table) else {
            throw ConntrackrError(
                .invalidConfiguration,
                "nftables table name must be letters, digits and _ (at most 64), starting with a letter"
            )
        }
        self.configuration = configuration
        if let commands {
            self.commands = commands
        } else {
            self.commands = try KernelNftables(networkNamespace: configuration.networkNamespace)
        }
        self.clock = clock
        self.script = NftablesScript(
            table: configuration.table, ipv6UnitLength: configuration.ipv6UnitLength, scanGuard: configuration.scanGuard
        )
    }

    /// Creates conntrackr's table, replacing one of the same name (a killed agent's), with `allowlist` in the
    /// allow sets.
    /// - Throws: ``ConntrackrError``: `missingPrivilege` without CAP_NET_ADMIN, `blockerFailed` when nftables
    ///   refuses the commands (nft's first error line included).
    public func createTable(allowing allowlist: Allowlist = Allowlist()) throws(ConntrackrError) {
        try state.withLock { (state: inout State) throws(ConntrackrError) in
            try apply(script.create(allowing: allowlist.entries.map(\.prefix)), doing: "creating table")
            try apply(script.warm(), doing: "creating table")
            try apply(script.warmExact(), doing: "creating table")
            state.expiring = [:]
            state.held = [:]
        }
    }

    /// Replaces the allow sets' contents (on SIGHUP). Blocks already made stay.
    public func replaceAllowlist(_ allowlist: Allowlist) throws(ConntrackrError) {
        try state.withLock { (_: inout State) throws(ConntrackrError) in
            try apply(script.replaceAllowed(allowlist.entries.map(\.prefix)), doing: "replacing the allowlist")
        }
    }

    /// Deletes conntrackr's table and every block in it, and the guard's table; nothing happens when they do not
    /// exist.
    public func removeTable() throws(ConntrackrError) {
        try state.withLock { (state: inout State) throws(ConntrackrError) in
            try apply(script.delete(), doing: "removing table")
            state.expiring = [:]
            state.held = [:]
        }
    }

    /// How many entries the block sets hold, from memory: the entries this blocker added and has not seen expire
    /// or go. Elements added by other means (by hand with `nft`) are not counted until ``entries()`` lists them.
    public func occupancy(holding prefix: IPPrefix?) throws(ConntrackrError) -> BlockOccupancy {
        state.withLock { state in
            BlockOccupancy(
                count: state.held.count,
                fleetCount: state.held.values.count { $0.origin == .fleet },
                holdsPrefix: prefix.map { state.held[$0] != nil } ?? false
            )
        }
    }

    public func add(_ entry: BlockEntry) throws(ConntrackrError) -> Bool {
        try state.withLock { (state: inout State) throws(ConntrackrError) -> Bool in
            if let capacity = configuration.capacity, state.held.count >= capacity, state.held[entry.prefix] == nil {
                return false
            }
            let now = clock()
            var timeout: Duration?
            if let expires = entry.expires {
                let remaining = expires - now
                timeout = remaining <= NftablesScript.longestKernelTimeout ? remaining : nil
            }
            if script.set(for: entry.prefix).isExact {
                try addExact(entry, timeout: timeout, isNew: state.held[entry.prefix] == nil)
            } else {
                try addInterval(entry, timeout: timeout, isNew: state.held[entry.prefix] == nil, now: now)
            }
            state.expiring[entry.prefix] = entry.expires == nil ? nil : entry
            state.held[entry.prefix] = entry
            return true
        }
    }

    /// Adds `entry` to its exact set over netlink. A prefix not held is most likely new: one message, and the
    /// replacing three only when it exists.
    private func addExact(_ entry: BlockEntry, timeout: Duration?, isNew: Bool) throws(ConntrackrError) {
        var outcome = NftablesChangeOutcome.refused(errno: EEXIST, change: 0)
        if isNew {
            outcome = try apply(script.createExact(entry, timeout: timeout))
        }
        if outcome == .refused(errno: EEXIST, change: 0) {
            outcome = try apply(script.replaceExact(entry, timeout: timeout))
        }
        if case .refused(let error, _) = outcome {
            throw Self.error(errno: error, doing: "blocking \(entry.prefix.compactDescription)")
        }
    }

    /// Adds `entry` to its interval set through libnftables, as ``addExact(_:timeout:isNew:)`` does.
    private func addInterval(
        _ entry: BlockEntry, timeout: Duration?, isNew: Bool, now: Timestamp
    ) throws(ConntrackrError) {
        var result = NftablesResult(succeeded: false, error: "File exists")
        if isNew {
            result = try run(script.create(entry, timeout: timeout))
        }
        if !result.succeeded, result.error.contains("File exists") {
            result = try run(script.add(entry, timeout: timeout))
        }
        if !result.succeeded {
            let error = Self.error(result, doing: "blocking \(entry.prefix.compactDescription)")
            guard result.error.contains("interval overlaps") else { throw error }
            throw (try? overlapError(for: entry.prefix, now: now)) ?? error
        }
    }

    public func remove(_ prefix: IPPrefix) throws(ConntrackrError) -> Bool {
        try state.withLock { (state: inout State) throws(ConntrackrError) -> Bool in
            // A prefix may be in an exact set and, added by hand, in an interval set too: it goes from both.
            let holding = try kernelElements(now: clock()).filter { $0.entry.prefix == prefix }
            let present = !holding.isEmpty
            if present {
                try delete(holding.map { ($0.set, $0.entry.prefix) }, doing: "unblocking \(prefix.compactDescription)")
            }
            let tracked = state.expiring.removeValue(forKey: prefix) != nil
            state.held[prefix] = nil
            return present || tracked
        }
    }

    /// The entries in the sets, plus those this blocker added that the kernel has timed out but
    /// ``removeExpired(asOf:)`` has not yet reported. Elements added by hand without a conntrackr comment show
    /// as `manual`, with times worked out from their timeout.
    public func entries() throws(ConntrackrError) -> [BlockEntry] {
        try state.withLock { (state: inout State) throws(ConntrackrError) -> [BlockEntry] in
            let now = clock()
            var result = try kernelEntries(now: now)
            let present = Set(result.map(\.prefix))
            // A prefix in two sets (one of them by hand) is one block.
            result = Self.unique(result)
            for (prefix, entry) in state.expiring where !present.contains(prefix) {
                // Gone from the kernel: timed out (allowing for timer granularity), or deleted behind our back.
                if let expires = entry.expires, expires <= now + .seconds(1) {
                    result.append(entry)
                } else {
                    state.expiring[prefix] = nil
                }
            }
            // What is neither in the kernel nor waiting to be reported as expired no longer takes room.
            for prefix in state.held.keys where !present.contains(prefix) && state.expiring[prefix] == nil {
                state.held[prefix] = nil
            }
            return result.sorted(by: BlockEntry.prefixOrder)
        }
    }

    /// Reports the entries whose time is up at `now`, and deletes those the kernel still holds.
    ///
    /// Calls nftables only when an entry this blocker added is due; elements other processes added with a timeout
    /// lapse in the kernel by themselves and are reported here only if they are due at the same time.
    public func removeExpired(asOf now: Timestamp) throws(ConntrackrError) -> [BlockEntry] {
        try state.withLock { (state: inout State) throws(ConntrackrError) -> [BlockEntry] in
            guard state.expiring.values.contains(where: { $0.expires.map { $0 <= now } ?? false }) else {
                return []
            }
            let elements = try kernelElements(now: clock())
            let current = elements.map(\.entry)
            var expired: [IPPrefix: BlockEntry] = [:]
            var stillPresent: [(set: NftablesBlockSet, prefix: IPPrefix)] = []
            for (set, entry) in elements {
                if let expires = entry.expires, expires <= now {
                    expired[entry.prefix] = entry
                    stillPresent.append((set, entry.prefix))
                } else if state.expiring[entry.prefix] != nil {
                    // Replaced meanwhile (by another agent or by hand) with a later expiry: follow the kernel.
                    state.expiring[entry.prefix] = entry.expires == nil ? nil : entry
                    state.held[entry.prefix] = entry
                }
            }
            let inKernel = Set(current.map(\.prefix))
            for (prefix, entry) in state.expiring where !inKernel.contains(prefix) {
                if let expires = entry.expires, expires <= now { expired[prefix] = entry }
            }
            if !stillPresent.isEmpty {
                try delete(stillPresent, doing: "removing expired blocks")
            }
            for prefix in expired.keys {
                state.expiring[prefix] = nil
                state.held[prefix] = nil
            }
            return expired.values.sorted(by: BlockEntry.prefixOrder)
        }
    }

    // MARK: - Calling nftables

    /// The entries of every block set, as the kernel holds them now.
    private func kernelEntries(now: Timestamp) throws(ConntrackrError) -> [BlockEntry] {
        try kernelElements(now: now).map(\.entry)
    }

    /// The entries of every block set with the set that holds each, as the kernel holds them now.
    private func kernelElements(
        now: Timestamp
    ) throws(ConntrackrError) -> [(set: NftablesBlockSet, entry: BlockEntry)] {
        let result = try run("list table \(NftablesScript.family) \(configuration.table)\n", json: true)
        guard result.succeeded else {
            if result.error.contains("No such file or directory") {
                throw ConntrackrError(
                    .blockerFailed,
                    "nftables table \(NftablesScript.family) \(configuration.table) does not exist "
                        + "(not created yet, or the ruleset was flushed)"
                )
            }
            throw Self.error(result, doing: "listing blocks")
        }
        let sets = try NftablesListing.elements(in: Array(result.output.utf8), sets: NftablesScript.holdsBlocks)
        var entries: [(set: NftablesBlockSet, entry: BlockEntry)] = []
        for (name, elements) in sets {
            guard let set = NftablesBlockSet(name: name) else { continue }
            for var element in elements {
                guard let prefix = set.prefix(of: element.prefix) else { continue }
                element.prefix = prefix
                entries.append((set, Self.entry(element, now: now)))
            }
        }
        return entries
    }

    /// `entries` with one entry per prefix: the one from the exact set where a prefix is in two sets (that is the
    /// set the blocker writes).
    private static func unique(_ entries: [BlockEntry]) -> [BlockEntry] {
        var seen: Set<IPPrefix> = []
        return entries.filter { seen.insert($0.prefix).inserted }
    }

    /// The entry an element stands for: its comment when it is one of ours, else a `manual` block whose times
    /// come from the element's timeout.
    static func entry(_ element: NftablesElement, now: Timestamp) -> BlockEntry {
        if let comment = element.comment,
            let entry = EntryComment.decode(comment, prefix: element.prefix, droppedPackets: element.packets)
        {
            return entry
        }
        var since = now
        var expires: Timestamp?
        if let left = element.expiresInSeconds {
            expires = now + .seconds(left)
            if let timeout = element.timeoutSeconds { since = now + .seconds(left - timeout) }
        }
        return BlockEntry(
            prefix: element.prefix,
            reason: .manual,
            since: since,
            expires: expires,
            droppedPackets: element.packets
        )
    }

    /// After nftables refused an element as overlapping, an error naming the block it overlaps; `nil` when it
    /// refused it for another reason.
    private func overlapError(for prefix: IPPrefix, now: Timestamp) throws(ConntrackrError) -> ConntrackrError? {
        // Only the interval sets refuse overlaps.
        let overlapping = try kernelElements(now: now).lazy.filter { !$0.set.isExact }.map(\.entry).first {
            $0.prefix != prefix && ($0.prefix.contains(prefix.address) || prefix.contains($0.prefix.address))
        }
        guard let overlapping else { return nil }
        return ConntrackrError(
            .blockerFailed,
            "nftables cannot block \(prefix.compactDescription): it overlaps the block on "
                + "\(overlapping.prefix.compactDescription), and nftables interval sets cannot hold "
                + "overlapping prefixes"
        )
    }

    private func apply(_ text: String, doing action: String) throws(ConntrackrError) {
        let result = try run(text)
        guard result.succeeded else { throw Self.error(result, doing: action) }
    }

    private func apply(_ changes: [NftablesElementChange], doing action: String) throws(ConntrackrError) {
        if case .refused(let error, _) = try apply(changes) { throw Self.error(errno: error, doing: action) }
    }

    private func apply(_ changes: [NftablesElementChange]) throws(ConntrackrError) -> NftablesChangeOutcome {
        do {
            return try commands.apply(changes, table: configuration.table)
        } catch {
            throw ConntrackrError(error.code, "nftables blocker: \(error.message)")
        }
    }

    /// Deletes the blocks of `prefixes` from the sets named: over netlink from the exact sets (in batches of a
    /// bounded size), through libnftables from the interval sets.
    private func delete(
        _ prefixes: [(set: NftablesBlockSet, prefix: IPPrefix)], doing action: String
    ) throws(ConntrackrError) {
        let exact = prefixes.filter { $0.set.isExact }
        let interval = prefixes.filter { !$0.set.isExact }
        let perBatch = KernelNftables.changesPerBatch / 2
        var start = 0
        while start < exact.count {
            let end = min(start + perBatch, exact.count)
            try apply(script.removeExact(Array(exact[start..<end])), doing: action)
            start = end
        }
        if !interval.isEmpty { try apply(script.remove(interval), doing: action) }
    }
    private func run(_ text: String, json: Bool = false) throws(ConntrackrError) -> NftablesResult {
        do {
            return try commands.run(text, json: json)
        } catch {
            throw ConntrackrError(error.code, "nftables blocker: \(error.message)")
        }
    }

    /// One line for an element change the kernel refused with `errno`, with a hint when the cause is a missing
    /// privilege or a missing table.
    static func error(errno code: Int32, doing action: String) -> ConntrackrError {
        let text = String(cString: strerror(code))
        switch code {
        case EPERM:
            return ConntrackrError(
                .missingPrivilege,
                "nftables: \(action) failed: \(text) (conntrackr needs CAP_NET_ADMIN for --block nftables)"
            )
        case ENOENT:
            return ConntrackrError(
                .blockerFailed,
                "nftables: \(action) failed: \(text) (the table or its set is gone: the ruleset was flushed?)"
            )
        default:
            return ConntrackrError(.blockerFailed, "nftables: \(action) failed: \(text)")
        }
    }

    /// One line from nftables' complaint: its first `Error:` line, with a hint when the cause is a missing
    /// privilege. The offending command and caret lines that follow it are left out.
    static func error(_ result: NftablesResult, doing action: String) -> ConntrackrError {
        let text = result.error
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: " \t\r") }.filter { !$0.isEmpty }
        let line = lines.first { $0.contains("Error:") } ?? lines.first ?? "nftables refused the change"
        let shown = line.count > 300 ? String(line.prefix(300)) + "..." : String(line)
        if text.contains("Operation not permitted") {
            return ConntrackrError(
                .missingPrivilege,
                "nftables: \(action) failed: \(shown) (conntrackr needs CAP_NET_ADMIN for --block nftables)"
            )
        }
        return ConntrackrError(.blockerFailed, "nftables: \(action) failed: \(shown)")
    }

    private static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 64 else { return false }
        let isLetter = { (byte: UInt8) in (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) }
        let isDigit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        return isLetter(first) && name.utf8.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "_") }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var result = self[...]
        while let first = result.first, set.contains(first) { result = result.dropFirst() }
        while let last = result.last, set.contains(last) { result = result.dropLast() }
        return result
    }
}
