import ConnCore
import ConnFleet
import ConnTesting
import Testing

/// Issue 13: what an agent accepts from the store, record by record.
@Suite("Fleet trust: checking records before applying them")
struct FleetTrustTests {
    let keys = FleetKeys(prefix: "/conntrackr/blocks/")
    let now = Timestamp(seconds: 1_800_000_000)
    let trust = FleetTrust(maxLifetime: .seconds(600))

    func stored(_ record: FleetRecord) -> (key: String, value: [UInt8]) {
        (keys.key(for: record.prefix, host: record.host), record.encoded())
    }

    func check(_ key: String, _ value: [UInt8], _ trust: FleetTrust? = nil) throws(FleetRecordRefusal) -> FleetRecord {
        try (trust ?? self.trust).check(key: key, value: value, keys: keys, now: now)
    }

    func refusal(_ key: String, _ value: [UInt8], _ trust: FleetTrust? = nil) -> FleetRefusalReason? {
        do throws(FleetRecordRefusal) {
            _ = try check(key, value, trust)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func aRecordOfTheFleetsOwnShapeIsAcceptedAsIs() throws {
        let original = record("198.51.100.7", host: "web-1", since: now, ttl: .seconds(300))
        let (key, value) = stored(original)
        #expect(try check(key, value) == original)
        let v6 = record("2001:db8:7::/64", host: "web-2", since: now, ttl: .seconds(300))
        #expect(try check(stored(v6).key, stored(v6).value) == v6)
    }

    static let widths: [(String, FleetRefusalReason?)] = [
        ("128.0.0.0/1", .tooWide),
        ("0.0.0.0/0", .tooWide),
        ("198.51.100.0/24", .tooWide),
        ("198.51.100.7/32", nil),
        ("2001:db8::/32", .tooWide),
        ("2001:db8:0:2::/63", .tooWide),
        ("2001:db8:0:1::/64", nil),
        ("2001:db8::1/128", nil),  // narrower than the fleet's blocks: blocks less, accepted
    ]

    @Test("Prefixes wider than the fleet's automatic blocks are refused unless allowed", arguments: widths)
    func widePrefixesAreRefused(prefix: String, expected: FleetRefusalReason?) {
        let (key, value) = stored(record(prefix, since: now))
        #expect(refusal(key, value) == expected)
    }

    @Test func widerPrefixesAreAcceptedWhereTheOperatorAllowedThem() {
        let wide = FleetTrust(widestIPv4: 24, widestIPv6: 48, maxLifetime: .seconds(600))
        for prefix in ["198.51.100.0/24", "2001:db8:1::/48"] {
            let (key, value) = stored(record(prefix, since: now))
            #expect(refusal(key, value, wide) == nil)
        }
        let (key, value) = stored(record("198.51.0.0/16", since: now))
        #expect(refusal(key, value, wide) == .tooWide)
    }

    @Test("Expiries are clamped to the start plus the local TTL; the start to now")
    func expiriesAreClamped() throws {
        let long = record("198.51.100.7", since: now, ttl: .seconds(86_400))
        #expect(try check(stored(long).key, stored(long).value).expires == now + .seconds(600))

        var huge = record("198.51.100.8", since: now)
        huge.expires = Timestamp(nanoseconds: Int64.max)
        #expect(try check(stored(huge).key, stored(huge).value).expires == now + .seconds(600))

        // A start in the future cannot push the expiry further out.
        let future = record("198.51.100.9", since: Timestamp(nanoseconds: Int64.max - 10), ttl: nil)
        let clamped = try check(stored(future).key, stored(future).value)
        #expect(clamped.since == now)
        #expect(clamped.expires == now + .seconds(600))

        // A start at the dawn of Int64 makes a record that has long expired, without trapping.
        var ancient = record("198.51.100.10", since: Timestamp(nanoseconds: Int64.min))
        ancient.expires = Timestamp(nanoseconds: Int64.max)
        let old = try check(stored(ancient).key, stored(ancient).value)
        #expect(old.hasExpired(at: now))
    }

    @Test("A record without expiry is clamped to the TTL unless permanent records are allowed")
    func permanentRecords() throws {
        let permanent = record("198.51.100.7", since: now + .seconds(-100), ttl: nil)
        let (key, value) = stored(permanent)
        #expect(try check(key, value).expires == now + .seconds(500))
        let allowing = FleetTrust(maxLifetime: .seconds(600), allowPermanent: true)
        #expect(try check(key, value, allowing).expires == nil)
    }

    @Test func theExpiryAtInt64MaxIsParsedAndClamped() throws {
        let text = #"{"prefix":"198.51.100.7/32","host":"a","reason":"port_scan","since_ns":1800000000000000000,"#
            + #""expires_ns":9223372036854775807}"#
        let checked = try check("/conntrackr/blocks/a/198.51.100.7_32", Array(text.utf8))
        #expect(checked.expires == Timestamp(nanoseconds: 1_800_000_000_000_000_000) + .seconds(600))
    }

    @Test("Keys that do not match their record are refused", arguments: [
        "/conntrackr/blocks/other/198.51.100.8_32",  // another prefix's key
        "/conntrackr/blocks/somebody/198.51.100.7_32",  // another host's key
        "/conntrackr/blocks/198.51.100.7_32",  // the old layout
        "/conntrackr/blocks/other/128.0.0.1_1",  // an alias
    ])
    func mismatchedKeysAreRefused(key: String) {
        #expect(refusal(key, record("198.51.100.7", since: now).encoded()) == .key)
    }

    @Test func aliasKeysOfTheSamePrefixAreRefused() {
        var wide = record("128.0.0.0/1", since: now)
        let allowAll = FleetTrust(widestIPv4: 1, maxLifetime: .seconds(600))
        #expect(refusal("/conntrackr/blocks/other/128.0.0.0_1", wide.encoded(), allowAll) == nil)
        #expect(refusal("/conntrackr/blocks/other/128.0.0.1_1", wide.encoded(), allowAll) == .key)
        wide = record("2001:db8::/64", since: now)
        #expect(refusal("/conntrackr/blocks/other/2001:DB8::_64", wide.encoded()) == .key)
        let mapped = record("198.51.100.7", since: now)
        #expect(refusal("/conntrackr/blocks/other/::ffff:198.51.100.7_128", mapped.encoded()) == .key)
    }

    @Test func oversizedInputIsRefusedUnread() {
        let (key, value) = stored(record("198.51.100.7", since: now))
        #expect(refusal(key, value + [UInt8](repeating: 0x20, count: 1 << 20)) == .tooLarge)
        #expect(refusal(key + String(repeating: "x", count: FleetTrust.maxKeyBytes), value) == .tooLarge)
        var ports = record("198.51.100.7", since: now)
        ports.ports = Array(repeating: 80, count: FleetTrust.maxPorts + 1)
        #expect(refusal(key, ports.encoded(), nil) == .tooLarge)
        // A publisher keeps the first ports only.
        let entry = ports.learnedEntry
        let scan = PortScan(time: now, source: entry.prefix.address, destination: victim, ports: ports.ports)
        #expect(FleetRecord(entry: entry, scan: scan, host: "a").ports.count == FleetTrust.maxPorts)
    }

    @Test(arguments: ["garbage", "{}", #"{"prefix":"198.51.100.7/32"}"#, #"{"prefix":"x","host":"other"}"#])
    func malformedValuesAreRefused(text: String) {
        #expect(refusal("/conntrackr/blocks/other/198.51.100.7_32", Array(text.utf8)) == .malformed)
    }

    @Test("K reporters: a prefix is effective once enough distinct hosts reported it, unexpired")
    func reportersAreCounted() {
        var reports = FleetReports()
        let blocked = IPPrefix("198.51.100.7")!
        reports.put(record("198.51.100.7", host: "a", since: now, ttl: .seconds(60)))
        #expect(reports.effective(for: blocked, minReporters: 1, now: now)?.host == "a")
        #expect(reports.effective(for: blocked, minReporters: 2, now: now) == nil)
        // The same host again is still one reporter.
        reports.put(record("198.51.100.7", host: "a", since: now, ttl: .seconds(90)))
        #expect(reports.count == 1)
        #expect(reports.effective(for: blocked, minReporters: 2, now: now) == nil)
        reports.put(record("198.51.100.7", host: "b", since: now, ttl: .seconds(120)))
        let effective = reports.effective(for: blocked, minReporters: 2, now: now)
        #expect(effective?.host == "b")  // the one that lasts longest
        // Past a's report, b's alone is not enough.
        #expect(reports.effective(for: blocked, minReporters: 2, now: now + .seconds(100)) == nil)
        #expect(reports.remove(blocked, host: "b") != nil)
        #expect(reports.effective(for: blocked, minReporters: 2, now: now) == nil)
        #expect(reports.remove(blocked, host: "a") != nil)
        #expect(reports.count == 0)
        #expect(reports.prefixes.isEmpty)
    }
}

@Suite("Fleet settings: transport, identity and trust")
struct FleetTrustSettingsTests {
    func settings(_ endpoints: [String], user: String? = nil) -> FleetSettings {
        var settings = FleetSettings()
        settings.endpoints = endpoints
        settings.user = user
        settings.password = user.map { _ in "secret" }
        return settings
    }

    @Test func credentialsAreRefusedOverHTTP() {
        for endpoint in ["http://127.0.0.1:1", "127.0.0.1:1"] {
            #expect(throws: ConntrackrError.self) {
                try settings([endpoint], user: "agent").configuration(defaultHostName: "a")
            }
        }
        var lab = settings(["http://127.0.0.1:1"], user: "agent")
        lab.allowInsecure = true
        #expect((try? lab.configuration(defaultHostName: "a"))?.etcd.allowInsecure == true)
        #expect((try? settings(["https://127.0.0.1:1"], user: "agent").configuration(defaultHostName: "a")) != nil)
        #expect((try? settings(["http://127.0.0.1:1"]).configuration(defaultHostName: "a")) != nil)
    }

    @Test func theStoreRefusesCredentialsOverHTTPToo() {
        let configuration = EtcdConfiguration(
            endpoints: ["http://127.0.0.1:1"], credentials: .init(user: "agent", password: "secret")
        )
        #expect(throws: FleetError.self) { try EtcdStore(configuration: configuration) }
    }

    @Test(arguments: ["", "a/b", "a b", "..", String(repeating: "x", count: FleetTrust.maxHostBytes + 1)])
    func hostNamesMustFitAKeySegment(name: String) {
        var fleet = settings(["http://127.0.0.1:1"])
        fleet.hostName = name
        #expect(throws: ConntrackrError.self) { try fleet.configuration(defaultHostName: "a") }
    }

    @Test func trustFollowsTheLocalPolicyAndTheFleetSettings() throws {
        var fleet = settings(["http://127.0.0.1:1"])
        let policy = BlockPolicy(ttl: .seconds(120), ipv6PrefixLength: 56)
        var trust = try #require(try fleet.configuration(defaultHostName: "a", policy: policy)).trust
        #expect(trust == FleetTrust(widestIPv4: 32, widestIPv6: 56, maxLifetime: .seconds(120)))
        fleet.minReporters = 3
        fleet.widestIPv4 = 24
        fleet.widestIPv6 = 48
        fleet.allowPermanent = true
        trust = try #require(try fleet.configuration(defaultHostName: "a", policy: BlockPolicy(ttl: nil))).trust
        #expect(trust.minReporters == 3)
        #expect(trust.widestIPv4 == 24)
        #expect(trust.widestIPv6 == 48)
        #expect(trust.allowPermanent)
        #expect(trust.maxLifetime == .seconds(3600))  // permanent local blocks: an hour for learned ones
    }

    @Test("Endpoints' addresses: IP literals as they are", arguments: [
        ("http://198.51.100.2:2379", "198.51.100.2"),
        ("https://[2001:db8::2]:2379", "2001:db8::2"),
        ("198.51.100.3:2379", "198.51.100.3"),
        ("https://198.51.100.4:2379/", "198.51.100.4"),
    ])
    func endpointAddresses(endpoint: String, address: String) throws {
        let addresses = try EtcdConfiguration(endpoints: [endpoint]).endpointAddresses()
        #expect(addresses == [IPAddress(address)!])
    }

    /// `localhost` resolves from /etc/hosts: no query leaves the machine.
    @Test func endpointHostNamesAreResolved() throws {
        let addresses = try EtcdConfiguration(endpoints: ["http://localhost:2379"]).endpointAddresses()
        #expect(!addresses.isEmpty)
        #expect(addresses.allSatisfy { $0.isLoopback })
    }
}
