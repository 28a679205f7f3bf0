public import ConnCore
import Synchronization

/// A ``Blocker`` that keeps its entries in memory and drops nothing: for tests, dry runs and embedders that
/// enforce blocks themselves.
///
/// Entries are kept per prefix; adding a prefix that is already present replaces its entry. Safe to call from
/// any thread.
public final class InMemoryBlocker: Blocker {
    public let name: String
    /// The most entries held at once; `nil` for no limit.
    public let capacity: Int?

    private let table: Mutex<[IPPrefix: BlockEntry]>

    /// A blocker holding at most `capacity` entries (`nil`: no limit), reported in logs as `name`.
    public init(capacity: Int? = nil, name: String = "memory") {
        self.name = name
        self.capacity = capacity.map { max($0, 0) }
        self.table = Mutex([:])
    }

    /// Adds `entry`, replacing the one for the same prefix; `false` when a new prefix would exceed ``capacity``.
    public func add(_ entry: BlockEntry) -> Bool {
        table.withLock { table in
            if table[entry.prefix] == nil, let capacity, table.count >= capacity { return false }
            table[entry.prefix] = entry
            return true
        }
    }

    public func remove(_ prefix: IPPrefix) -> Bool {
        table.withLock { $0.removeValue(forKey: prefix) != nil }
    }

    /// Every entry, ordered by prefix so that output and tests are stable.
    public func entries() -> [BlockEntry] {
        table.withLock { Array($0.values) }.sorted(by: Self.prefixOrder)
    }

    /// Removes and returns the entries expired at `now`, in one step so that a concurrent ``add(_:)`` of the
    /// same prefix is never lost.
    public func removeExpired(asOf now: Timestamp) -> [BlockEntry] {
        table.withLock { table in
            let expired = table.values.filter { entry in entry.expires.map { $0 <= now } ?? false }
            for entry in expired { table.removeValue(forKey: entry.prefix) }
            return expired
        }.sorted(by: Self.prefixOrder)
    }

    /// The number of entries held.
    public var count: Int { table.withLock { $0.count } }

    static func prefixOrder(_ lhs: BlockEntry, _ rhs: BlockEntry) -> Bool {
        (lhs.prefix.address, lhs.prefix.length) < (rhs.prefix.address, rhs.prefix.length)
    }
}
