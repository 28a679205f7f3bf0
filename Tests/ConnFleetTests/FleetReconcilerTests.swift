import ConnCore
import ConnFleet
import ConnTesting
import Testing

@Suite("Fleet reconciliation")
struct FleetReconcilerTests {
    let now = Timestamp(seconds: 1_800_000_000)

    func entry(_ prefix: String, origin: BlockOrigin, expiresIn seconds: Int64? = 600) -> BlockEntry {
        BlockEntry(
            prefix: IPPrefix(prefix)!,
            reason: .portScan,
            origin: origin,
            since: now,
            expires: seconds.map { now + .seconds($0) }
        )
    }

    func listed(_ prefix: String, expiresIn seconds: Int64? = 600) -> FleetRecord {
        FleetRecord(
            prefix: IPPrefix(prefix)!,
            host: "other",
            reason: .portScan,
            ports: [22, 80],
            since: now,
            expires: seconds.map { now + .seconds($0) }
        )
    }

    @Test func addsWhatIsMissingAndRemovesFleetBlocksNoLongerListed() {
        let local = [
            entry("198.51.100.1", origin: .fleet),  // listed: kept
            entry("198.51.100.2", origin: .fleet),  // gone from the store: removed
            entry("198.51.100.3", origin: .local),  // this agent's own: never touched
        ]
        let records = [listed("198.51.100.1"), listed("198.51.100.4"), listed("2001:db8:1::/64")]
        let plan = FleetReconciler.reconcile(local: local, listed: records, now: now)
        #expect(plan.add.map(\.prefix) == [IPPrefix("198.51.100.4")!, IPPrefix("2001:db8:1::/64")!])
        #expect(plan.add.allSatisfy { $0.origin == .fleet })
        #expect(plan.remove == [IPPrefix("198.51.100.2")!])
    }

    @Test func aLocalBlockIsNeverReplacedOrRemovedByTheFleet() {
        let local = [entry("198.51.100.3", origin: .local, expiresIn: 10)]
        #expect(FleetReconciler.reconcile(local: local, listed: [listed("198.51.100.3")], now: now).isEmpty)
        #expect(FleetReconciler.reconcile(local: local, listed: [], now: now).isEmpty)
        let update = FleetReconciler.update(
            local: local,
            changes: [(IPPrefix("198.51.100.3")!, nil)],
            now: now
        )
        #expect(update.isEmpty)
    }

    @Test func aRecordAlreadyAppliedChangesNothing() {
        let record = listed("198.51.100.1")
        let local = [record.learnedEntry]
        #expect(FleetReconciler.reconcile(local: local, listed: [record], now: now).isEmpty)
        #expect(FleetReconciler.update(local: local, changes: [(record.prefix, record)], now: now).isEmpty)
    }

    @Test func aRepublishedBlockWithANewExpiryReplacesTheFleetEntry() {
        let local = [listed("198.51.100.1", expiresIn: 60).learnedEntry]
        let again = listed("198.51.100.1", expiresIn: 3600)
        let plan = FleetReconciler.update(local: local, changes: [(again.prefix, again)], now: now)
        #expect(plan.add == [again.learnedEntry])
        #expect(plan.remove.isEmpty)
    }

    @Test func expiredRecordsAreNotAddedAndLeaveTheSweepToLiftTheirEntries() {
        let expired = listed("198.51.100.1", expiresIn: -1)
        #expect(FleetReconciler.reconcile(local: [], listed: [expired], now: now).isEmpty)
        let local = [listed("198.51.100.1", expiresIn: -1).learnedEntry]
        #expect(FleetReconciler.reconcile(local: local, listed: [expired], now: now).isEmpty)
    }

    @Test func permanentRecordsAreAddedWithoutExpiry() {
        let plan = FleetReconciler.reconcile(local: [], listed: [listed("198.51.100.9", expiresIn: nil)], now: now)
        #expect(plan.add.count == 1)
        #expect(plan.add.first?.expires == nil)
    }

    @Test func ofAPrefixListedTwiceTheLaterExpiryWins() {
        let short = listed("198.51.100.1", expiresIn: 60)
        let long = listed("198.51.100.1", expiresIn: 600)
        for order in [[short, long], [long, short]] {
            let plan = FleetReconciler.reconcile(local: [], listed: order, now: now)
            #expect(plan.add == [long.learnedEntry])
        }
    }

    @Test func theLastChangeOfAPrefixInABatchDecides() {
        let record = listed("198.51.100.1")
        let prefix = record.prefix
        // Put then delete: nothing to add.
        #expect(FleetReconciler.update(local: [], changes: [(prefix, record), (prefix, nil)], now: now).isEmpty)
        // Delete then put of a fleet entry: it stays (the same record changes nothing).
        let local = [record.learnedEntry]
        #expect(FleetReconciler.update(local: local, changes: [(prefix, nil), (prefix, record)], now: now).isEmpty)
        // Put then delete of a fleet entry: removed.
        let plan = FleetReconciler.update(local: local, changes: [(prefix, record), (prefix, nil)], now: now)
        #expect(plan.remove == [prefix])
        #expect(plan.add.isEmpty)
    }

    @Test func deletesOfUnknownPrefixesAreIgnored() {
        let plan = FleetReconciler.update(local: [], changes: [(IPPrefix("198.51.100.1")!, nil)], now: now)
        #expect(plan.isEmpty)
    }

    /// This agent's own block, and the record it published for it.
    func ownBlock(expiresIn seconds: Int64?) -> (BlockEntry, FleetRecord) {
        let local = entry("198.51.100.9", origin: .local, expiresIn: seconds)
        return (local, FleetRecord(entry: local, scan: nil, host: "self"))
    }

    @Test func deletingThisAgentsOwnRecordBeforeExpiryLiftsItsBlock() {
        for seconds: Int64? in [600, nil] {
            let (local, own) = ownBlock(expiresIn: seconds)
            let plan = FleetReconciler.update(
                local: [local], changes: [(local.prefix, nil)], withdrawn: [local.prefix: own], now: now
            )
            #expect(plan.remove == [local.prefix])
        }
    }

    @Test func theRecordIsMatchedByItsStartNotItsExpiryWhichTheXDPMapsReadBackInexactly() {
        let (local, own) = ownBlock(expiresIn: 600)
        var readBack = local
        readBack.expires = local.expires.map { $0 + .nanoseconds(713) }  // the boot-to-wall clock conversion
        let plan = FleetReconciler.update(
            local: [readBack], changes: [(local.prefix, nil)], withdrawn: [local.prefix: own], now: now
        )
        #expect(plan.remove == [local.prefix])
        var otherBlock = own
        otherBlock.since = own.since + .seconds(1)
        let kept = FleetReconciler.update(
            local: [local], changes: [(local.prefix, nil)], withdrawn: [local.prefix: otherBlock], now: now
        )
        #expect(kept.isEmpty)
    }

    @Test func aListingThatLacksAnOwnRecordSeenBeforeLiftsItsBlock() {
        let (local, own) = ownBlock(expiresIn: 600)
        // Seen before, now gone: deleted while the watch was down.
        #expect(FleetReconciler.reconcile(local: [local], listed: [], withdrawn: [local.prefix: own], now: now).remove == [local.prefix])
        // Still listed (by another host now): kept.
        let other = listed(local.prefix.description)
        #expect(FleetReconciler.reconcile(local: [local], listed: [other], withdrawn: [local.prefix: own], now: now).isEmpty)
        // Gone near its expiry: the lease lapsed; the sweep reports it.
        let (ending, endingRecord) = ownBlock(expiresIn: 2)
        #expect(FleetReconciler.reconcile(local: [ending], listed: [], withdrawn: [ending.prefix: endingRecord], now: now).isEmpty)
    }

    @Test func aDeletionAtExpiryIsTheLeaseLapsingAndLeftToTheSweep() {
        let (local, own) = ownBlock(expiresIn: 2)
        let plan = FleetReconciler.update(
            local: [local], changes: [(local.prefix, nil)], withdrawn: [local.prefix: own], now: now
        )
        #expect(plan.isEmpty)
    }

    @Test func aLocalBlockStaysWhenTheDeletedRecordWasAnotherHostsOrAnotherBlocks() {
        let (local, _) = ownBlock(expiresIn: 600)
        // The key last held another host's record: its deletion is that record lapsing.
        #expect(FleetReconciler.update(local: [local], changes: [(local.prefix, nil)], now: now).isEmpty)
        // This agent's record of an earlier block of the same prefix (another start).
        var earlier = FleetRecord(entry: local, scan: nil, host: "self")
        earlier.since = local.since + .seconds(-300)
        let plan = FleetReconciler.update(
            local: [local], changes: [(local.prefix, nil)], withdrawn: [local.prefix: earlier], now: now
        )
        #expect(plan.isEmpty)
        // A full listing never lifts local blocks, whatever it lacks: publications may still be queued.
        #expect(FleetReconciler.reconcile(local: [local], listed: [], now: now).isEmpty)
    }
}

@Suite("Fleet records and keys")
struct FleetRecordTests {
    @Test func aRecordSurvivesTheJSONRoundTrip() throws {
        let original = record("2001:db8:5::/64", host: "web-1")
        let decoded = try FleetRecord(decoding: original.encoded())
        #expect(decoded == original)
        let text = String(decoding: original.encoded(), as: UTF8.self)
        #expect(text.contains(#""prefix":"2001:db8:5::/64""#))
        #expect(text.contains(#""host":"web-1""#))
        #expect(text.contains(#""reason":"port_scan""#))
        #expect(text.contains(#""ports":[22,80,443,8080]"#))
        #expect(text.contains(#""time":""#))
    }

    @Test func aPermanentRecordHasNoExpiry() throws {
        let permanent = record("198.51.100.1", ttl: nil)
        let text = String(decoding: permanent.encoded(), as: UTF8.self)
        #expect(!text.contains("expires_ns"))
        #expect(try FleetRecord(decoding: permanent.encoded()).expires == nil)
    }

    @Test(arguments: [
        "", "not json", "{}", #"{"prefix":"300.1.1.1/32","host":"a","reason":"port_scan","since_ns":1}"#,
        #"{"prefix":"198.51.100.1/33","host":"a","reason":"port_scan","since_ns":1}"#,
        #"{"prefix":"198.51.100.1/32","host":"a","reason":"port_scan","since_ns":"x"}"#,
        #"{"prefix":"198.51.100.1/32","host":"a","reason":"port_scan","since_ns":1,"ports":[70000]}"#,
        #"[1,2,3]"#,
    ])
    func malformedRecordsAreErrorsNotCrashes(text: String) {
        #expect(throws: FleetError.self) { try FleetRecord(decoding: Array(text.utf8)) }
    }

    @Test func anUnknownReasonStillBlocks() throws {
        let text = #"{"prefix":"198.51.100.1/32","host":"a","reason":"brute_force","since_ns":5}"#
        let decoded = try FleetRecord(decoding: Array(text.utf8))
        #expect(decoded.prefix == IPPrefix("198.51.100.1/32"))
        #expect(decoded.ports.isEmpty)
        #expect(decoded.expires == nil)
    }

    @Test(arguments: [
        ("198.51.100.7/32", "/conntrackr/blocks/web-1/198.51.100.7_32"),
        ("198.51.100.0/24", "/conntrackr/blocks/web-1/198.51.100.0_24"),
        ("2001:db8::/64", "/conntrackr/blocks/web-1/2001:db8::_64"),
    ])
    func keysNameTheirHostAndPrefix(prefix: String, key: String) {
        let keys = FleetKeys(prefix: "/conntrackr/blocks")
        #expect(keys.prefix == "/conntrackr/blocks/")
        #expect(keys.key(for: IPPrefix(prefix)!, host: "web-1") == key)
        #expect(keys.hostPrefix("web-1") == "/conntrackr/blocks/web-1/")
        let parsed = keys.parse(key)
        #expect(parsed?.host == "web-1")
        #expect(parsed?.blocked == IPPrefix(prefix))
    }

    @Test(
        "Keys that are not the canonical key of a host's report are refused, aliases included",
        arguments: [
            "/conntrackr/blocks/", "/conntrackr/blocks/junk", "/other/a/198.51.100.7_32", "",
            "/conntrackr/blocks/198.51.100.7_32",  // the old layout: no host
            "/conntrackr/blocks/a/128.0.0.1_1",  // an alias of 128.0.0.0/1
            "/conntrackr/blocks/a/198.51.100.7",  // no length
            "/conntrackr/blocks/a/::ffff:198.51.100.7_128",  // an IPv4-mapped spelling
            "/conntrackr/blocks/a/2001:DB8::_64",  // upper case
            "/conntrackr/blocks/a/2001:0db8::_64",  // leading zeros
            "/conntrackr/blocks/a/198.51.100.7_32/extra",
            "/conntrackr/blocks/a b/198.51.100.7_32",  // not a host name
            "/conntrackr/blocks/../198.51.100.7_32",
            "/conntrackr/blocks//198.51.100.7_32",
        ]
    )
    func nonCanonicalKeysAreRefused(key: String) {
        #expect(FleetKeys(prefix: "/conntrackr/blocks/").parse(key) == nil)
    }

    @Test func backoffDoublesUpToItsCap() {
        let configuration = FleetConfiguration(
            etcd: EtcdConfiguration(endpoints: ["http://127.0.0.1:2379"]),
            hostName: "a",
            initialBackoff: .milliseconds(100),
            maxBackoff: .seconds(1)
        )
        let delays = (0..<7).map { configuration.backoff(afterFailures: $0) }
        #expect(
            delays == [
                .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                .seconds(1), .seconds(1), .seconds(1),
            ]
        )
        #expect(configuration.backoff(afterFailures: 1_000_000) == .seconds(1))
        #expect(configuration.backoff(afterFailures: 3, jitter: 0.5) == .milliseconds(400))
        #expect(configuration.backoff(afterFailures: 3, jitter: 0) == .milliseconds(400))  // jitter floors at 0.5
    }
}
