public import ConnCore
public import Logging
public import ServiceLifecycle
import Synchronization

/// Fleet mode: shares this agent's blocks with other hosts through a ``FleetStore`` (etcd), and applies theirs.
///
/// - Publishing: every block the ``ConnCore/BlockController`` decides on its own is queued from the capture thread
///   (never blocking it) and put under this host's key (``FleetKeys/key(for:host:)``) as a ``FleetRecord``, attached
///   to a lease whose TTL is the block's remaining time, so the key lapses fleet-wide with the block. Permanent
///   blocks get no lease.
/// - Learning: on connecting, the service lists the prefix and reconciles the local blocklist with it
///   (``FleetReconciler``), then watches from the listed revision + 1, so no change is missed or applied twice.
///   Every record is checked first (``FleetTrust``: canonical key, prefix width, size, clamped times; refusals
///   counted by reason and logged at a bounded rate), and a prefix is applied only once
///   ``FleetTrust/minReporters`` distinct hosts reported it (``FleetReports``).
///   Learned blocks go through ``ConnCore/BlockController/applyLearned(_:at:)``: the local allowlist wins, refusals
///   are logged and counted. Its own publications come back through the watch and change nothing, since the local
///   entry is already there.
/// - Outages: when the store cannot be reached, or a watch, publication or health check fails, the service marks
///   itself disconnected, waits (capped exponential backoff with jitter) and starts again with a new listing.
///   Capture and local blocking never wait for it; publications queue (bounded) until the store is back.
///
/// Events (learned blocks, fleet blocks lifted, refusals) are handed to `events`, normally
/// `pipeline.inbox.post`.
public final class FleetService: Service, Sendable {
    public let configuration: FleetConfiguration
    public let store: any FleetStore
    private let controller: BlockController
    private let emit: @Sendable ([ConnEvent]) -> Void
    private let metrics: any MetricsSink
    private let logger: Logger
    private let now: @Sendable () -> Timestamp
    private let keys: FleetKeys
    private var trust: FleetTrust { configuration.trust }
    private let queue: PublicationQueue
    private let state = Mutex(State())

    private struct State {
        var connected = false
        /// The store revision the local blocklist reflects.
        var revision: Int64 = 0
        /// Failed connection attempts since the last successful listing.
        var failures = 0
        /// Learned blocks refused for a limit that may lift (rate limit, full blocklist), retried on each health
        /// check. Reported once, when first refused; at most ``FleetService/maxDeferred``.
        var deferred: [IPPrefix: BlockEntry] = [:]
        /// The store's checked reports, as last listed and watched.
        var reports = FleetReports()
        /// When each refusal reason was last logged, and how many went unlogged since.
        var refusalLog: [FleetRefusalReason: (logged: Int64, unlogged: Int)] = [:]
        /// Whether a dropped publication was logged since the last connection, so an outage logs one line.
        var loggedDrop = false
    }

    /// The most learned blocks kept for a retry; more are dropped (they were counted and reported when refused,
    /// and the next listing finds them again).
    static let maxDeferred = 4096
    /// Fleet records refused are counted and (for local policy) reported as events, but logged at most once per
    /// reason in this many nanoseconds: a poisoned store would otherwise write a log line per key.
    static let refusalLogInterval: Int64 = 10_000_000_000

    /// Makes a fleet service and registers it with `controller` to publish its blocks.
    /// - Parameters:
    ///   - store: the shared store; the service shuts it down when ``run()`` returns.
    ///   - controller: where local blocks come from and learned blocks go; it calls the service for every local
    ///     block from now on (replacing any other handler given to ``ConnCore/BlockController/onLocalBlock(_:)``).
    ///   - events: receives the events of learned and lifted blocks; called from the service's task.
    ///   - now: the clock, for tests.
    public init(
        configuration: FleetConfiguration,
        store: any FleetStore,
        controller: BlockController,
        events: @escaping @Sendable ([ConnEvent]) -> Void,
        metrics: any MetricsSink = DiscardingMetricsSink(),
        logger: Logger = Logger(label: "conntrackr.fleet"),
        now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) {
        self.configuration = configuration
        self.store = store
        self.controller = controller
        self.emit = events
        self.metrics = metrics
        self.logger = logger
        self.now = now
        self.keys = FleetKeys(prefix: configuration.keyPrefix)
        self.queue = PublicationQueue(capacity: configuration.maxQueuedPublications)
        controller.onLocalBlock { [weak self] entry, scan in
            self?.enqueue(FleetRecord(entry: entry, scan: scan, host: configuration.hostName))
        }
    }

    /// Makes a fleet service talking to the etcd of `configuration` (see ``EtcdStore``).
    /// - Throws: a ``FleetError`` with code ``FleetError/Code/invalidConfiguration`` for a bad endpoint or TLS file.
    public convenience init(
        configuration: FleetConfiguration,
        controller: BlockController,
        events: @escaping @Sendable ([ConnEvent]) -> Void,
        metrics: any MetricsSink = DiscardingMetricsSink(),
        logger: Logger = Logger(label: "conntrackr.fleet")
    ) throws {
        let store = try EtcdStore(configuration: configuration.etcd, logger: logger)
        self.init(
            configuration: configuration,
            store: store,
            controller: controller,
            events: events,
            metrics: metrics,
            logger: logger
        )
    }

    /// Whether the service has listed the store and is watching it.
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// The store revision the local blocklist reflects (0 before the first listing).
    public var revision: Int64 { state.withLock { $0.revision } }

    /// Publications waiting for the store.
    public var queuedPublications: Int { queue.count }

    /// Runs until cancelled or shut down gracefully; never fails because the store is away.
    public func run() async throws {
        metrics.set(.fleetConnected, to: 0)
        await cancelWhenGracefulShutdown { await self.maintainConnection() }
        setConnected(false)
        do {
            try await store.shutdown()
        } catch {
            logger.debug("fleet store did not shut down cleanly", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Connection

    private func maintainConnection() async {
        while !Task.isCancelled {
            do {
                try await runSession()
            } catch {
                if Task.isCancelled { break }
                let failures = state.withLock { state in
                    defer { state.failures += 1 }
                    return state.failures
                }
                let wasConnected = setConnected(false)
                let delay = configuration.backoff(afterFailures: failures, jitter: Double.random(in: 0.5...1))
                let metadata: Logger.Metadata = [
                    "error": "\(error)", "retry_in": "\(delay)", "queued": "\(queue.count)",
                ]
                if wasConnected || failures == 0 {
                    logger.warning(
                        "fleet store unreachable; blocking goes on locally, publications queue",
                        metadata: metadata
                    )
                } else {
                    logger.debug("fleet store still unreachable", metadata: metadata)
                }
                do {
                    try await Task.sleep(for: delay)
                } catch {
                    break
                }
            }
        }
    }

    /// One connection: list, reconcile, then watch, publish and check health until one of them fails.
    private func runSession() async throws {
        let listing = try await store.list(prefix: keys.prefix)
        try reconcile(with: listing)
        state.withLock {
            $0.failures = 0
            $0.loggedDrop = false
        }
        setConnected(true)
        logger.info(
            "fleet connected",
            metadata: [
                "revision": "\(listing.revision)", "keys": "\(listing.values.count)", "queued": "\(queue.count)",
            ]
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.follow(from: listing.revision + 1) }
            group.addTask { try await self.publishQueued() }
            group.addTask { try await self.checkHealthPeriodically() }
            // None of them returns while all is well: the first to end, by error or not, ends the session.
            try await group.next()
            throw FleetError(.unavailable, "fleet session ended")
        }
    }

    @discardableResult
    private func setConnected(_ connected: Bool) -> Bool {
        let was = state.withLock { state in
            defer { state.connected = connected }
            return state.connected
        }
        metrics.set(.fleetConnected, to: connected ? 1 : 0)
        return was
    }

    // MARK: Learning

    private func reconcile(with listing: FleetListing) throws {
        let time = now()
        var reports = FleetReports()
        var bytes = 0
        if listing.omitted > 0 { refused(.listingLimit, count: listing.omitted, "store listing over its bounds", time) }
        for value in listing.values {
            bytes += value.value.count
            guard reports.count < trust.maxRecords, bytes <= trust.maxListingBytes else {
                refused(.listingLimit, "beyond \(trust.maxRecords) records or \(trust.maxListingBytes) bytes", time)
                continue
            }
            if let record = checked(value, at: time) { reports.put(record) }
        }
        let local = try controller.entries()
        let records = reports.prefixes.compactMap {
            reports.effective(for: $0, minReporters: trust.minReporters, now: time)
        }
        let withdrawn = state.withLock { state -> [IPPrefix: FleetRecord] in
            // Own records seen before and missing now were deleted while the watch was down, unless the store
            // went back in time (a new or restored cluster), where missing records say nothing.
            let storeMovedOn = listing.revision >= state.revision
            var missing: [IPPrefix: FleetRecord] = [:]
            if storeMovedOn {
                for blocked in state.reports.prefixes {
                    guard let own = state.reports.report(of: blocked, by: configuration.hostName),
                        reports.report(of: blocked, by: configuration.hostName) == nil
                    else { continue }
                    missing[blocked] = own
                }
            }
            state.revision = listing.revision
            state.deferred.removeAll()
            state.reports = reports
            return missing
        }
        let plan = FleetReconciler.reconcile(local: local, listed: records, withdrawn: withdrawn, now: time)
        execute(plan)
    }

    /// The checked record stored in `value`, or `nil` (counted, logged at a bounded rate) when it may not be
    /// applied.
    private func checked(_ value: FleetKeyValue, at time: Timestamp) -> FleetRecord? {
        do throws(FleetRecordRefusal) {
            return try trust.check(key: value.key, value: value.value, keys: keys, now: time)
        } catch {
            refused(error.reason, "\(error.message) (key \(error.key))", time)
            return nil
        }
    }

    /// Counts `count` refusals for `reason`, and logs one line unless one of that reason was logged less than
    /// ``refusalLogInterval`` ago.
    private func refused(_ reason: FleetRefusalReason, count: Int = 1, _ message: String, _ time: Timestamp) {
        metrics.increment(.fleetRefused(reason), by: count)
        let unlogged = state.withLock { state -> Int? in
            if let last = state.refusalLog[reason],
                time.nanoseconds.saturatingAdding(-last.logged) < Self.refusalLogInterval
            {
                state.refusalLog[reason]?.unlogged += count
                return nil
            }
            defer { state.refusalLog[reason] = (time.nanoseconds, 0) }
            return state.refusalLog[reason]?.unlogged ?? 0
        }
        guard let unlogged else { return }
        var metadata: Logger.Metadata = ["reason": "\(reason.rawValue)", "detail": "\(message)"]
        if count > 1 { metadata["count"] = "\(count)" }
        if unlogged > 0 { metadata["unlogged_since_last"] = "\(unlogged)" }
        logger.warning("fleet record refused (see conntrackr_fleet_refused_total)", metadata: metadata)
    }

    private func follow(from revision: Int64) async throws {
        for try await batch in store.watch(prefix: keys.prefix, fromRevision: revision) {
            try apply(batch)
        }
        throw FleetError(.unavailable, "fleet watch ended")
    }

    /// Applies changes seen by the watch. Changes at or below the revision already reflected are skipped, so a
    /// store that replays (or a watch started too early) cannot apply anything twice.
    func apply(_ batch: [FleetChange]) throws {
        let floor = state.withLock { $0.revision }
        let fresh = batch.filter { $0.revision > floor }
        guard let newest = fresh.map(\.revision).max() else { return }
        let time = now()
        // Each change, checked: a put of a record that may not be applied removes what its key held before.
        var changes: [(host: String, prefix: IPPrefix, record: FleetRecord?)] = []
        for change in fresh {
            switch change {
            case .put(let value):
                guard let named = keys.parse(value.key) else {
                    refused(.key, "not the canonical key of a host's report (key \(value.key.prefix(200)))", time)
                    continue
                }
                changes.append((named.host, named.blocked, checked(value, at: time)))
            case .delete(let key, _):
                guard let named = keys.parse(key) else { continue }
                changes.append((named.host, named.blocked, nil))
            }
        }
        // Read before committing the batch: if this throws, the reconnect's listing still sees what changed.
        let local = try controller.entries()
        let (effective, withdrawn, overCap) = state.withLock { state in
            state.revision = newest
            var withdrawn: [IPPrefix: FleetRecord] = [:]
            var touched: [IPPrefix] = []
            var overCap = 0
            for change in changes {
                state.deferred.removeValue(forKey: change.prefix)
                touched.append(change.prefix)
                if let record = change.record {
                    if state.reports.report(of: change.prefix, by: change.host) == nil,
                        state.reports.count >= trust.maxRecords
                    {
                        overCap += 1  // counted below, outside the lock
                        continue
                    }
                    state.reports.put(record)
                    if change.host == configuration.hostName { withdrawn[change.prefix] = nil }
                } else if let removed = state.reports.remove(change.prefix, host: change.host),
                    change.host == configuration.hostName
                {
                    withdrawn[change.prefix] = removed
                }
            }
            var seen = Set<IPPrefix>()
            let effective = touched.filter { seen.insert($0).inserted }.map { prefix in
                (prefix: prefix, record: state.reports.effective(for: prefix, minReporters: trust.minReporters, now: time))
            }
            return (effective, withdrawn, overCap)
        }
        if overCap > 0 { refused(.listingLimit, count: overCap, "more than \(trust.maxRecords) records kept", time) }
        guard !effective.isEmpty else { return }
        let plan = FleetReconciler.update(local: local, changes: effective, withdrawn: withdrawn, now: time)
        execute(plan)
    }

    private func execute(_ plan: FleetReconciler.Plan) {
        guard !plan.isEmpty else { return }
        let time = now()
        var events: [ConnEvent] = []
        for prefix in plan.remove {
            do {
                if let lifted = try controller.lift(prefix, at: time) { events.append(lifted) }
            } catch {
                logger.error(
                    "could not lift a fleet block",
                    metadata: ["prefix": "\(prefix)", "error": "\(error)"]
                )
            }
        }
        for entry in plan.add {
            let decision = controller.applyLearned(entry, at: time)
            if case .refused(let refusal) = decision {
                refused(FleetRefusalReason(refusal.kind), "\(entry.prefix): \(refusal)", time)
                if refusal.mayLift {
                    state.withLock { state in
                        if state.deferred.count < Self.maxDeferred || state.deferred[entry.prefix] != nil {
                            state.deferred[entry.prefix] = entry
                        }
                    }
                }
            }
            events.append(decision.event(about: entry.prefix.address, at: time))
        }
        emit(events)
    }

    /// Applies again the learned blocks refused for a limit, quietly while they are still refused.
    private func retryDeferred() {
        let deferred = state.withLock { $0.deferred }
        guard !deferred.isEmpty, let local = try? controller.entries() else { return }
        let present = Set(local.map(\.prefix))
        let time = now()
        var events: [ConnEvent] = []
        for (prefix, entry) in deferred.sorted(by: { $0.key.description < $1.key.description }) {
            if present.contains(prefix) || entry.expires.map({ $0 <= time }) ?? false {
                state.withLock { _ = $0.deferred.removeValue(forKey: prefix) }
                continue
            }
            let decision = controller.applyLearned(entry, at: time)
            if case .refused(let refusal) = decision {
                // The fleet's budget is spent: the rest would be refused too, so leave them for the next check.
                if refusal.mayLift { break }
                continue
            }
            // Only if no watch change replaced it meanwhile.
            state.withLock { state in
                if state.deferred[prefix] == entry { state.deferred.removeValue(forKey: prefix) }
            }
            events.append(decision.event(about: entry.prefix.address, at: time))
        }
        emit(events)
    }

    private func checkHealthPeriodically() async throws {
        while true {
            try await Task.sleep(for: configuration.healthCheckInterval)
            try await store.checkHealth()
            retryDeferred()
        }
    }

    // MARK: Publishing

    private func enqueue(_ record: FleetRecord) {
        let dropped = queue.push(record)
        guard dropped > 0 else { return }
        metrics.increment(.fleetPublicationsDropped, by: dropped)
        let firstDrop = state.withLock { state in
            defer { state.loggedDrop = true }
            return !state.loggedDrop
        }
        if firstDrop {
            logger.warning(
                "fleet publication queue full; dropping the oldest (see conntrackr_fleet_publications_dropped_total)",
                metadata: ["capacity": "\(queue.capacity)"]
            )
        }
    }

    private func publishQueued() async throws {
        while true {
            try Task.checkCancellation()
            while let record = queue.popFirst() {
                do {
                    try await publish(record)
                } catch let error as FleetError where error.code == .rejected {
                    // Retrying will not help (permission denied, invalid argument): drop it rather than block the
                    // queue behind it.
                    metrics.increment(.fleetPublicationsDropped, by: 1)
                    logger.error(
                        "fleet store rejected a publication; dropped",
                        metadata: ["prefix": "\(record.prefix)", "error": "\(error)"]
                    )
                } catch {
                    metrics.increment(.fleetPublicationsDropped, by: queue.pushFront(record))
                    throw error
                }
            }
            try await queue.waitForPush()
        }
    }

    private func publish(_ record: FleetRecord) async throws {
        let time = now()
        var lease: Int64?
        if let expires = record.expires {
            let remaining = expires.nanoseconds &- time.nanoseconds
            guard remaining > 0 else {
                logger.debug("block expired before it could be published", metadata: ["prefix": "\(record.prefix)"])
                return
            }
            // Whole seconds, rounded up: etcd's TTLs are in seconds, and a key outliving its block by less than
            // a second is harmless, while one lapsing early would lift the block early elsewhere.
            let seconds = (remaining + 999_999_999) / 1_000_000_000
            lease = try await store.grantLease(ttl: .seconds(seconds))
        }
        try await store.put(
            key: keys.key(for: record.prefix, host: configuration.hostName),
            value: record.encoded(),
            lease: lease
        )
        metrics.increment(.fleetPublications, by: 1)
        logger.debug("block published to the fleet", metadata: ["prefix": "\(record.prefix)"])
    }
}
