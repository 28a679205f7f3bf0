import ConnCore
import ConnFleet
import ConnTesting
import Testing

/// One agent's fleet side against the in-memory store.
struct Agent {
    let blocker = InMemoryBlocker()
    let events = EventCollector()
    let metrics = RecordingMetricsSink()
    let controller: BlockController
    let service: FleetService
    let keys = FleetKeys(prefix: "/conntrackr/blocks/")

    init(
        _ host: String,
        store: any FleetStore,
        policy: BlockPolicy = BlockPolicy(ttl: .seconds(600)),
        allowlist: Allowlist = Allowlist(),
        maxQueued: Int = 1024,
        healthCheckInterval: Duration = .milliseconds(50),
        clock: TestClock? = nil,
        trust: FleetTrust = FleetTrust()
    ) {
        controller = BlockController(blocker: blocker, policy: policy, allowlist: allowlist, metrics: metrics)
        let events = self.events
        let now: @Sendable () -> Timestamp
        if let clock {
            now = { clock.now }
        } else {
            now = { Timestamp.now() }
        }
        service = FleetService(
            configuration: FleetConfiguration(
                etcd: EtcdConfiguration(endpoints: ["http://127.0.0.1:1"]),
                hostName: host,
                healthCheckInterval: healthCheckInterval,
                initialBackoff: .milliseconds(20),
                maxBackoff: .milliseconds(100),
                maxQueuedPublications: maxQueued,
                trust: trust
            ),
            store: store,
            controller: controller,
            events: { events.post($0) },
            metrics: metrics,
            now: now
        )
    }

    func fleetEntry(_ prefix: String) -> BlockEntry? {
        blocker.entry(for: IPPrefix(prefix)!).flatMap { $0.origin == .fleet ? $0 : nil }
    }
}

@Suite("Fleet service against the in-memory store")
struct FleetServiceTests {
    let store = InMemoryFleetStore()
    let keys = FleetKeys(prefix: "/conntrackr/blocks/")

    func put(_ record: FleetRecord, lease: Int64? = nil) async throws {
        try await store.put(key: keys.key(for: record.prefix, host: record.host), value: record.encoded(), lease: lease)
    }

    @Test func aLocalBlockIsPublishedWithALeaseOfItsTTL() async throws {
        let agent = Agent("a", store: store, policy: BlockPolicy(ttl: .seconds(90)))
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            let events = agent.controller.handle(scan())
            guard case .blocked = events else {
                Issue.record("scan not blocked: \(events)")
                return
            }
            let key = keys.key(for: IPPrefix(host: scanner), host: "a")
            #expect(await eventually { store.value(of: key) != nil })
            let stored = try #require(store.value(of: key))
            let published = try FleetRecord(decoding: stored.value)
            #expect(published.host == "a")
            #expect(published.prefix == IPPrefix(host: scanner))
            #expect(published.ports == [22, 80, 443, 8080])
            #expect(published.reason == .portScan)
            #expect(stored.lease != 0)
            // The block's remaining time when published, in whole seconds rounded up: 90 unless the publication
            // waited (a loaded machine), never more.
            let ttl = try #require(store.ttl(ofLease: stored.lease))
            #expect(ttl <= .seconds(90) && ttl >= .seconds(80), "lease TTL \(ttl)")
            #expect(await eventually { agent.metrics.value(of: .fleetPublications) == 1 })
            // Its own publication comes back through the watch and changes nothing.
            try await Task.sleep(for: .milliseconds(100))
            #expect(agent.blocker.entry(for: IPPrefix(host: scanner))?.origin == .local)
            #expect(agent.events.all.isEmpty)
        }
    }

    @Test func aPermanentBlockIsPublishedWithoutALease() async throws {
        let agent = Agent("a", store: store, policy: BlockPolicy(ttl: nil))
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            _ = agent.controller.handle(scan())
            let key = keys.key(for: IPPrefix(host: scanner), host: "a")
            #expect(await eventually { store.value(of: key) != nil })
            #expect(store.value(of: key)?.lease == 0)
            #expect(store.calls.grantLease == 0)
        }
    }

    @Test func aBlockPublishedElsewhereIsLearnedAndLiftedWhenItsKeyGoes() async throws {
        let agent = Agent("b", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            let lease = try await store.grantLease(ttl: .seconds(600))
            try await put(record("198.51.100.20", host: "a"), lease: lease)
            // Events are handed out last, after the blocker and the metrics.
            #expect(await eventually { agent.events.blocked.count == 1 })
            #expect(agent.fleetEntry("198.51.100.20") != nil)
            #expect(agent.events.blocked.map(\.origin) == [.fleet])
            #expect(agent.metrics.value(of: .blocks(.fleet)) == 1)
            #expect(agent.service.revision == store.revision)

            store.expireLease(lease)  // as etcd does when the TTL ends
            #expect(await eventually { agent.events.unblocked.count == 1 })
            #expect(agent.blocker.entry(for: IPPrefix("198.51.100.20")!) == nil)
            #expect(agent.events.unblocked.map(\.0) == [IPPrefix("198.51.100.20")!])
            #expect(agent.events.unblocked.map(\.1) == [.removed])
            #expect(agent.metrics.value(of: .unblocks(.removed)) == 1)
        }
    }

    /// Waits for `agent` to connect, has it block ``scanner`` and waits until the watch brought its record back.
    /// - Returns: the record's key.
    func blockScannerAndSeeItsRecord(_ agent: Agent) async -> String {
        #expect(await eventually { agent.service.isConnected })
        _ = agent.controller.handle(scan())
        let key = keys.key(for: IPPrefix(host: scanner), host: "a")
        #expect(await eventually { store.value(of: key) != nil && agent.service.revision == store.revision })
        return key
    }

    @Test func deletingThisAgentsOwnKeyLiftsItsBlockAndAnotherHostsKeyDoesNot() async throws {
        let agent = Agent("a", store: store)
        try await whileRunning([agent.service]) {
            let key = await blockScannerAndSeeItsRecord(agent)
            // Another host publishes the same scanner under its own key, and losing that key lifts nothing.
            try await put(record(scanner.description, host: "b"))
            try await store.delete(key: keys.key(for: IPPrefix(host: scanner), host: "b"))
            #expect(await eventually { agent.service.revision == store.revision })
            #expect(agent.blocker.entry(for: IPPrefix(host: scanner))?.origin == .local)
            #expect(agent.events.unblocked.isEmpty)

            // This agent's own record again, then deleted by hand (`blocklist remove --fleet-etcd`): lifted here too.
            let own = try #require(agent.blocker.entry(for: IPPrefix(host: scanner)))
            try await put(FleetRecord(entry: own, scan: nil, host: "a"))
            #expect(await eventually { agent.service.revision == store.revision })
            try await store.delete(key: key)
            #expect(await eventually { agent.events.unblocked.count == 1 })
            #expect(agent.blocker.entry(for: IPPrefix(host: scanner)) == nil)
            #expect(agent.events.unblocked.map(\.1) == [.removed])
        }
    }

    @Test func anOwnKeyDeletedWhileDisconnectedIsLiftedAfterReconnecting() async throws {
        let agent = Agent("a", store: store)
        try await whileRunning([agent.service]) {
            let key = await blockScannerAndSeeItsRecord(agent)
            store.isAvailable = false
            #expect(await eventually { !agent.service.isConnected })
            store.isAvailable = true
            // `blocklist remove --fleet-etcd` while the agent is away (or just reconnecting): the key's deletion is
            // seen by the watch or found missing by the next listing; either way the block goes.
            let deleted = try await store.delete(key: key)
            #expect(deleted)
            #expect(await eventually { agent.events.unblocked.count == 1 })
            #expect(agent.blocker.entry(for: IPPrefix(host: scanner)) == nil)
        }
    }

    @Test func theAllowlistWinsOverTheFleetAndRefusalsAreCounted() async throws {
        let allowlist = Allowlist([.init(prefix: IPPrefix("198.51.100.0/24")!, reason: .configured)])
        let agent = Agent("b", store: store, allowlist: allowlist)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            try await put(record("198.51.100.30", host: "a"))
            #expect(await eventually { agent.events.notBlocked.count == 1 })
            #expect(agent.metrics.value(of: .fleetRefused(.allowlisted)) == 1)
            #expect(agent.blocker.entry(for: IPPrefix("198.51.100.30")!) == nil)
            #expect(agent.events.notBlocked.first?.1.hasPrefix("allowlisted") == true)
            #expect(agent.events.blocked.isEmpty)
        }
    }

    @Test func startingReconcilesTheBlocklistWithTheStore() async throws {
        let agent = Agent("b", store: store)
        let stale = record("198.51.100.40").learnedEntry  // learned before, no longer in the store
        let own = BlockEntry(prefix: IPPrefix("198.51.100.41")!, reason: .portScan, since: .now(), expires: nil)
        _ = agent.blocker.add(stale)
        _ = agent.blocker.add(own)
        try await put(record("198.51.100.42", host: "a"))
        try await put(record("2001:db8:7::/64", host: "c"))

        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            #expect(agent.blocker.entry(for: stale.prefix) == nil)
            #expect(agent.blocker.entry(for: own.prefix) == own)
            #expect(agent.fleetEntry("198.51.100.42") != nil)
            #expect(agent.fleetEntry("2001:db8:7::/64") != nil)
            #expect(agent.service.revision == store.revision)
            // Listed once and applied once: the watch starts after the listed revision.
            try await Task.sleep(for: .milliseconds(100))
            #expect(agent.events.blocked.count == 2)
            #expect(agent.events.unblocked.map(\.0) == [stale.prefix])
        }
    }

    @Test func changesAtOrBelowTheListedRevisionAreNotAppliedTwice() async throws {
        // A store whose watch replays history from the start, whatever revision is asked for.
        let replaying = ReplayingStore(store)
        try await put(record("198.51.100.50", host: "a"))
        try await put(record("198.51.100.52", host: "a"))
        try await store.delete(key: keys.key(for: IPPrefix("198.51.100.52")!, host: "a"))  // listed as absent
        let agent = Agent("b", store: replaying)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            try await put(record("198.51.100.51", host: "a"))
            #expect(await eventually { agent.events.blocked.count == 2 })
            #expect(agent.fleetEntry("198.51.100.51") != nil)
            try await Task.sleep(for: .milliseconds(100))
            // Replayed, the put and delete of .52 would block and lift it again; the service skips them.
            #expect(agent.events.blocked.map(\.prefix) == [IPPrefix("198.51.100.50")!, IPPrefix("198.51.100.51")!])
            #expect(agent.events.unblocked.isEmpty)
        }
    }

    @Test func afterAReconnectItListsAgainAndCatchesUpOnWhatItMissed() async throws {
        let agent = Agent("b", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            let lease = try await store.grantLease(ttl: .seconds(600))
            try await put(record("198.51.100.60", host: "a"), lease: lease)
            #expect(await eventually { agent.fleetEntry("198.51.100.60") != nil })

            store.isAvailable = false
            #expect(await eventually { !agent.service.isConnected })
            #expect(await eventually { agent.metrics.value(of: .fleetConnected) == 0 })
            store.expireLease(lease)  // the key lapses while this agent cannot see it
            store.isAvailable = true

            #expect(await eventually { agent.blocker.entry(for: IPPrefix("198.51.100.60")!) == nil })
            #expect(await eventually { agent.metrics.value(of: .fleetConnected) == 1 })
            #expect(agent.service.isConnected)
            #expect(store.calls.list >= 2)
        }
    }

    @Test func publicationsQueueWhileTheStoreIsAwayAndGoOutWhenItIsBack() async throws {
        let agent = Agent("a", store: store)
        store.isAvailable = false
        try await whileRunning([agent.service]) {
            let events = agent.controller.handle(scan())
            // Local blocking does not wait for the fleet.
            guard case .blocked = events else {
                Issue.record("scan not blocked: \(events)")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
            #expect(!agent.service.isConnected)
            #expect(agent.service.queuedPublications == 1)
            #expect(store.keys.isEmpty)

            store.isAvailable = true
            #expect(await eventually { store.keys == [keys.key(for: IPPrefix(host: scanner), host: "a")] })
            #expect(agent.service.queuedPublications == 0)
            #expect(await eventually { agent.metrics.value(of: .fleetPublications) == 1 })
        }
    }

    @Test func theQueueIsBoundedAndDropsTheOldest() async throws {
        let agent = Agent("a", store: store, maxQueued: 3)
        store.isAvailable = false
        try await whileRunning([agent.service]) {
            let sources = (1...5).map { IPAddress("198.51.100.\(70 + $0)")! }
            for source in sources { _ = agent.controller.handle(scan(from: source)) }
            #expect(agent.service.queuedPublications == 3)
            #expect(agent.metrics.value(of: .fleetPublicationsDropped) == 2)

            store.isAvailable = true
            let newest = sources.suffix(3).map { keys.key(for: IPPrefix(host: $0), host: "a") }.sorted()
            #expect(await eventually { store.keys == newest })
            #expect(await eventually { agent.metrics.value(of: .fleetPublications) == 3 })
        }
    }

    @Test func aPublicationThatFailsIsRetriedAfterReconnecting() async throws {
        let agent = Agent("a", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            store.failNextPuts(1)
            _ = agent.controller.handle(scan())
            #expect(await eventually { store.keys == [keys.key(for: IPPrefix(host: scanner), host: "a")] })
            #expect(store.calls.put == 2)
            #expect(store.calls.list >= 2)  // the failure ended the session; the next one listed again
            #expect(agent.metrics.value(of: .fleetPublicationsDropped) == 0)
        }
    }

    @Test func aMalformedValueIsSkippedAndTheRestApplied() async throws {
        try await store.put(key: "/conntrackr/blocks/other/198.51.100.80_32", value: Array("garbage".utf8), lease: nil)
        try await store.put(
            key: "/conntrackr/blocks/other/not-a-prefix",
            value: record("198.51.100.81").encoded(),
            lease: nil
        )
        // A record stored under another prefix's key is not trusted.
        try await store.put(
            key: "/conntrackr/blocks/other/198.51.100.82_32",
            value: record("198.51.100.83").encoded(),
            lease: nil
        )
        try await put(record("198.51.100.84"))
        let agent = Agent("b", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            let applied = agent.blocker.entries().map(\.prefix)
            #expect(applied == [IPPrefix("198.51.100.84")!])
            try await store.put(key: "/conntrackr/blocks/other/198.51.100.85_32", value: [0xff, 0x00], lease: nil)
            try await put(record("198.51.100.86"))
            #expect(await eventually { agent.fleetEntry("198.51.100.86") != nil })
            #expect(agent.blocker.entry(for: IPPrefix("198.51.100.85")!) == nil)
        }
    }

    @Test func learnedBlocksRefusedForTheRateLimitAreRetriedLater() async throws {
        let clock = TestClock()
        let agent = Agent("b", store: store, policy: BlockPolicy(maxFleetBlocksPerMinute: 1), clock: clock)
        try await put(record("198.51.100.90", since: clock.now))
        try await put(record("198.51.100.91", since: clock.now))
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            let applied = agent.blocker.entries()
            #expect(applied.count == 1)
            #expect(agent.metrics.value(of: .fleetRefused(.rateLimited)) == 1)
            #expect(agent.events.notBlocked.map(\.1) == ["rate_limited"])

            clock.advance(by: .seconds(61))
            #expect(await eventually { agent.events.blocked.count == 2 })
            #expect(agent.blocker.entries().count == 2)
            #expect(agent.metrics.value(of: .fleetRefused(.rateLimited)) == 1)  // reported once
        }
    }

    @Test func twoAgentsShareABlock() async throws {
        let a = Agent("a", store: store)
        let b = Agent("b", store: store)
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            _ = a.controller.handle(scan())
            #expect(await eventually { b.events.blocked.count == 1 })
            #expect(b.fleetEntry(scanner.description) != nil)
            #expect(a.blocker.entry(for: IPPrefix(host: scanner))?.origin == .local)
            #expect(b.events.blocked.map(\.prefix) == [IPPrefix(host: scanner)])
        }
    }

    @Test func stoppingEndsTheWatchAndShutsDown() async throws {
        let agent = Agent("a", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { store.openWatches == 1 })
        }
        #expect(await eventually { store.openWatches == 0 })
        #expect(!agent.service.isConnected)
    }
}

/// A store whose watches replay from revision 1, to show the service itself skips what it already reflects.
final class ReplayingStore: FleetStore {
    let inner: InMemoryFleetStore
    init(_ inner: InMemoryFleetStore) { self.inner = inner }
    func grantLease(ttl: Duration) async throws -> Int64 { try await inner.grantLease(ttl: ttl) }
    func put(key: String, value: [UInt8], lease: Int64?) async throws {
        try await inner.put(key: key, value: value, lease: lease)
    }
    func list(prefix: String) async throws -> FleetListing { try await inner.list(prefix: prefix) }
    func watch(prefix: String, fromRevision revision: Int64) -> AsyncThrowingStream<[FleetChange], any Error> {
        inner.watch(prefix: prefix, fromRevision: 1)
    }
    func delete(key: String) async throws -> Bool { try await inner.delete(key: key) }
    func checkHealth() async throws { try await inner.checkHealth() }
    func shutdown() async throws {}
}
