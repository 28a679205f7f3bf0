import Synchronization

/// A ``FleetStore`` in memory with etcd's revision semantics, for tests and embedders.
///
/// Every put and delete takes the next revision; watches replay history from any revision not compacted away.
/// Leases do not lapse on their own: call ``expireLease(_:)`` to do what etcd does when a TTL ends. Set
/// ``isAvailable`` to `false` to act as an etcd that went away: calls fail, open watches end with an error.
public final class InMemoryFleetStore: FleetStore {
    fileprivate struct Watcher {
        var prefix: String
        var continuation: AsyncThrowingStream<[FleetChange], any Error>.Continuation
    }

    fileprivate struct State {
        var revision: Int64 = 1  // etcd starts at revision 1 with no keys
        var values: [String: FleetKeyValue] = [:]
        var history: [FleetChange] = []
        var compactedThrough: Int64 = 0
        var leases: [Int64: Duration] = [:]
        var nextLease: Int64 = 0x1000
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
        var available = true
        var calls = Calls()
        var failingPuts = 0
    }

    /// How many times each operation was called, successful or not.
    public struct Calls: Hashable, Sendable {
        public var grantLease = 0
        public var put = 0
        public var list = 0
        public var watch = 0
        public var delete = 0
        public var checkHealth = 0
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: FleetStore

    public func grantLease(ttl: Duration) async throws -> Int64 {
        try state.withLock { state in
            state.calls.grantLease += 1
            try state.requireAvailable()
            state.nextLease += 1
            state.leases[state.nextLease] = ttl
            return state.nextLease
        }
    }

    public func put(key: String, value: [UInt8], lease: Int64?) async throws {
        try state.withLock { state in
            state.calls.put += 1
            try state.requireAvailable()
            if state.failingPuts > 0 {
                state.failingPuts -= 1
                throw FleetError(.unavailable, "in-memory store: put failed on request")
            }
            if let lease, state.leases[lease] == nil {
                throw FleetError(.rejected, "in-memory store: requested lease \(lease) not found")
            }
            state.revision += 1
            let stored = FleetKeyValue(key: key, value: value, modRevision: state.revision, lease: lease ?? 0)
            state.values[key] = stored
            state.record([.put(stored)])
        }
    }

    public func list(prefix: String) async throws -> FleetListing {
        try state.withLock { state in
            state.calls.list += 1
            try state.requireAvailable()
            let values = state.values.values.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }
            return FleetListing(values: values, revision: state.revision)
        }
    }

    public func watch(prefix: String, fromRevision revision: Int64) -> AsyncThrowingStream<[FleetChange], any Error> {
        let (stream, continuation) = AsyncThrowingStream<[FleetChange], any Error>.makeStream()
        let id: Int? = state.withLock { state in
            state.calls.watch += 1
            if !state.available {
                continuation.finish(throwing: FleetError(.unavailable, "in-memory store is unavailable"))
                return nil
            }
            if revision <= state.compactedThrough {
                continuation.finish(throwing: FleetError(.compacted, "revision \(revision) has been compacted"))
                return nil
            }
            // Replay what happened since `revision`, one batch per revision as etcd groups them.
            var batch: [FleetChange] = []
            for change in state.history where change.key.hasPrefix(prefix) && change.revision >= revision {
                if let last = batch.last, last.revision != change.revision {
                    continuation.yield(batch)
                    batch = []
                }
                batch.append(change)
            }
            if !batch.isEmpty { continuation.yield(batch) }
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = Watcher(prefix: prefix, continuation: continuation)
            return state.nextWatcher
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
            }
        }
        return stream
    }

    @discardableResult
    public func delete(key: String) async throws -> Bool {
        try state.withLock { state in
            state.calls.delete += 1
            try state.requireAvailable()
            guard state.values.removeValue(forKey: key) != nil else { return false }
            state.revision += 1
            state.record([.delete(key: key, revision: state.revision)])
            return true
        }
    }

    public func checkHealth() async throws {
        try state.withLock { state in
            state.calls.checkHealth += 1
            try state.requireAvailable()
        }
    }

    public func shutdown() async throws {}

    // MARK: Controls for tests

    /// Whether calls succeed. Setting it to `false` ends every open watch with an ``FleetError/Code/unavailable``
    /// error, as a lost connection does.
    public var isAvailable: Bool {
        get { state.withLock { $0.available } }
        set {
            let ended = state.withLock { state -> [Watcher] in
                state.available = newValue
                guard !newValue else { return [] }
                defer { state.watchers.removeAll() }
                return Array(state.watchers.values)
            }
            for watcher in ended {
                watcher.continuation.finish(throwing: FleetError(.unavailable, "in-memory store went away"))
            }
        }
    }

    /// Makes the next `count` puts fail as if the connection dropped during them.
    public func failNextPuts(_ count: Int) {
        state.withLock { $0.failingPuts = count }
    }

    /// Ends `lease` as etcd does when its TTL runs out: its keys are deleted, in one revision.
    public func expireLease(_ lease: Int64) {
        state.withLock { state in
            guard state.leases.removeValue(forKey: lease) != nil else { return }
            let keys = state.values.values.filter { $0.lease == lease }.map(\.key).sorted()
            guard !keys.isEmpty else { return }
            state.revision += 1
            for key in keys { state.values.removeValue(forKey: key) }
            state.record(keys.map { .delete(key: $0, revision: state.revision) })
        }
    }

    /// Forgets history up to and including `revision`: watches from it or earlier fail with
    /// ``FleetError/Code/compacted``.
    public func compact(through revision: Int64) {
        state.withLock { state in
            state.compactedThrough = max(state.compactedThrough, revision)
            state.history.removeAll { $0.revision <= state.compactedThrough }
        }
    }

    /// The current revision.
    public var revision: Int64 { state.withLock { $0.revision } }

    /// The stored value of `key`.
    public func value(of key: String) -> FleetKeyValue? { state.withLock { $0.values[key] } }

    /// Every stored key.
    public var keys: [String] { state.withLock { $0.values.keys.sorted() } }

    /// The TTL a lease was granted with, while it lasts.
    public func ttl(ofLease lease: Int64) -> Duration? { state.withLock { $0.leases[lease] } }

    /// Counts of calls so far.
    public var calls: Calls { state.withLock { $0.calls } }

    /// Watches currently open.
    public var openWatches: Int { state.withLock { $0.watchers.count } }
}

extension InMemoryFleetStore.State {
    fileprivate func requireAvailable() throws {
        guard available else { throw FleetError(.unavailable, "in-memory store is unavailable") }
    }

    /// Appends `changes` (of one revision) to the history and hands them to the matching watchers, under the lock
    /// so that every watcher sees revisions in order.
    fileprivate mutating func record(_ changes: [FleetChange]) {
        history += changes
        for watcher in watchers.values {
            let matching = changes.filter { $0.key.hasPrefix(watcher.prefix) }
            if !matching.isEmpty { watcher.continuation.yield(matching) }
        }
    }
}
