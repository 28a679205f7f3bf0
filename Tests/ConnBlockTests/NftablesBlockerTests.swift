import ConnBlock
import ConnCore
import ConnTesting
import Foundation
import Synchronization
import Testing

/// Records every batch of commands and every transaction of element changes a blocker makes and answers from a
/// script of responses, so what the blocker writes can be checked without a kernel.
final class RecordingNftables: NftablesCommands {
    struct Call: Hashable {
        var commands: String
        var json: Bool
    }

    struct Recorded {
        var calls: [Call] = []
        var respond: @Sendable (Call) -> NftablesResult = { _ in NftablesResult(succeeded: true) }
        var transactions: [[NftablesElementChange]] = []
        var answer: @Sendable ([NftablesElementChange]) -> NftablesChangeOutcome = { _ in .applied }
    }

    private let state = Mutex(Recorded())

    var calls: [Call] { state.withLock { $0.calls } }
    /// The element changes written over netlink, one list per transaction.
    var transactions: [[NftablesElementChange]] { state.withLock { $0.transactions } }
    /// The batches that change something (not listings).
    var scripts: [String] { calls.filter { !$0.json }.map(\.commands) }

    /// Answers listings with `json`, everything else with success.
    func listing(_ json: String) {
        respond { call in
            call.json ? NftablesResult(succeeded: true, output: json) : NftablesResult(succeeded: true)
        }
    }

    func respond(_ respond: @escaping @Sendable (Call) -> NftablesResult) {
        state.withLock { $0.respond = respond }
    }

    func answer(_ answer: @escaping @Sendable ([NftablesElementChange]) -> NftablesChangeOutcome) {
        state.withLock { $0.answer = answer }
    }

    func reset() {
        state.withLock {
            $0.calls = []
            $0.transactions = []
        }
    }

    func run(_ commands: String, json: Bool) throws(ConntrackrError) -> NftablesResult {
        state.withLock { state in
            let call = Call(commands: commands, json: json)
            state.calls.append(call)
            return state.respond(call)
        }
    }

    func apply(_ changes: [NftablesElementChange], table: String) throws(ConntrackrError) -> NftablesChangeOutcome {
        state.withLock { state in
            state.transactions.append(changes)
            return state.answer(changes)
        }
    }
}

/// `nft -j list table` output holding `elements` (JSON texts) in blocked4, `elements6` in blocked6, `hosts4` in
/// hosts4 and `units6` in the set `units6Set`.
func nftListing(
    _ elements: [String] = [], _ elements6: [String] = [], hosts4: [String] = [], units6: [String] = [],
    units6Set: String = "units6_64", table: String = "conntrackr"
) -> String {
    func set(_ name: String, _ type: String, _ elements: [String]) -> String {
        let elem = elements.isEmpty ? "" : ", \"elem\": [\(elements.joined(separator: ", "))]"
        let flags = name.hasPrefix("blocked") ? #"["interval", "timeout"]"# : #"["timeout"]"#
        return """
            {"set": {"family": "inet", "name": "\(name)", "table": "\(table)", "type": "\(type)", "handle": 3, \
            "flags": \(flags)\(elem), "stmt": [{"counter": null}]}}
            """
    }
    return """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, \
        {"table": {"family": "inet", "name": "\(table)", "handle": 1}}, \
        {"set": {"family": "inet", "name": "allowed4", "table": "\(table)", "type": "ipv4_addr", "handle": 2, \
        "flags": ["interval"], "elem": [{"prefix": {"addr": "127.0.0.0", "len": 8}}, "198.51.100.99"]}}, \
        \(set("hosts4", "ipv4_addr", hosts4)), \(set(units6Set, "ipv6_addr", units6)), \
        \(set("blocked4", "ipv4_addr", elements)), \(set("blocked6", "ipv6_addr", elements6))]}
        """
}

@Suite struct NftablesBlockerTests {
    let runner = RecordingNftables()

    func blocker(_ configuration: NftablesBlocker.Configuration = .init()) throws -> NftablesBlocker {
        try NftablesBlocker(configuration, commands: runner, clock: { referenceTime })
    }

    func entry(_ text: String, ttl: Duration? = .seconds(3600), origin: BlockOrigin = .local) -> BlockEntry {
        BlockEntry(
            prefix: prefix(text),
            reason: .portScan,
            origin: origin,
            since: referenceTime,
            expires: ttl.map { referenceTime + $0 }
        )
    }

    @Test func createTableScript() throws {
        let allowlist = Allowlist([
            .init(prefix: prefix("203.0.113.5"), reason: .hostAddress),
            .init(prefix: prefix("fe80::1"), reason: .gateway),
            .init(prefix: prefix("198.51.100.0/24"), reason: .configured),
        ])
        try blocker(.init(table: "ctr_test")).createTable(allowing: allowlist)
        #expect(runner.calls.map(\.json) == [false, false])
        #expect(
            runner.scripts == [
                """
                table inet ctr_test
                delete table inet ctr_test
                table inet ctr_test {
                    set allowed4 { type ipv4_addr; flags interval; auto-merge; }
                    set allowed6 { type ipv6_addr; flags interval; auto-merge; }
                    set hosts4 { type ipv4_addr; flags timeout; counter; }
                    set units6_64 { type ipv6_addr; flags timeout; counter; }
                    set units6_128 { type ipv6_addr; flags timeout; counter; }
                    set blocked4 { type ipv4_addr; flags interval, timeout; counter; }
                    set blocked6 { type ipv6_addr; flags interval, timeout; counter; }
                    chain prerouting {
                        type filter hook prerouting priority raw; policy accept;
                        ip saddr @allowed4 accept
                        ip6 saddr @allowed6 accept
                        ip saddr @hosts4 drop
                        ip6 saddr & ffff:ffff:ffff:ffff:: @units6_64 drop
                        ip6 saddr @units6_128 drop
                        ip saddr @blocked4 drop
                        ip6 saddr @blocked6 drop
                    }
                }
                add element inet ctr_test allowed4 { 127.0.0.0/8, 203.0.113.5, 198.51.100.0/24 }
                add element inet ctr_test allowed6 { ::1, fe80::1 }
                table inet ctr_test_guard
                delete table inet ctr_test_guard

                """,
                // The interval sets take a first element, and lose it again, before any block.
                """
                add element inet ctr_test blocked4 { 0.0.0.0 }
                delete element inet ctr_test blocked4 { 0.0.0.0 }
                add element inet ctr_test blocked6 { :: }
                delete element inet ctr_test blocked6 { :: }

                """,
            ]
        )
        // The exact sets likewise, over netlink.
        #expect(
            runner.transactions == [
                [
                    .add(set: "hosts4", key: address("0.0.0.0")), .delete(set: "hosts4", key: address("0.0.0.0")),
                    .add(set: "units6_64", key: address("::")), .delete(set: "units6_64", key: address("::")),
                    .add(set: "units6_128", key: address("::")), .delete(set: "units6_128", key: address("::")),
                ]
            ]
        )
    }

    @Test(arguments: [
        (56, "ip6 saddr & ffff:ffff:ffff:ff00:: @units6_56 drop"),
        (1, "ip6 saddr & 8000:: @units6_1 drop"),
        (128, "ip6 saddr @units6_128 drop"),  // the whole address: no mask
    ])
    func theIPv6UnitSetMatchesTheMaskedSource(length: Int, rule: String) throws {
        try blocker(.init(ipv6UnitLength: length)).createTable()
        let script = try #require(runner.scripts.first)
        #expect(script.contains("    set units6_\(length) { type ipv6_addr; flags timeout; counter; }\n"))
        #expect(script.contains("        \(rule)\n"))
    }

    @Test func addWithTTLCreatesTheElementThenReplacesItAndCarriesTheEntryInItsComment() throws {
        let blocker = try blocker()
        #expect(try blocker.add(entry("198.51.100.7")))
        #expect(try blocker.add(entry("198.51.100.7", ttl: .seconds(7200))))
        let comment = "conntrackr port_scan local \(referenceTime.nanoseconds)"
        let expires = (referenceTime + .seconds(3600)).nanoseconds
        let later = (referenceTime + .seconds(7200)).nanoseconds
        let key = address("198.51.100.7")
        let first = NftablesElementChange.Element(key: key, timeout: .seconds(3600), comment: "\(comment) \(expires)")
        let second = NftablesElementChange.Element(key: key, timeout: .seconds(7200), comment: "\(comment) \(later)")
        // A /32 goes into the exact set over netlink: no command for libnftables to parse.
        #expect(runner.calls.isEmpty)
        #expect(
            runner.transactions == [
                [.create(set: "hosts4", element: first)],
                [
                    .add(set: "hosts4", key: key), .delete(set: "hosts4", key: key),
                    .create(set: "hosts4", element: second),
                ],
            ]
        )
    }

    @Test func aPrefixTheSetHoldsAlreadyIsReplaced() throws {
        // Added by hand, say: unknown to the blocker, so it tries to create it first.
        runner.answer { changes in changes.count == 1 ? .refused(errno: EEXIST, change: 0) : .applied }
        #expect(try blocker().add(entry("198.51.100.7")))
        #expect(runner.transactions.count == 2)
        #expect(runner.transactions.last?.first == .add(set: "hosts4", key: address("198.51.100.7")))
    }

    @Test func aCIDRPrefixTheSetHoldsAlreadyIsReplaced() throws {
        runner.respond { call in
            call.commands.hasPrefix("create")
                ? NftablesResult(succeeded: false, error: "Error: Could not process rule: File exists\ncreate ...\n")
                : NftablesResult(succeeded: true)
        }
        #expect(try blocker().add(entry("198.51.100.0/24")))
        #expect(runner.scripts.count == 2)
        #expect(runner.scripts.last?.hasPrefix("add element inet conntrackr blocked4 { 198.51.100.0/24 }\n") == true)
        #expect(runner.transactions.isEmpty)
    }

    @Test func permanentBlocksHaveNoTimeoutAndIPv6UnitsGoToTheUnitSet() throws {
        #expect(try blocker().add(entry("2001:db8:0:bad::/64", ttl: nil, origin: .fleet)))
        let change = try #require(runner.transactions.first?.first)
        #expect(change.kind == .create)
        #expect(change.set == "units6_64")
        // The key is the network address, which the masked source address is looked up as.
        #expect(change.element.key == address("2001:db8:0:bad::"))
        #expect(change.element.timeout == nil)
        #expect(change.element.comment?.hasPrefix("conntrackr port_scan fleet ") == true)
        #expect(change.element.comment?.hasSuffix(" -") == true)
    }

    @Test func singleIPv6AddressesGoToTheirOwnExactSetBesideTheUnitSet() throws {
        // A source whose unit is shared (a neighbour in the host's own /64) is blocked as itself.
        #expect(try blocker().add(entry("2001:db8::1")))
        #expect(runner.transactions.map { $0.map(\.set) } == [["units6_128"]])
        #expect(runner.transactions.first?.first?.element.key == address("2001:db8::1"))
        #expect(runner.scripts.isEmpty)
    }

    @Test func aUnitOf128BitsHasOneExactIPv6Set() throws {
        try blocker(.init(ipv6UnitLength: 128)).createTable()
        let script = try #require(runner.scripts.first)
        #expect(script.components(separatedBy: "set units6_").count == 2)
    }

    @Test(arguments: ["2001:db8:0:bad::/48", "2001:db8:0:bad::/96", "203.0.113.0/25"])
    func otherPrefixesGoToTheIntervalSets(text: String) throws {
        #expect(try blocker().add(entry(text, ttl: nil)))
        let set = text.contains(":") ? "blocked6" : "blocked4"
        #expect(runner.transactions.isEmpty)
        let element = prefix(text).compactDescription
        #expect(runner.scripts.first?.hasPrefix("create element inet conntrackr \(set) { \(element) comment ") == true)
    }

    @Test func aConfiguredUnitLengthDecidesWhichIPv6PrefixesAreExact() throws {
        let blocker = try blocker(.init(ipv6UnitLength: 56))
        #expect(try blocker.add(entry("2001:db8:0:100::/56")))
        #expect(try blocker.add(entry("2001:db8:0:bad::/64")))
        #expect(runner.transactions.map { $0.map(\.set) } == [["units6_56"]])
        #expect(runner.scripts.count == 1)
        #expect(runner.scripts.first?.contains(" blocked6 { 2001:db8:0:bad::/64 ") == true)
    }

    @Test(arguments: [
        (EPERM, ConntrackrError.Code.missingPrivilege, "CAP_NET_ADMIN"),
        (ENOENT, .blockerFailed, "the table or its set is gone"),
        (ENOSPC, .blockerFailed, "No space left on device"),
    ])
    func aRefusedElementIsOneLine(code: Int32, kind: ConntrackrError.Code, words: String) throws {
        runner.answer { _ in .refused(errno: code, change: nil) }
        let error = try #require(throws: ConntrackrError.self) { try blocker().add(entry("198.51.100.7")) }
        #expect(error.code == kind)
        #expect(error.message.hasPrefix("nftables: blocking 198.51.100.7 failed: "))
        #expect(error.message.contains(words))
        #expect(!error.message.contains("\n"))
    }

    @Test(arguments: [
        (Duration.milliseconds(1500), "1s500ms"),
        (.milliseconds(250), "250ms"),
        (.nanoseconds(1), "1ms"),  // rounded up, never zero
        (.seconds(-5), "1ms"),  // already due: the kernel drops it at once and the sweep reports it
        (.seconds(300 * 86_400), "25920000s"),
    ])
    func kernelTimeouts(ttl: Duration, text: String) throws {
        _ = try blocker().add(entry("198.51.100.0/24", ttl: ttl))
        #expect(runner.scripts.first?.contains("198.51.100.0/24 timeout \(text) comment") == true)
    }

    @Test func aTTLBeyondAYearIsLeftToTheSweep() throws {
        _ = try blocker().add(entry("198.51.100.0/24", ttl: .seconds(400 * 86_400)))
        _ = try blocker().add(entry("198.51.100.7", ttl: .seconds(400 * 86_400)))
        #expect(runner.scripts.first?.contains("timeout") == false)
        #expect(runner.transactions.first?.first?.element.timeout == nil)
    }

    @Test func entriesComeFromTheListingWithCountersAndManualElements() throws {
        let since = referenceTime.nanoseconds - 60_000_000_000
        let expires = referenceTime.nanoseconds + 3_540_000_000_000
        runner.listing(
            nftListing(
                [
                    """
                    {"elem": {"val": "198.51.100.7", "timeout": 3600, "expires": 3539, \
                    "comment": "conntrackr port_scan local \(since) \(expires)", "counter": {"packets": 42, "bytes": 2520}}}
                    """,
                    // Added by hand: no comment; a plain prefix without timeout.
                    #"{"elem": {"val": {"prefix": {"addr": "203.0.113.0", "len": 24}}, "counter": {"packets": 0, "bytes": 0}}}"#,
                    #"{"elem": {"val": "203.0.113.200", "timeout": 100, "expires": 40, "comment": "ops ticket 12"}}"#,
                    // Not an IPv4 value, or not a prefix: skipped.
                    #"{"range": ["198.51.100.20", "198.51.100.22"]}"#,
                ],
                [#"{"prefix": {"addr": "2001:db8:0:bad::", "len": 64}}"#],
                // The exact sets' keys stand for their set's prefix length; a key of the wrong family is skipped.
                hosts4: [#"{"elem": {"val": "198.51.100.9", "comment": "by hand"}}"#, #""2001:db8::9""#],
                units6: [#"{"elem": {"val": "2001:db8:0:f00d::", "timeout": 60, "expires": 30}}"#, #""198.51.100.10""#]
            )
        )
        let entries = try blocker().entries()
        #expect(
            entries == [
                BlockEntry(
                    prefix: prefix("198.51.100.7"),
                    reason: .portScan,
                    since: Timestamp(nanoseconds: since),
                    expires: Timestamp(nanoseconds: expires),
                    droppedPackets: 42
                ),
                BlockEntry(prefix: prefix("198.51.100.9"), reason: .manual, since: referenceTime, expires: nil),
                BlockEntry(prefix: prefix("203.0.113.0/24"), reason: .manual, since: referenceTime, expires: nil),
                BlockEntry(
                    prefix: prefix("203.0.113.200"),
                    reason: .manual,
                    since: referenceTime + .seconds(-60),
                    expires: referenceTime + .seconds(40)
                ),
                BlockEntry(prefix: prefix("2001:db8:0:bad::/64"), reason: .manual, since: referenceTime, expires: nil),
                BlockEntry(
                    prefix: prefix("2001:db8:0:f00d::/64"),
                    reason: .manual,
                    since: referenceTime + .seconds(-30),
                    expires: referenceTime + .seconds(30)
                ),
            ]
        )
        #expect(runner.calls == [.init(commands: "list table inet conntrackr\n", json: true)])
    }

    @Test func kernelExpiredEntriesAreReportedOnceBySweep() throws {
        let clock = Mutex(referenceTime)
        let blocker = try NftablesBlocker(commands: runner, clock: { clock.withLock { $0 } })
        runner.listing(nftListing())
        #expect(try blocker.add(entry("198.51.100.7", ttl: .seconds(2))))
        #expect(try blocker.add(entry("198.51.100.8", ttl: .seconds(60))))
        runner.reset()
        // Nothing is due: no nftables call at all.
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(1)).isEmpty)
        #expect(runner.calls.isEmpty)

        // The kernel has dropped .7 by itself and still holds .8.
        let eight =
            #"{"elem": {"val": "198.51.100.8", "timeout": 60, "expires": 57, "comment": "conntrackr port_scan local "#
            + "\(referenceTime.nanoseconds) \((referenceTime + .seconds(60)).nanoseconds)\"}}"
        runner.listing(nftListing(hosts4: [eight]))
        clock.withLock { $0 = referenceTime + .seconds(3) }
        #expect(try blocker.entries().map(\.prefix) == [prefix("198.51.100.7"), prefix("198.51.100.8")])
        let expired = try blocker.removeExpired(asOf: referenceTime + .seconds(3))
        #expect(expired == [entry("198.51.100.7", ttl: .seconds(2))])
        // The element was already gone: nothing to delete.
        #expect(runner.scripts.isEmpty)
        #expect(runner.transactions.isEmpty)
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(3)).isEmpty)
        #expect(try blocker.entries().map(\.prefix) == [prefix("198.51.100.8")])
    }

    @Test func dueElementsStillInTheKernelAreDeleted() throws {
        let blocker = try blocker()
        runner.listing(nftListing())
        _ = try blocker.add(entry("198.51.100.7", ttl: .seconds(2)))
        let seven =
            #"{"elem": {"val": "198.51.100.7", "timeout": 2, "expires": 0, "comment": "conntrackr port_scan local "#
            + "\(referenceTime.nanoseconds) \((referenceTime + .seconds(2)).nanoseconds)\"}}"
        runner.listing(nftListing(hosts4: [seven]))
        runner.reset()
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(2)).map(\.prefix) == [prefix("198.51.100.7")])
        let key = address("198.51.100.7")
        #expect(runner.transactions == [[.add(set: "hosts4", key: key), .delete(set: "hosts4", key: key)]])
        #expect(runner.scripts.isEmpty)
    }

    @Test func aLongSweepOfExactElementsIsSentInBoundedBatches() throws {
        let blocker = try blocker()
        var listed: [String] = []
        for host in 1...20 {
            _ = try blocker.add(entry("198.51.100.\(host)", ttl: .seconds(2)))
            listed.append(
                #"{"elem": {"val": "198.51.100.\#(host)", "comment": "conntrackr port_scan local "#
                    + "\(referenceTime.nanoseconds) \((referenceTime + .seconds(2)).nanoseconds)\"}}"
            )
        }
        runner.listing(nftListing(hosts4: listed))
        runner.reset()
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(2)).count == 20)
        // Two changes per element, 32 at most per batch.
        #expect(runner.transactions.map(\.count) == [32, 8])
    }

    @Test func removeDeletesAPrefixFromEverySetThatHoldsIt() throws {
        // 198.51.100.7 in the exact set, and by hand in the interval set as well: listed once, deleted from both.
        runner.listing(nftListing([#""198.51.100.7""#], hosts4: [#""198.51.100.7""#]))
        let blocker = try blocker()
        #expect(try blocker.entries().map(\.prefix) == [prefix("198.51.100.7")])
        #expect(try blocker.remove(prefix("198.51.100.7")))
        let key = address("198.51.100.7")
        #expect(runner.transactions == [[.add(set: "hosts4", key: key), .delete(set: "hosts4", key: key)]])
        #expect(
            runner.scripts == [
                """
                add element inet conntrackr blocked4 { 198.51.100.7 }
                delete element inet conntrackr blocked4 { 198.51.100.7 }

                """
            ]
        )
    }

    @Test func aTableMadeWithAnotherUnitLengthIsReadWithItsLength() throws {
        // Made by an agent with --ipv6-block-prefix 48; read by a blocker configured for 64.
        runner.listing(nftListing(units6: [#""2001:db8:1::""#], units6Set: "units6_48"))
        #expect(try blocker().entries().map(\.prefix) == [prefix("2001:db8:1::/48")])
    }

    @Test func removeSaysWhetherThePrefixWasBlocked() throws {
        let blocker = try blocker()
        runner.listing(nftListing([#"{"elem": {"val": {"prefix": {"addr": "203.0.113.0", "len": 24}}}}"#]))
        #expect(try blocker.remove(prefix("203.0.113.0/24")))
        #expect(try !blocker.remove(prefix("198.51.100.1")))
        #expect(runner.scripts.count == 1)
    }

    @Test func capacityRefusesNewPrefixesWithoutCallingNftables() throws {
        let blocker = try blocker(.init(capacity: 2))
        #expect(try blocker.add(entry("198.51.100.1")))
        #expect(try blocker.add(entry("198.51.100.2")))
        runner.reset()
        #expect(try !blocker.add(entry("198.51.100.3")))
        #expect(runner.calls.isEmpty && runner.transactions.isEmpty)
        // Replacing a held prefix takes no new room.
        #expect(try blocker.add(entry("198.51.100.2")))
        #expect(runner.transactions.count == 1)
        // Room comes back when a block goes.
        runner.listing(nftListing([#""198.51.100.1""#, #""198.51.100.2""#]))
        #expect(try blocker.remove(prefix("198.51.100.1")))
        #expect(try blocker.add(entry("198.51.100.3")))
    }

    @Test func aBlockIsOneTransactionWithoutAListing() throws {
        // The count a decision needs is kept in memory: a block costs one call, never a listing first.
        let blocker = try blocker(.init(capacity: 10))
        let controller = BlockController(
            blocker: blocker, policy: BlockPolicy(maxBlocked: 5), allowlist: Allowlist(),
            metrics: DiscardingMetricsSink()
        )
        let scan = PortScan(
            time: referenceTime, source: address("198.51.100.7"), destination: address("203.0.113.1"),
            ports: [1, 2, 3, 4]
        )
        #expect(controller.handle(scan) == .blocked(controller.entry(for: scan)))
        #expect(runner.transactions.count == 1)
        #expect(runner.calls.isEmpty)
        let occupancy = try blocker.occupancy(holding: prefix("198.51.100.7"))
        #expect(occupancy == BlockOccupancy(count: 1, fleetCount: 0, holdsPrefix: true))
        #expect(try controller.blockedCount() == 1)
        #expect(runner.transactions.count == 1 && runner.calls.isEmpty)
    }

    @Test func entriesForgetBlocksDeletedBehindTheBlockersBack() throws {
        let blocker = try blocker()
        #expect(try blocker.add(entry("198.51.100.7", ttl: nil)))
        #expect(try blocker.occupancy(holding: nil).count == 1)
        runner.listing(nftListing())
        #expect(try blocker.entries().isEmpty)
        #expect(try blocker.occupancy(holding: nil).count == 0)
    }

    @Test func removeTableIsIdempotent() throws {
        try blocker(.init(table: "t_1")).removeTable()
        #expect(
            runner.scripts == [
                "table inet t_1\ndelete table inet t_1\ntable inet t_1_guard\ndelete table inet t_1_guard\n"
            ]
        )
    }

    @Test(arguments: ["", "1abc", "con-trackr", "a b", "x;flush ruleset", String(repeating: "a", count: 65)])
    func tableNamesThatNftWouldMisreadAreRefused(name: String) {
        let error = #expect(throws: ConntrackrError.self) { try NftablesBlocker(.init(table: name), commands: runner) }
        // One line, and the name itself is not echoed.
        #expect(error?.message.contains("\n") == false)
        if !name.isEmpty { #expect(error?.message.contains(name) == false) }
    }

    @Test func missingPrivilegeIsNamed() throws {
        runner.respond { _ in
            NftablesResult(
                succeeded: false,
                error: "Error: Could not process rule: Operation not permitted\ntable inet conntrackr\n^^^^^\n"
            )
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().createTable() }
        #expect(error.code == .missingPrivilege)
        #expect(error.message.contains("CAP_NET_ADMIN"))
        #expect(error.message.contains("Error: Could not process rule: Operation not permitted"))
        #expect(!error.message.contains("\n"))
    }

    @Test func aRejectedScriptGivesNftsFirstErrorLine() throws {
        runner.respond { _ in
            NftablesResult(succeeded: false, error: "warning: something\nError: syntax error\n  x\n  ^\n")
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().add(entry("198.51.100.0/24")) }
        #expect(error.code == .blockerFailed)
        #expect(error.message == "nftables: blocking 198.51.100.0/24 failed: Error: syntax error")
    }

    @Test func anOverlapNamesTheBlockInTheWay() throws {
        runner.respond { call in
            if call.json {
                return NftablesResult(
                    succeeded: true,
                    output: nftListing([#"{"prefix": {"addr": "198.51.100.0", "len": 24}}"#])
                )
            }
            return NftablesResult(succeeded: false, error: "Error: interval overlaps with an existing one\n")
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().add(entry("198.51.100.0/25")) }
        #expect(error.message.contains("cannot block 198.51.100.0/25: it overlaps the block on 198.51.100.0/24"))
    }

    @Test func aMissingTableSaysSo() throws {
        runner.respond { _ in
            NftablesResult(succeeded: false, error: "Error: No such file or directory\nlist table inet conntrackr\n")
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().entries() }
        #expect(
            error.message
                == "nftables table inet conntrackr does not exist (not created yet, or the ruleset was flushed)"
        )
    }

    @Test func aNamespaceThatCannotBeOpenedIsOneLine() throws {
        let error = try #require(throws: ConntrackrError.self) {
            try NftablesBlocker(.init(networkNamespace: "/nonexistent/netns"))
        }
        #expect(
            error.message == "nftables: cannot open network namespace /nonexistent/netns: No such file or directory"
        )
    }

    @Test func garbageListingsAreErrorsNotCrashes() throws {
        for output in [
            "", "not json", "{}", #"{"nftables": 3}"#, #"{"nftables": [{"set": {"name": "blocked4", "elem": 7}}]}"#,
            #"{"nftables": [{"set": {"name": "blocked4", "elem": [{"elem": {}}, {"prefix": {"addr": "x", "len": -1}}, 5, null]}}]}"#,
        ] {
            runner.listing(output)
            _ = try? blocker().entries()
        }
    }
}
