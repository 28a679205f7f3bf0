import CXDP
public import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// The XDP program's pinned block and allow maps, opened without the program: what `XDPBlocker` (ConnBlock)
/// writes, what `conntrackr blocklist list|add|remove|flush` edits while the agent runs, and where the allowlist is
/// synced.
///
/// Each family's blocks live in two maps, which this type hides: a hash map for the exact shapes the program's own
/// blocks have (an IPv4 /32, an IPv6 /64), found at a cost flat in their number, and an LPM trie for every other
/// prefix (CIDR blocks, other IPv6 units). Every call here picks the map by the prefix's shape (`ct_block_is_exact`
/// in `bpf/conntrackr.h`, the rule the program follows too), and listing, counting and capacity cover both.
///
/// Expiry times are kept in the kernel as CLOCK_BOOTTIME nanoseconds, which the program compares against; this
/// type converts them from and to wall-clock ``Timestamp``s (to the microsecond, give or take the conversion's
/// jitter). An allowlisted prefix always wins over a blocked one in the program.
public final class PinnedBlockMaps: @unchecked Sendable {
    // @unchecked: the handle holds map descriptors that never change after init and is freed in deinit; the
    // kernel serialises concurrent map operations.

    /// The bpffs directory holding the pinned maps.
    public let pinRoot: String
    private let handle: OpaquePointer

    /// Opens the maps pinned under `pinRoot`.
    /// - Parameter createIfMissing: when nothing is pinned there yet, load the XDP program once (without
    ///   attaching it) to create and pin the maps; otherwise fail with a message saying the agent has not run.
    /// - Throws: ``ConntrackrError`` with `.missingPrivilege`, `.kernelUnsupported` (bpffs not mounted) or
    ///   `.blockerFailed` (nothing pinned, or pins of another conntrackr version).
    public init(pinRoot: String = XDPProgram.defaultPinRoot, createIfMissing: Bool = true) throws {
        var raw: OpaquePointer?
        try cxdpCall(failing: .blockerFailed) { ct_maps_open(pinRoot, createIfMissing ? 1 : 0, &raw, $0, $1) }
        guard let raw else { throw ConntrackrError(.blockerFailed, "opening the pinned maps returned no handle") }
        self.pinRoot = pinRoot
        self.handle = raw
    }

    deinit { ct_maps_close(handle) }

    // MARK: Blocked prefixes

    /// How many prefixes the block maps hold at most, per address family (exact-match and LPM maps together; each
    /// refuses new entries of its own shape when full).
    public var blockCapacity: (ipv4: Int, ipv6: Int) {
        (
            Int(ct_maps_capacity(handle, CT_TABLE_BLOCK, UInt8(CT_FAMILY_IPV4))),
            Int(ct_maps_capacity(handle, CT_TABLE_BLOCK, UInt8(CT_FAMILY_IPV6)))
        )
    }

    /// How many prefixes the allow maps hold at most, per address family.
    public var allowCapacity: (ipv4: Int, ipv6: Int) {
        (
            Int(ct_maps_capacity(handle, CT_TABLE_ALLOW, UInt8(CT_FAMILY_IPV4))),
            Int(ct_maps_capacity(handle, CT_TABLE_ALLOW, UInt8(CT_FAMILY_IPV6)))
        )
    }

    /// Every blocked prefix, expired or not, with its drop counter.
    public func blockEntries() throws -> [BlockEntry] {
        let offset = bootToWallOffset()
        var entries: [BlockEntry] = []
        try forEach(CT_TABLE_BLOCK) { prefix, value in
            if let value { entries.append(Self.entry(prefix, value, offset: offset)) }
        }
        return entries
    }

    /// Blocks `entry.prefix` until `entry.expires`, or replaces its entry (keeping the drop counter).
    /// - Returns: `false`, changing nothing, when the map of the prefix's family is full.
    @discardableResult
    public func block(_ entry: BlockEntry) throws -> Bool {
        var prefix = ct_prefix(entry.prefix)
        var value = Self.value(entry, offset: bootToWallOffset())
        var full = false
        try cxdpCall(failing: .blockerFailed) { message, length in
            let result = ct_block_put(handle, &prefix, &value, 1, message, length)
            if result == -ENOSPC {
                full = true
                return 0
            }
            return result
        }
        return !full
    }

    /// Unblocks exactly `prefix` (not the prefixes inside or around it).
    /// - Returns: `false` when it was not blocked.
    @discardableResult
    public func unblock(_ prefix: IPPrefix) throws -> Bool {
        try delete(prefix, from: CT_TABLE_BLOCK)
    }

    /// Unblocks every prefix whose expiry is at or before `now`, and returns the entries removed.
    public func unblockExpired(asOf now: Timestamp) throws -> [BlockEntry] {
        let expired = try blockEntries().filter { entry in entry.expires.map { $0 <= now } ?? false }
        return try expired.compactMap { try unblock($0.prefix, ifExpiredAsOf: now) }
    }

    /// Unblocks exactly `prefix` if its entry, as the map holds it now, has expired by `now`; for sweeps that
    /// work from an older listing, since another process may have renewed the block meanwhile.
    /// - Returns: the entry removed, `nil` when there was none or it has not expired.
    public func unblock(_ prefix: IPPrefix, ifExpiredAsOf now: Timestamp) throws -> BlockEntry? {
        var key = ct_prefix(prefix)
        var value = ct_block_value()
        var found = true
        try cxdpCall(failing: .blockerFailed) { message, length in
            let result = ct_block_lookup(handle, &key, &value, message, length)
            if result == -ENOENT {
                found = false
                return 0
            }
            return result
        }
        // A lookup may answer with a shorter prefix around this one when it is gone; the exact delete below then
        // finds nothing, so nothing wrong is removed.
        let current = Self.entry(prefix, value, offset: bootToWallOffset())
        guard found, let expires = current.expires, expires <= now else { return nil }
        return try unblock(prefix) ? current : nil
    }

    /// Unblocks everything, and returns the entries removed.
    public func flushBlocks() throws -> [BlockEntry] {
        try blockEntries().filter { try unblock($0.prefix) }
    }

    /// How many blocks the exact-match maps and the LPM tries hold, both families together: which map the blocks
    /// went to. Walks every key; for diagnostics and tests.
    public func blockMapCounts() throws -> (exact: Int, trie: Int) {
        var exact: UInt64 = 0
        var trie: UInt64 = 0
        try cxdpCall(failing: .blockerFailed) { ct_block_count(handle, &exact, &trie, $0, $1) }
        return (Int(exact), Int(trie))
    }

    // MARK: Allowlisted prefixes

    /// Every allowlisted prefix.
    public func allowedPrefixes() throws -> [IPPrefix] {
        var prefixes: [IPPrefix] = []
        try forEach(CT_TABLE_ALLOW) { prefix, _ in prefixes.append(prefix) }
        return prefixes
    }

    /// Tells the program how many prefixes are blocked, for its own `--max-blocked` check (kernel enforcement).
    public func setBlockedCount(_ count: Int) throws {
        try cxdpCall(failing: .blockerFailed) { ct_maps_set_blocked_count(handle, UInt64(max(count, 0)), $0, $1) }
    }

    /// Gives the program the shared IPv6 units of `allowlist` (``ConnCore/SourceUnits``): units (a source's prefix
    /// of `unitLength` bits) that hold an allowlisted address more specific than themselves, such as this host's
    /// own address in its /64. The program counts and blocks each source inside one as its /128, never the unit.
    /// (Sources inside an allowlisted prefix are found in the allow maps.)
    public func syncAllowedUnits(_ allowlist: Allowlist, ipv6UnitLength unitLength: Int) throws {
        let units = SourceUnits.sharedUnits(of: allowlist, ipv6PrefixLength: unitLength)
        var prefixes = units.map { ct_prefix($0) }
        try prefixes.withUnsafeMutableBufferPointer { buffer in
            _ = try cxdpCall(failing: .blockerFailed) {
                ct_maps_replace_allow_units(handle, buffer.baseAddress, buffer.count, $0, $1)
            }
        }
    }

    /// An allowlisted prefix that `prefix` overlaps (holds or lies in), `nil` when none does: the program lets
    /// such a source through even when it is blocked.
    public func allowedPrefix(overlapping prefix: IPPrefix) throws -> IPPrefix? {
        try allowedPrefixes().first { $0.contains(prefix.address) || prefix.contains($0.address) }
    }

    /// Makes the allow maps hold exactly the prefixes of `allowlist`: adds the missing, removes the rest. The
    /// program never drops a packet from an allowlisted source, even inside a blocked prefix.
    public func syncAllowlist(_ allowlist: Allowlist) throws {
        try syncAllowed(Set(allowlist.entries.map(\.prefix)))
    }

    /// Makes the allow maps hold exactly `prefixes`.
    public func syncAllowed(_ prefixes: Set<IPPrefix>) throws {
        let current = Set(try allowedPrefixes())
        for stale in current.subtracting(prefixes) {
            _ = try delete(stale, from: CT_TABLE_ALLOW)
        }
        for missing in prefixes.subtracting(current) {
            var prefix = ct_prefix(missing)
            var full = false
            try cxdpCall(failing: .blockerFailed) { message, length in
                let result = ct_allow_put(handle, &prefix, message, length)
                full = result == -ENOSPC
                return full ? 0 : result
            }
            if full {
                let capacity = missing.address.isIPv4 ? allowCapacity.ipv4 : allowCapacity.ipv6
                throw ConntrackrError(
                    .invalidConfiguration,
                    "the allowlist has more prefixes of \(missing.compactDescription)'s family than the XDP allow "
                        + "map holds (\(capacity))"
                )
            }
        }
    }

    // MARK: Helpers

    private func delete(_ prefix: IPPrefix, from table: ct_table) throws -> Bool {
        var key = ct_prefix(prefix)
        var found = true
        try cxdpCall(failing: .blockerFailed) { message, length in
            let result = ct_entry_delete(handle, table, &key, message, length)
            if result == -ENOENT {
                found = false
                return 0
            }
            return result
        }
        return found
    }

    private func forEach(_ table: ct_table, _ body: (IPPrefix, ct_block_value?) -> Void) throws {
        typealias Visitor = (IPPrefix, ct_block_value?) -> Void
        try withoutActuallyEscaping(body) { visitor in
            var visitor: Visitor = visitor
            _ = try withUnsafeMutablePointer(to: &visitor) { pointer in
                try cxdpCall(failing: .blockerFailed) { message, length in
                    ct_entry_foreach(
                        handle,
                        table,
                        { context, prefix, value in
                            guard let context, let prefix, let parsed = IPPrefix(prefix.pointee) else { return 0 }
                            context.assumingMemoryBound(to: Visitor.self).pointee(parsed, value?.pointee)
                            return 0
                        },
                        pointer,
                        message,
                        length
                    )
                }
            }
        }
    }

    /// The kernel value for `entry`: expiry moved to CLOCK_BOOTTIME, 0 for permanent.
    static func value(_ entry: BlockEntry, offset: Int64) -> ct_block_value {
        var value = ct_block_value()
        if let expires = entry.expires {
            // An expiry before boot is simply in the past: 1 ns after boot is expired for the program too.
            // Saturating: an expiry from outside (a fleet record) may be anywhere in Int64's range.
            value.expires_ns = UInt64(max(1, expires.nanoseconds.saturatingAdding(offset == .min ? .max : -offset)))
        }
        value.since_ns = entry.since.nanoseconds
        value.reason = UInt8(entry.reason == .manual ? CT_REASON_MANUAL : CT_REASON_PORT_SCAN)
        value.origin = UInt8(entry.origin == .fleet ? CT_ORIGIN_FLEET : CT_ORIGIN_LOCAL)
        return value
    }

    /// The entry for a kernel value; the expiry moved back to wall-clock time.
    static func entry(_ prefix: IPPrefix, _ value: ct_block_value, offset: Int64) -> BlockEntry {
        BlockEntry(
            prefix: prefix,
            reason: Int32(value.reason) == CT_REASON_MANUAL ? .manual : .portScan,
            origin: Int32(value.origin) == CT_ORIGIN_FLEET ? .fleet : .local,
            since: Timestamp(nanoseconds: value.since_ns),
            expires: value.expires_ns == 0
                ? nil : Timestamp(nanoseconds: Int64(clamping: value.expires_ns).saturatingAdding(offset)),
            droppedPackets: value.packets
        )
    }
}

extension ct_prefix {
    /// The loader's form of `prefix`: IPv4 addresses in the first 4 bytes.
    init(_ prefix: IPPrefix) {
        self.init()
        let bytes = prefix.address.bytes
        withUnsafeMutableBytes(of: &addr) { storage in
            for (index, byte) in bytes.enumerated() { storage[index] = byte }
        }
        family = UInt8(prefix.address.isIPv4 ? CT_FAMILY_IPV4 : CT_FAMILY_IPV6)
        length = UInt8(prefix.length)
    }
}

extension IPPrefix {
    /// The prefix the loader reported; `nil` for a family or length it should never report.
    init?(_ prefix: ct_prefix) {
        let count = Int32(prefix.family) == CT_FAMILY_IPV4 ? 4 : 16
        let address = withUnsafeBytes(of: prefix.addr) { IPAddress(bytes: $0.prefix(count)) }
        guard let address, Int32(prefix.family) == CT_FAMILY_IPV4 || Int32(prefix.family) == CT_FAMILY_IPV6 else {
            return nil
        }
        self.init(address: address, length: Int(prefix.length))
    }
}
