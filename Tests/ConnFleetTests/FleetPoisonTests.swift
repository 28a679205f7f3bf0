import ConnCore
import ConnFleet
import ConnTesting
import Testing

/// Issue 13: a poisoned store (anyone with write access to etcd) against an agent's fleet service.
@Suite("A fleet that cannot be turned against itself")
struct FleetPoisonTests {
    let store = InMemoryFleetStore()
    let keys = FleetKeys(prefix: "/conntrackr/blocks/")

    func put(_ record: FleetRecord, lease: Int64? = nil) async throws {
        try await store.put(key: keys.key(for: record.prefix, host: record.host), value: record.encoded(), lease: lease)
    }

    func putText(_ key: String, _ text: String) async throws {
        try await store.put(key: key, value: Array(text.utf8), lease: nil)
    }

    /// Everything the issue found, written before the agent starts (listed) and again while it runs (watched).
    func poison(at now: Timestamp, tag: Int) async throws {
        let since = now.nanoseconds
        try await put(record("128.0.0.0/1", host: "evil", since: now))
        try await putText(
            "/conntrackr/blocks/evil/198.51.100.\(100 + tag)_32",
            #"{"prefix":"198.51.100.\#(100 + tag)/32","host":"evil","reason":"port_scan","since_ns":\#(since)}"#
        )
        try await putText(
            "/conntrackr/blocks/evil/198.51.100.\(110 + tag)_32",
            #"{"prefix":"198.51.100.\#(110 + tag)/32","host":"evil","reason":"port_scan","since_ns":\#(since),"#
                + #""expires_ns":9223372036854775807}"#
        )
        try await store.put(
            key: "/conntrackr/blocks/evil/128.0.0.1_1",
            value: record("128.0.0.0/1", host: "evil", since: now).encoded(),
            lease: nil
        )
        try await store.put(
            key: "/conntrackr/blocks/evil/198.51.100.\(120 + tag)_32",
            value: Array(repeating: UInt8(ascii: " "), count: 1 << 20),
            lease: nil
        )
        // The store's own address (allowlisted as fleet infrastructure by every agent).
        try await put(record("203.0.113.2", host: "evil", since: now))
    }

    @Test("Wide, malformed, aliased, oversized and infrastructure records are refused; times are clamped")
    func aPoisonedStoreIsRefused() async throws {
        let clock = TestClock()
        let infrastructure = Allowlist([.init(prefix: IPPrefix("203.0.113.2")!, reason: .fleetInfrastructure)])
        let agent = Agent(
            "b", store: store, policy: BlockPolicy(ttl: .seconds(600)), allowlist: infrastructure, clock: clock,
            trust: FleetTrust(maxLifetime: .seconds(600))
        )
        try await poison(at: clock.now, tag: 0)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            try await poison(at: clock.now, tag: 1)
            #expect(await eventually { agent.service.revision == store.revision })
            let entries = agent.blocker.entries()
            // Only the permanent and the Int64.max records are applied, each clamped to now + the local TTL.
            #expect(
                Set(entries.map(\.prefix.description))
                    == ["198.51.100.100/32", "198.51.100.101/32", "198.51.100.110/32", "198.51.100.111/32"]
            )
            for entry in entries {
                #expect(entry.origin == .fleet)
                #expect(entry.expires.map { $0 <= clock.now + .seconds(600) } == true)
            }
            #expect(agent.metrics[.fleetRefused(.tooWide)] == 2)
            #expect(agent.metrics[.fleetRefused(.key)] == 2)
            #expect(agent.metrics[.fleetRefused(.tooLarge)] == 2)
            #expect(agent.metrics[.fleetRefused(.allowlisted)] == 2)
            #expect(agent.blocker.entry(for: IPPrefix("203.0.113.2")!) == nil)
        }
    }

    @Test("A burst of records keeps to the fleet's budget and leaves the local one whole")
    func aBurstKeepsToTheBudget() async throws {
        let clock = TestClock()
        let agent = Agent(
            "b", store: store,
            policy: BlockPolicy(ttl: .seconds(600), maxBlocksPerMinute: 5, maxFleetBlocksPerMinute: 50),
            clock: clock
        )
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            for index in 0..<2000 {
                let address = "2001:db8:\(index / 256):\(index % 256)::"
                try await put(record("\(address)/64", host: "storm", since: clock.now))
            }
            #expect(await eventually { agent.service.revision == store.revision })
            #expect(agent.blocker.entries().count == 50)
            #expect(agent.metrics[.fleetRefused(.rateLimited)] == 1950)
            // This agent's own budget is whole.
            #expect(agent.controller.handle(scan(at: clock.now)).entry != nil)
        }
    }

    @Test("The records kept from the store are bounded; beyond, they are counted, not kept")
    func theRecordsKeptAreBounded() async throws {
        for index in 1...20 { try await put(record("198.51.100.\(index)", host: "storm")) }
        let agent = Agent("b", store: store, trust: FleetTrust(maxRecords: 8))
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            #expect(agent.blocker.entries().count == 8)
            #expect(agent.metrics[.fleetRefused(.listingLimit)] == 12)
            try await put(record("198.51.100.30", host: "storm"))
            #expect(await eventually { agent.metrics[.fleetRefused(.listingLimit)] == 13 })
            #expect(agent.blocker.entry(for: IPPrefix("198.51.100.30")!) == nil)
        }
    }

    @Test("With K = 2, one host's report is not applied; a second host's report applies it")
    func minReporters() async throws {
        let a = Agent("a", store: store, trust: FleetTrust(minReporters: 2))
        let b = Agent("b", store: store, trust: FleetTrust(minReporters: 2))
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            _ = a.controller.handle(scan())
            #expect(await eventually { b.service.revision == store.revision && store.keys.count == 1 })
            try await Task.sleep(for: .milliseconds(100))
            #expect(b.fleetEntry(scanner.description) == nil)
            // A second host ("c") reports the same source: now two distinct hosts did.
            try await put(record(scanner.description, host: "c"))
            #expect(await eventually { b.fleetEntry(scanner.description) != nil })
            // The fleet-wide unblock deletes every report of the prefix, and every copy goes.
            let deleted = try await FleetUnblock.remove(IPPrefix(host: scanner), keyPrefix: keys.prefix, store: store)
            #expect(deleted.count == 2)
            #expect(await eventually { b.fleetEntry(scanner.description) == nil })
            #expect(await eventually { a.blocker.entry(for: IPPrefix(host: scanner)) == nil })
            #expect(store.keys.isEmpty)
        }
    }

    @Test func unblockingWhatTheFleetDoesNotHoldSaysSo() async throws {
        try await put(record("198.51.100.5", host: "a"))
        await #expect(throws: ConntrackrError.self) {
            try await FleetUnblock.remove(IPPrefix("198.51.100.6")!, keyPrefix: keys.prefix, store: store)
        }
        #expect(store.keys.count == 1)
    }

    @Test func publishingWritesUnderThisHostsOwnKeyPrefix() async throws {
        let agent = Agent("web-1", store: store)
        try await whileRunning([agent.service]) {
            #expect(await eventually { agent.service.isConnected })
            _ = agent.controller.handle(scan())
            #expect(await eventually { store.keys == ["/conntrackr/blocks/web-1/\(scanner)_32"] })
        }
    }
}

extension BlockDecision {
    fileprivate var entry: BlockEntry? { if case .blocked(let entry) = self { entry } else { nil } }
}
