import ConnCore
import ConnFleet
import ConnTesting
import Foundation
import Testing

/// Fleet mode against a real etcd started by the test on 127.0.0.1 (Debian's etcd-server; `make test` installs it).
@Suite(
    "Fleet mode against a real etcd",
    .serialized,
    .enabled(
        if: EtcdServer.unavailableReason == nil,
        "etcd or etcdctl is not installed: apt-get install etcd-server etcd-client"
    )
)
struct EtcdIntegrationTests {
    let keys = FleetKeys(prefix: "/conntrackr/blocks/")

    func etcdAgent(
        _ host: String,
        _ server: EtcdServer,
        policy: BlockPolicy = BlockPolicy(ttl: .seconds(600)),
        credentials: EtcdConfiguration.Credentials? = nil
    ) throws -> Agent {
        let store = try EtcdStore(configuration: storeConfiguration(server, credentials: credentials))
        return Agent(host, store: store, policy: policy, healthCheckInterval: .milliseconds(500))
    }

    func storeConfiguration(
        _ server: EtcdServer,
        credentials: EtcdConfiguration.Credentials? = nil,
        pageSize: Int = 1000,
        maxListedKeys: Int = 100_000
    ) -> EtcdConfiguration {
        EtcdConfiguration(
            endpoints: [server.endpoint],
            credentials: credentials,
            requestTimeout: .seconds(2),
            connectTimeout: .milliseconds(500),
            listPageSize: pageSize,
            maxListedKeys: maxListedKeys,
            allowInsecure: true  // a test etcd on 127.0.0.1 has no TLS
        )
    }

    @Test func aScanSeenByOneAgentIsBlockedByTheOtherWithinASecondAndLiftedWhenItsTTLEnds() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try await server.start()
        let a = try etcdAgent("a", server, policy: BlockPolicy(ttl: .seconds(3)))
        let b = try etcdAgent("b", server, policy: BlockPolicy(ttl: .seconds(3)))
        let blocked = IPPrefix(host: scanner)
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            let scanned = scan()
            let events = a.controller.handle(scanned)
            guard case .blocked = events else {
                Issue.record("scan not blocked on A: \(events)")
                return
            }
            #expect(await eventually { b.events.blocked.count == 1 })
            #expect(b.fleetEntry(scanner.description) != nil)
            // Measured by B's own clock when it applied the block, not by when this test got to look.
            guard case .blocked(_, let applied)? = b.events.all.first else {
                Issue.record("no blocked event on B: \(b.events.all)")
                return
            }
            let latency = applied - scanned.time
            print("fleet: block applied on B \(latency) after A's scan")
            #expect(latency < .seconds(1))
            #expect(b.events.blocked.map(\.prefix) == [blocked])
            #expect(b.events.blocked.first?.origin == .fleet)

            // Stored as JSON with a lease of the block's TTL.
            try await withEtcdStore(storeConfiguration(server)) { admin in
                let listing = try await admin.list(prefix: keys.prefix)
                #expect(listing.values.map(\.key) == [keys.key(for: blocked, host: "a")])
                #expect(listing.values.first?.lease != 0)
                let published = try FleetRecord(decoding: try #require(listing.values.first).value)
                #expect(published.host == "a")
                #expect(published.ports == [22, 80, 443, 8080])
            }

            // etcd deletes the key when the lease runs out; B lifts the block (A's own sweep is the pipeline's).
            #expect(await eventually { b.events.unblocked.count == 1 })
            #expect(b.blocker.entry(for: blocked) == nil)
            #expect(b.events.unblocked.map(\.0) == [blocked])
            try await withEtcdStore(storeConfiguration(server)) { admin in
                let remaining = try await admin.list(prefix: keys.prefix)
                #expect(remaining.values.isEmpty)
            }
        }
    }

    @Test func aBlockMadeWhileEtcdIsDownReachesTheOtherAgentOnceItIsBack() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try await server.start()
        let a = try etcdAgent("a", server)
        let b = try etcdAgent("b", server)
        let before = IPAddress("198.51.100.101")!
        let during = IPAddress("198.51.100.102")!
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            _ = a.controller.handle(scan(from: before))
            #expect(await eventually { b.fleetEntry(before.description) != nil })

            server.stop()
            #expect(await eventually { !a.service.isConnected && !b.service.isConnected })
            // A goes on blocking on its own; the publication waits.
            let events = a.controller.handle(scan(from: during))
            #expect({ if case .blocked = events { true } else { false } }())
            #expect(a.blocker.entry(for: IPPrefix(host: during))?.origin == .local)
            #expect(a.service.queuedPublications == 1)

            try await server.start()
            #expect(await eventually { b.events.blocked.count == 2 })
            #expect(b.fleetEntry(during.description) != nil)
            #expect(b.fleetEntry(before.description) != nil)  // kept across the restart: still in etcd
            #expect(a.service.queuedPublications == 0)
            #expect(await eventually { a.metrics.value(of: .fleetPublications) == 2 })
            #expect(b.events.blocked.map(\.prefix) == [IPPrefix(host: before), IPPrefix(host: during)])
        }
    }

    @Test func listingPagesWatchingFromARevisionAndCompaction() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try await server.start()
        try await withEtcdStore(storeConfiguration(server, pageSize: 3)) { store in
            let empty = try await store.list(prefix: keys.prefix)
            #expect(empty.values.isEmpty)
            let prefixes = (1...7).map { IPPrefix("198.51.100.\($0)")! }
            for prefix in prefixes {
                try await store.put(key: keys.key(for: prefix, host: "h"), value: record(prefix.description).encoded(), lease: nil)
            }
            try await store.put(key: "/elsewhere/x", value: [1], lease: nil)  // outside the prefix
            let listing = try await store.list(prefix: keys.prefix)
            #expect(listing.values.count == 7)
            #expect(Set(listing.values.map(\.key)) == Set(prefixes.map { keys.key(for: $0, host: "h") }))
            #expect(listing.revision == empty.revision + 8)

            // A listing is bounded: past its keys, the rest are counted (etcd's count_only), not read.
            try await withEtcdStore(storeConfiguration(server, pageSize: 2, maxListedKeys: 3)) { bounded in
                let partial = try await bounded.list(prefix: keys.prefix)
                #expect(partial.values.count == 3)
                #expect(partial.omitted == 4)
                #expect(partial.revision == listing.revision)
            }

            // A watch from the revision after the listing sees the next changes, each once, in order.
            var changes = store.watch(prefix: keys.prefix, fromRevision: listing.revision + 1).makeAsyncIterator()
            let lease = try await store.grantLease(ttl: .seconds(2))
            try await store.put(key: keys.key(for: prefixes[0], host: "h"), value: record("198.51.100.1").encoded(), lease: lease)
            #expect(try await store.delete(key: keys.key(for: prefixes[1], host: "h")))
            // Deleting a key that is not there says so, and changes nothing (no revision, no watch event).
            #expect(try await store.delete(key: keys.key(for: prefixes[1], host: "h")) == false)
            let first = try await changes.next()
            let second = try await changes.next()
            guard case .put(let put)? = first?.first, case .delete(let key, let revision)? = second?.first else {
                Issue.record("unexpected watch batches: \(String(describing: first)) \(String(describing: second))")
                return
            }
            #expect(put.key == keys.key(for: prefixes[0], host: "h"))
            #expect(put.modRevision == listing.revision + 1)
            #expect(put.lease == lease)
            #expect(key == keys.key(for: prefixes[1], host: "h"))
            #expect(revision == listing.revision + 2)
            // The lease lapses: etcd deletes the key, and the watch says so.
            let third = try await changes.next()
            guard case .delete(let lapsed, _)? = third?.first else {
                Issue.record("expected the lease's delete, got \(String(describing: third))")
                return
            }
            #expect(lapsed == keys.key(for: prefixes[0], host: "h"))

            // A watch from a compacted revision fails as such, so the service lists again.
            try server.etcdctl(["compaction", String(listing.revision + 2)])
            var stale = store.watch(prefix: keys.prefix, fromRevision: listing.revision).makeAsyncIterator()
            await #expect {
                _ = try await stale.next()
            } throws: { ($0 as? FleetError)?.code == .compacted }
        }
    }

    @Test func withAuthenticationEnabledOnlyValidCredentialsWork() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try await server.start()
        try server.etcdctl(["user", "add", "root", "--new-user-password", "root-secret", "--interactive=false"])
        try server.etcdctl(["user", "add", "agent", "--new-user-password", "agent-secret", "--interactive=false"])
        try server.etcdctl(["role", "add", "conntrackr"])
        try server.etcdctl(["role", "grant-permission", "conntrackr", "--prefix=true", "readwrite", "/conntrackr/"])
        try server.etcdctl(["user", "grant-role", "agent", "conntrackr"])
        try server.etcdctl(["auth", "enable"])

        try await withEtcdStore(storeConfiguration(server)) { anonymous in
            await #expect {
                _ = try await anonymous.list(prefix: keys.prefix)
            } throws: { ($0 as? FleetError)?.code == .unauthenticated }
        }
        let wrong = EtcdConfiguration.Credentials(user: "agent", password: "wrong")
        try await withEtcdStore(storeConfiguration(server, credentials: wrong)) { store in
            await #expect {
                _ = try await store.list(prefix: keys.prefix)
            } throws: { ($0 as? FleetError)?.code == .unauthenticated }
        }

        let credentials = EtcdConfiguration.Credentials(user: "agent", password: "agent-secret")
        #expect(!"\(credentials)".contains("agent-secret"))
        let a = try etcdAgent("a", server, credentials: credentials)
        let b = try etcdAgent("b", server, credentials: credentials)
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            _ = a.controller.handle(scan())
            #expect(await eventually { b.fleetEntry(scanner.description) != nil })
        }
        // Outside its role's prefix the agent is refused, as a rejection rather than an outage.
        try await withEtcdStore(storeConfiguration(server, credentials: credentials)) { store in
            await #expect {
                try await store.put(key: "/elsewhere/x", value: [1], lease: nil)
            } throws: { ($0 as? FleetError)?.code == .rejected }
        }
    }

    @Test func overTLSWithAClientCertificate() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try server.enableTLS()
        try await server.start()
        let certificates = try #require(server.certificates)
        #expect(server.endpoint.hasPrefix("https://"))

        // The CA and a client certificate: works, for a whole fleet round trip.
        let a = Agent("a", store: try EtcdStore(configuration: server.clientConfiguration))
        let b = Agent("b", store: try EtcdStore(configuration: server.clientConfiguration))
        try await whileRunning([a.service, b.service]) {
            #expect(await eventually { a.service.isConnected && b.service.isConnected })
            _ = a.controller.handle(scan())
            #expect(await eventually { b.fleetEntry(scanner.description) != nil })
        }

        // Without a client certificate etcd refuses the handshake; without the CA the client refuses etcd.
        for tls in [
            EtcdConfiguration.TLS(caFile: certificates.ca),
            EtcdConfiguration.TLS(certificateFile: certificates.clientCertificate, keyFile: certificates.clientKey),
        ] {
            var configuration = server.clientConfiguration
            configuration.tls = tls
            try await withEtcdStore(configuration) { store in
                await #expect {
                    try await store.checkHealth()
                } throws: { ($0 as? FleetError)?.code == .unavailable }
            }
        }
    }

    @Test func anUnreachableEndpointIsAnOutageAndTheNextEndpointIsTried() async throws {
        let server = try EtcdServer()
        defer { server.close() }
        try await server.start()
        let dead = "http://127.0.0.1:\(try freePort())"
        let configuration = EtcdConfiguration(
            endpoints: [dead, server.endpoint],
            requestTimeout: .seconds(2),
            connectTimeout: .milliseconds(500)
        )
        try await withEtcdStore(configuration) { store in
            await #expect {
                try await store.checkHealth()
            } throws: { ($0 as? FleetError)?.code == .unavailable }
            try await store.checkHealth()  // the second endpoint
        }
    }
}

@Suite("etcd store configuration")
struct EtcdConfigurationTests {
    @Test(arguments: ["", "ftp://127.0.0.1:2379", "http://", "http://127.0.0.1:2379/v3", "http://127.0.0.1:2379?x=1"])
    func invalidEndpointsAreRefusedWithTheirName(endpoint: String) {
        #expect {
            _ = try EtcdStore(configuration: EtcdConfiguration(endpoints: [endpoint]))
        } throws: { error in
            guard let error = error as? FleetError else { return false }
            return error.code == .invalidConfiguration && error.message.contains("invalid etcd endpoint")
        }
    }

    @Test func noEndpointIsRefused() {
        #expect(throws: FleetError.self) { _ = try EtcdStore(configuration: EtcdConfiguration(endpoints: [])) }
    }

    @Test func tlsFilesNeedHTTPSEndpointsAndReadableFiles() throws {
        #expect {
            _ = try EtcdStore(
                configuration: EtcdConfiguration(endpoints: ["http://127.0.0.1:2379"], tls: .init(caFile: "/x"))
            )
        } throws: { ($0 as? FleetError)?.message.contains("https://") == true }
        #expect {
            _ = try EtcdStore(
                configuration: EtcdConfiguration(
                    endpoints: ["https://127.0.0.1:2379"],
                    tls: .init(caFile: "/nonexistent/ca.pem")
                )
            )
        } throws: { ($0 as? FleetError)?.message.contains("/nonexistent/ca.pem") == true }
        #expect {
            _ = try EtcdStore(
                configuration: EtcdConfiguration(
                    endpoints: ["https://127.0.0.1:2379"],
                    tls: .init(certificateFile: "/nonexistent/cert.pem")
                )
            )
        } throws: { ($0 as? FleetError)?.message.contains("go together") == true }
    }

    @Test func bareHostAndPortMeansHTTP() throws {
        // Accepted without a scheme; no request is made, so nothing needs to listen.
        let store = try EtcdStore(
            configuration: EtcdConfiguration(endpoints: ["127.0.0.1:2379", "https://etcd-1:2379/"])
        )
        _ = store
    }
}
