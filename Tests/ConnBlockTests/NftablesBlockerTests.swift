import ConnBlock
import ConnCore
import ConnTesting
import Foundation
import Synchronization
import Testing

/// A runner that records every command and answers from a script of responses, so the nft scripts the blocker
/// writes can be checked without a kernel.
final class FakeRunner: CommandRunner {
    struct Call: Hashable {
        var arguments: [String]
        var input: String
    }

    private let state = Mutex<(calls: [Call], respond: @Sendable ([String]) -> CommandResult)>(
        (
            [],
            { _ in
                CommandResult(status: 0)
            }
        )
    )

    var calls: [Call] { state.withLock { $0.calls } }
    var scripts: [String] { calls.filter { $0.arguments.contains("-f") }.map(\.input) }

    /// Answers `nft -j list ...` with `json`, everything else with success.
    func listing(_ json: String) {
        respond { arguments in
            arguments.contains("-j")
                ? CommandResult(status: 0, standardOutput: Array(json.utf8)) : CommandResult(status: 0)
        }
    }

    func respond(_ respond: @escaping @Sendable ([String]) -> CommandResult) {
        state.withLock { $0.respond = respond }
    }

    func reset() { state.withLock { $0.calls = [] } }

    func run(_ arguments: [String], input: [UInt8], timeout: Duration) throws(ConntrackrError) -> CommandResult {
        state.withLock { state in
            state.calls.append(Call(arguments: arguments, input: String(decoding: input, as: UTF8.self)))
            return state.respond(arguments)
        }
    }
}

/// `nft -j list table` output holding `elements` (JSON texts) in blocked4 and `elements6` in blocked6.
func nftListing(_ elements: [String] = [], _ elements6: [String] = [], table: String = "conntrackr") -> String {
    func set(_ name: String, _ type: String, _ elements: [String]) -> String {
        let elem = elements.isEmpty ? "" : ", \"elem\": [\(elements.joined(separator: ", "))]"
        return """
            {"set": {"family": "inet", "name": "\(name)", "table": "\(table)", "type": "\(type)", "handle": 3, \
            "flags": ["interval", "timeout"]\(elem), "stmt": [{"counter": null}]}}
            """
    }
    return """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, \
        {"table": {"family": "inet", "name": "\(table)", "handle": 1}}, \
        {"set": {"family": "inet", "name": "allowed4", "table": "\(table)", "type": "ipv4_addr", "handle": 2, \
        "flags": ["interval"], "elem": [{"prefix": {"addr": "127.0.0.0", "len": 8}}, "198.51.100.99"]}}, \
        \(set("blocked4", "ipv4_addr", elements)), \(set("blocked6", "ipv6_addr", elements6))]}
        """
}

@Suite struct NftablesBlockerTests {
    let runner = FakeRunner()

    func blocker(_ configuration: NftablesBlocker.Configuration = .init()) throws -> NftablesBlocker {
        try NftablesBlocker(configuration, runner: runner, clock: { referenceTime })
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
        try blocker(.init(table: "ctr_test", command: ["ip", "netns", "exec", "ctr-nft-1", "nft"])).createTable(
            allowing: allowlist
        )
        #expect(runner.calls.map(\.arguments) == [["ip", "netns", "exec", "ctr-nft-1", "nft", "-f", "-"]])
        #expect(
            runner.scripts == [
                """
                table inet ctr_test
                delete table inet ctr_test
                table inet ctr_test {
                    set allowed4 { type ipv4_addr; flags interval; auto-merge; }
                    set allowed6 { type ipv6_addr; flags interval; auto-merge; }
                    set blocked4 { type ipv4_addr; flags interval, timeout; counter; }
                    set blocked6 { type ipv6_addr; flags interval, timeout; counter; }
                    chain prerouting {
                        type filter hook prerouting priority raw; policy accept;
                        ip saddr @allowed4 accept
                        ip6 saddr @allowed6 accept
                        ip saddr @blocked4 drop
                        ip6 saddr @blocked6 drop
                    }
                }
                add element inet ctr_test allowed4 { 127.0.0.0/8, 203.0.113.5, 198.51.100.0/24 }
                add element inet ctr_test allowed6 { ::1, fe80::1 }

                """
            ]
        )
    }

    @Test func addWithTTLReplacesTheElementAndCarriesTheEntryInItsComment() throws {
        let blocker = try blocker()
        #expect(try blocker.add(entry("198.51.100.7")))
        let expires = (referenceTime + .seconds(3600)).nanoseconds
        #expect(
            runner.scripts == [
                """
                add element inet conntrackr blocked4 { 198.51.100.7 }
                delete element inet conntrackr blocked4 { 198.51.100.7 }
                add element inet conntrackr blocked4 { 198.51.100.7 timeout 3600s comment "conntrackr port_scan local \
                \(referenceTime.nanoseconds) \(expires)" }

                """
            ]
        )
    }

    @Test func permanentBlocksHaveNoTimeoutAndIPv6PrefixesGoToTheIPv6Set() throws {
        #expect(try blocker().add(entry("2001:db8:0:bad::/64", ttl: nil, origin: .fleet)))
        let script = try #require(runner.scripts.first)
        #expect(
            script.contains(
                "add element inet conntrackr blocked6 { 2001:db8:0:bad::/64 comment \"conntrackr port_scan fleet "
            )
        )
        #expect(script.hasSuffix(" -\" }\n"))
        #expect(!script.contains("timeout"))
    }

    @Test(arguments: [
        (Duration.milliseconds(1500), "1s500ms"),
        (.milliseconds(250), "250ms"),
        (.nanoseconds(1), "1ms"),  // rounded up, never zero
        (.seconds(-5), "1ms"),  // already due: the kernel drops it at once and the sweep reports it
        (.seconds(300 * 86_400), "25920000s"),
    ])
    func kernelTimeouts(ttl: Duration, text: String) throws {
        _ = try blocker().add(entry("198.51.100.7", ttl: ttl))
        #expect(runner.scripts.first?.contains("198.51.100.7 timeout \(text) comment") == true)
    }

    @Test func aTTLBeyondAYearIsLeftToTheSweep() throws {
        _ = try blocker().add(entry("198.51.100.7", ttl: .seconds(400 * 86_400)))
        #expect(runner.scripts.first?.contains("timeout") == false)
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
                [#"{"prefix": {"addr": "2001:db8:0:bad::", "len": 64}}"#]
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
                BlockEntry(prefix: prefix("203.0.113.0/24"), reason: .manual, since: referenceTime, expires: nil),
                BlockEntry(
                    prefix: prefix("203.0.113.200"),
                    reason: .manual,
                    since: referenceTime + .seconds(-60),
                    expires: referenceTime + .seconds(40)
                ),
                BlockEntry(prefix: prefix("2001:db8:0:bad::/64"), reason: .manual, since: referenceTime, expires: nil),
            ]
        )
        #expect(runner.calls.map(\.arguments) == [["nft", "-j", "list", "table", "inet", "conntrackr"]])
    }

    @Test func kernelExpiredEntriesAreReportedOnceBySweep() throws {
        let clock = Mutex(referenceTime)
        let blocker = try NftablesBlocker(runner: runner, clock: { clock.withLock { $0 } })
        runner.listing(nftListing())
        #expect(try blocker.add(entry("198.51.100.7", ttl: .seconds(2))))
        #expect(try blocker.add(entry("198.51.100.8", ttl: .seconds(60))))
        runner.reset()
        // Nothing is due: no nft run at all.
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(1)).isEmpty)
        #expect(runner.calls.isEmpty)

        // The kernel has dropped .7 by itself and still holds .8.
        let eight =
            #"{"elem": {"val": "198.51.100.8", "timeout": 60, "expires": 57, "comment": "conntrackr port_scan local "#
            + "\(referenceTime.nanoseconds) \((referenceTime + .seconds(60)).nanoseconds)\"}}"
        runner.listing(nftListing([eight]))
        clock.withLock { $0 = referenceTime + .seconds(3) }
        #expect(try blocker.entries().map(\.prefix) == [prefix("198.51.100.7"), prefix("198.51.100.8")])
        let expired = try blocker.removeExpired(asOf: referenceTime + .seconds(3))
        #expect(expired == [entry("198.51.100.7", ttl: .seconds(2))])
        // The element was already gone: nothing to delete.
        #expect(runner.scripts.isEmpty)
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
        runner.listing(nftListing([seven]))
        runner.reset()
        #expect(try blocker.removeExpired(asOf: referenceTime + .seconds(2)).map(\.prefix) == [prefix("198.51.100.7")])
        #expect(
            runner.scripts == [
                """
                add element inet conntrackr blocked4 { 198.51.100.7 }
                delete element inet conntrackr blocked4 { 198.51.100.7 }

                """
            ]
        )
    }

    @Test func removeSaysWhetherThePrefixWasBlocked() throws {
        let blocker = try blocker()
        runner.listing(nftListing([#"{"elem": {"val": {"prefix": {"addr": "203.0.113.0", "len": 24}}}}"#]))
        #expect(try blocker.remove(prefix("203.0.113.0/24")))
        #expect(try !blocker.remove(prefix("198.51.100.1")))
        #expect(runner.scripts.count == 1)
    }

    @Test func capacityRefusesNewPrefixesWithoutRunningAScript() throws {
        let blocker = try blocker(.init(capacity: 2))
        runner.listing(nftListing([#""198.51.100.1""#, #""198.51.100.2""#]))
        #expect(try !blocker.add(entry("198.51.100.3")))
        #expect(runner.scripts.isEmpty)
        #expect(try blocker.add(entry("198.51.100.2")))
        #expect(runner.scripts.count == 1)
    }

    @Test func removeTableIsIdempotent() throws {
        try blocker(.init(table: "t_1")).removeTable()
        #expect(runner.scripts == ["table inet t_1\ndelete table inet t_1\n"])
    }

    @Test(arguments: ["", "1abc", "con-trackr", "a b", "x;flush ruleset", String(repeating: "a", count: 65)])
    func tableNamesThatNftWouldMisreadAreRefused(name: String) {
        #expect(throws: ConntrackrError.self) { try NftablesBlocker(.init(table: name), runner: runner) }
    }

    @Test func missingPrivilegeIsNamed() throws {
        runner.respond { _ in
            CommandResult(
                status: 1,
                standardError: Array(
                    "/dev/stdin:1:1-20: Error: Could not process rule: Operation not permitted\ntable inet conntrackr\n^^^^^\n"
                        .utf8
                )
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
            CommandResult(
                status: 1,
                standardError: Array("warning: something\n/dev/stdin:3:1: Error: syntax error\n  x\n  ^\n".utf8)
            )
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().add(entry("198.51.100.7")) }
        #expect(error.code == .blockerFailed)
        #expect(error.message == "nftables: blocking 198.51.100.7 failed: /dev/stdin:3:1: Error: syntax error")
    }

    @Test func anOverlapNamesTheBlockInTheWay() throws {
        runner.respond { arguments in
            if arguments.contains("-j") {
                return CommandResult(
                    status: 0,
                    standardOutput: Array(nftListing([#"{"prefix": {"addr": "198.51.100.0", "len": 24}}"#]).utf8)
                )
            }
            return CommandResult(
                status: 1,
                standardError: Array("/dev/stdin:1:1: Error: interval overlaps with an existing one\n".utf8)
            )
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().add(entry("198.51.100.7")) }
        #expect(error.message.contains("cannot block 198.51.100.7: it overlaps the block on 198.51.100.0/24"))
    }

    @Test func aMissingTableSaysSo() throws {
        runner.respond { _ in
            CommandResult(
                status: 1,
                standardError: Array("Error: No such file or directory\nlist table inet conntrackr\n".utf8)
            )
        }
        let error = try #require(throws: ConntrackrError.self) { try blocker().entries() }
        #expect(
            error.message
                == "nftables table inet conntrackr does not exist (not created yet, or the ruleset was flushed)"
        )
    }

    @Test func aMissingNftSaysWhatToInstall() throws {
        let blocker = try NftablesBlocker(.init(command: ["/nonexistent/nft"]))
        let error = try #require(throws: ConntrackrError.self) { try blocker.createTable() }
        #expect(error.message == "nftables blocker: cannot run /nonexistent/nft: No such file or directory")
        let onPath = try NftablesBlocker(.init(command: ["conntrackr-no-such-nft"]))
        let pathError = try #require(throws: ConntrackrError.self) { try onPath.createTable() }
        #expect(
            pathError.message
                == "nftables blocker: cannot run conntrackr-no-such-nft: not found in /usr/sbin:/usr/bin:/sbin:/bin"
                + " (install the nftables package)"
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

@Suite struct SpawnCommandRunnerTests {
    let runner = SpawnCommandRunner()

    @Test func passesInputAndCollectsOutputAndStatus() throws {
        let input = Array(String(repeating: "0123456789abcdef", count: 1 << 16).utf8)  // 1 MiB, beyond any pipe buffer
        let result = try runner.run(["sh", "-c", "cat; echo oops >&2; exit 3"], input: input, timeout: .seconds(10))
        #expect(result.status == 3)
        #expect(result.standardOutput == input)
        #expect(result.standardError == Array("oops\n".utf8))
    }

    @Test func aSignalIsReportedAs128PlusItsNumber() throws {
        let result = try runner.run(["sh", "-c", "kill -9 $$"], input: [], timeout: .seconds(10))
        #expect(result.status == 128 + 9)
    }

    @Test func aCommandThatRunsTooLongIsKilled() throws {
        let start = ContinuousClock.now
        #expect(throws: ConntrackrError.self) {
            try runner.run(["sleep", "120"], input: [], timeout: .milliseconds(300))
        }
        // Killed at its timeout, not left to run its 120 s.
        #expect(ContinuousClock.now - start < .seconds(60))
    }

    @Test func theChildGetsAMinimalEnvironmentNotTheAgents() throws {
        // The agent's environment holds the fleet password; the test process's holds at least PATH and HOME.
        let result = try runner.run(["env"], input: [], timeout: .seconds(10))
        let lines = String(decoding: result.standardOutput, as: UTF8.self).split(separator: "\n").map(String.init)
        #expect(lines.sorted() == ["LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        #expect(SpawnCommandRunner.environment.sorted() == lines.sorted())
    }

    @Test func commandsRunByAbsolutePathFromTheSystemDirectories() throws {
        let shell = try #require(runner.resolve("sh"))
        #expect(SpawnCommandRunner.searchPath.contains { shell == $0 + "/sh" })
        #expect(runner.resolve("/bin/sh") == "/bin/sh")
        // $0 of a program run by absolute path is what it was given; the kernel's view is the resolved path.
        let result = try runner.run(["sh", "-c", "readlink /proc/$$/exe"], input: [], timeout: .seconds(10))
        #expect(String(decoding: result.standardOutput, as: UTF8.self).hasPrefix("/"))
        if let nft = runner.resolve("nft") {
            #expect(["/usr/sbin/nft", "/usr/bin/nft", "/sbin/nft", "/bin/nft"].contains(nft))
        }
    }

    @Test func aMissingCommandIsAnErrorNamingWhereItWasLookedFor() throws {
        #expect(runner.resolve("conntrackr-no-such-command") == nil)
        let error = try #require(throws: ConntrackrError.self) {
            try runner.run(["conntrackr-no-such-command"], input: [], timeout: .seconds(10))
        }
        #expect(error.message == "cannot run conntrackr-no-such-command: not found in /usr/sbin:/usr/bin:/sbin:/bin")
    }

    @Test func theChildSeesNoExtraDescriptors() throws {
        // Only 0, 1, 2 (and the descriptor ls itself opens to read the directory).
        let result = try runner.run(["sh", "-c", "ls /proc/self/fd | wc -l"], input: [], timeout: .seconds(10))
        let count = Int(
            String(decoding: result.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        )
        #expect(count == 4)
    }
}
