public import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A ``ConnCore/Blocker`` that keeps its entries in memory and drops nothing: for tests, dry runs and embedders that
/// enforce blocks themselves.
///
/// Entries are kept per prefix; adding a prefix that is already present replaces its entry. Safe to call from
/// any thread.
public final class InMemoryBlocker: Blocker {
    public let name: String
    /// The most entries held at once; `nil` for no limit. A capacity of 0 refuses every block, as a full
    /// blocklist does.
    public let capacity: Int?
    /// How long ``add(_:)`` and ``entries()`` take, as a kernel blocker's calls do, so that races between callers
    /// show in tests; `nil` answers at once.
    public let latency: Duration?

    private struct State {
        var table: [IPPrefix: BlockEntry] = [:]
        var allowlist = Allowlist()
    }

    private let state = Mutex(State())

    /// A blocker holding at most `capacity` entries (`nil`: no limit), reported in logs as `name`.
    public init(capacity: Int? = nil, latency: Duration? = nil, name: String = "memory") {
        self.name = name
        self.capacity = capacity.map { max($0, 0) }
        self.latency = latency
    }

    /// Adds `entry`, replacing the one for the same prefix; `false` when a new prefix would exceed ``capacity``.
    public func add(_ entry: BlockEntry) -> Bool {
        pause()
        return state.withLock { state in
            if state.table[entry.prefix] == nil, let capacity, state.table.count >= capacity { return false }
            state.table[entry.prefix] = entry
            return true
        }
    }

    public func remove(_ prefix: IPPrefix) -> Bool {
        state.withLock { $0.table.removeValue(forKey: prefix) != nil }
    }

    /// Every entry, ordered by prefix so that output and tests are stable.
    public func entries() -> [BlockEntry] {
        pause()
        return state.withLock { Array($0.table.values) }.sorted(by: BlockEntry.prefixOrder)
    }

    /// The entry for exactly `prefix`, if any.
    public func entry(for prefix: IPPrefix) -> BlockEntry? {
        state.withLock { $0.table[prefix] }
    }

    /// Removes and returns the entries expired at `now`, in one step so that a concurrent ``add(_:)`` of the
    /// same prefix is never lost.
    public func removeExpired(asOf now: Timestamp) -> [BlockEntry] {
        state.withLock { state in
            let expired = state.table.values.filter { entry in entry.expires.map { $0 <= now } ?? false }
            for entry in expired { state.table.removeValue(forKey: entry.prefix) }
            return expired
        }.sorted(by: BlockEntry.prefixOrder)
    }

    /// Keeps `allowlist` (see ``allowlist``); a blocker that enforces nothing has nothing else to do with it.
    public func replaceAllowlist(_ allowlist: Allowlist) {
        state.withLock { $0.allowlist = allowlist }
    }

    /// The allowlist last given to ``replaceAllowlist(_:)``.
    public var allowlist: Allowlist { state.withLock { $0.allowlist } }

    /// The number of entries held.
    public var count: Int { state.withLock { $0.table.count } }

    private func pause() {
        guard let latency else { return }
        let (seconds, attoseconds) = latency.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        nanosleep(&request, nil)
    }
}

/// A ``ConnCore/Blocker`` whose every change fails, as a kernel blocker does when the kernel refuses: for tests of
/// what callers do with blocker errors.
public final class FailingBlocker: Blocker {
    public let name = "failing"
    /// The error every change throws.
    public let error: ConntrackrError

    public init(_ error: ConntrackrError = ConntrackrError(.blockerFailed, "no kernel today")) {
        self.error = error
    }

    public func add(_ entry: BlockEntry) throws -> Bool { throw error }
    public func remove(_ prefix: IPPrefix) throws -> Bool { throw error }
    public func entries() throws -> [BlockEntry] { [] }
    public func replaceAllowlist(_ allowlist: Allowlist) throws { throw error }
}
