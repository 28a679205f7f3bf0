import ConnBlock
import ConnCore
import ConnTesting
import Dispatch
import Foundation
import Testing

/// The nftables blocker against the real kernel, each test in a network namespace of its own.
@Suite(.enabled(if: geteuid() == 0, "needs root for network namespaces and nftables"), .timeLimit(.minutes(1)))
struct NftablesKernelTests {
    func entry(
        _ text: String,
        ttl: Duration?,
        reason: BlockReason = .portScan,
        origin: BlockOrigin = .local
    ) -> BlockEntry {
        let now = Timestamp.now()
        return BlockEntry(
            prefix: prefix(text),
            reason: reason,
            origin: origin,
            since: now,
            expires: ttl.map { now + $0 }
        )
    }

    @Test func createAddListReplaceRemoveAndDeleteTheTable() throws {
        let namespace = try NetworkNamespace("nft")
        defer { namespace.remove() }
        let table = "ctr_test_\(runSuffix())"
        let blocker = try NftablesBlocker(.init(table: table, networkNamespace: namespace.path))
        try blocker.createTable(allowing: Allowlist([.init(prefix: prefix("203.0.113.0/24"), reason: .configured)]))

        let scanner = entry("198.51.100.7", ttl: .seconds(3600))
        let learned = entry("2001:db8:0:bad::/64", ttl: nil, reason: .manual, origin: .fleet)
        #expect(try blocker.add(scanner))
        #expect(try blocker.add(learned))
        // Element comments carry the entries whole, so they read back exactly.
        #expect(try blocker.entries() == [scanner, learned])

        // Written over netlink, read back by nft: key, counter, timeout and comment.
        let hosts4 = try namespace.exec(["nft", "list", "set", "inet", table, "hosts4"])
        #expect(hosts4.contains("198.51.100.7 counter packets 0 bytes 0 timeout 1h expires "))
        #expect(hosts4.contains(" comment \"conntrackr port_scan local \(scanner.since.nanoseconds) "))
        let units6 = try namespace.exec(["nft", "list", "set", "inet", table, "units6_64"])
        // Permanent: no timeout between the counter and the comment.
        #expect(units6.contains("2001:db8:0:bad:: counter packets 0 bytes 0 comment "))
        let allowed4 = try namespace.exec(["nft", "list", "set", "inet", table, "allowed4"])
        #expect(allowed4.contains("127.0.0.0/8") && allowed4.contains("203.0.113.0/24"))
        let chain = try namespace.exec(["nft", "list", "chain", "inet", table, "prerouting"])
        #expect(chain.contains("type filter hook prerouting priority raw; policy accept;"))

        // Adding the same prefix again replaces its entry.
        var renewed = scanner
        renewed.expires = scanner.since + .seconds(7200)
        #expect(try blocker.add(renewed))
        #expect(try blocker.entries() == [renewed, learned])

        #expect(try blocker.remove(scanner.prefix))
        #expect(try !blocker.remove(scanner.prefix))
        // A block made by hand (no conntrackr comment) is listed as manual, and can be removed.
        try namespace.exec(["nft", "add", "element", "inet", table, "blocked4", "{ 198.51.100.128/25 }"])
        #expect(try blocker.entries().contains { $0.prefix == prefix("198.51.100.128/25") && $0.reason == .manual })
        // Blocking a prefix the set holds already (unknown to the blocker) replaces the element.
        let over = entry("198.51.100.128/25", ttl: .seconds(60))
        #expect(try blocker.add(over))
        #expect(try blocker.entries().contains(over))
        #expect(try blocker.remove(prefix("198.51.100.128/25")))
        #expect(try blocker.entries() == [learned])

        try blocker.replaceAllowlist(Allowlist())
        let emptied = try namespace.exec(["nft", "list", "set", "inet", table, "allowed4"])
        #expect(emptied.contains("127.0.0.0/8") && !emptied.contains("203.0.113.0/24"))

        try blocker.removeTable()
        #expect(try !namespace.exec(["nft", "list", "tables"]).contains(table))
        try blocker.removeTable()  // idempotent
        #expect(throws: ConntrackrError.self) { try blocker.entries() }
    }

    @Test func createTableReplacesALeftoverTable() throws {
        let namespace = try NetworkNamespace("nft")
        defer { namespace.remove() }
        let table = "ctr_test_\(runSuffix())"
        let first = try NftablesBlocker(.init(table: table, networkNamespace: namespace.path))
        try first.createTable()
        _ = try first.add(entry("198.51.100.7", ttl: nil))
        // A new agent after a kill -9 starts clean.
        let second = try NftablesBlocker(.init(table: table, networkNamespace: namespace.path))
        try second.createTable()
        #expect(try second.entries().isEmpty)
        // A second process (conntrackr blocklist) sees the agent's entries without creating anything.
        _ = try second.add(entry("198.51.100.8", ttl: .seconds(60)))
        #expect(try first.entries().map(\.prefix) == [prefix("198.51.100.8")])
    }

    @Test func theKernelTimesEntriesOutAndTheSweepReportsThem() throws {
        let namespace = try NetworkNamespace("nft")
        defer { namespace.remove() }
        let table = "ctr_test_\(runSuffix())"
        let blocker = try NftablesBlocker(.init(table: table, networkNamespace: namespace.path))
        try blocker.createTable()
        let short = entry("198.51.100.7", ttl: .seconds(1))
        let long = entry("2001:db8:0:bad::/64", ttl: .seconds(3600))
        #expect(try blocker.add(short))
        #expect(try blocker.add(long))

        // Wait (bounded) for the kernel to drop the short one on its own.
        let deadline = ContinuousClock.now + .seconds(6)
        while try namespace.exec(["nft", "list", "set", "inet", table, "hosts4"]).contains("198.51.100.7") {
            #expect(ContinuousClock.now < deadline, "the kernel did not time the element out")
            if ContinuousClock.now >= deadline { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
        // Gone from the kernel, still listed until the sweep reports it.
        #expect(try blocker.entries() == [short, long])
        #expect(try blocker.removeExpired(asOf: Timestamp.now()) == [short])
        #expect(try blocker.removeExpired(asOf: Timestamp.now()).isEmpty)
        #expect(try blocker.entries() == [long])

        // An entry due by the agent's clock but not yet by the kernel's is deleted by the sweep.
        let swept = try blocker.removeExpired(asOf: Timestamp.now() + .seconds(7200))
        #expect(swept == [long])
        #expect(try !namespace.exec(["nft", "list", "set", "inet", table, "units6_64"]).contains("2001:db8:0:bad::"))
    }

    @Test func overlappingPrefixesAreRefusedWithTheBlockInTheWay() throws {
        let namespace = try NetworkNamespace("nft")
        defer { namespace.remove() }
        let blocker = try NftablesBlocker(.init(table: "ctr_test_\(runSuffix())", networkNamespace: namespace.path))
        try blocker.createTable()
        #expect(try blocker.add(entry("198.51.100.0/24", ttl: .seconds(60))))
        let error = try #require(throws: ConntrackrError.self) {
            try blocker.add(entry("198.51.100.0/25", ttl: .seconds(60)))
        }
        #expect(error.message.contains("cannot block 198.51.100.0/25: it overlaps the block on 198.51.100.0/24"))
        // A single address goes to the exact set, which does not mind the /24.
        #expect(try blocker.add(entry("198.51.100.7", ttl: .seconds(60))))
        #expect(try blocker.entries().map(\.prefix) == [prefix("198.51.100.0/24"), prefix("198.51.100.7")])
    }

    @Test func concurrentCallersAllLand() throws {
        let namespace = try NetworkNamespace("nft")
        defer { namespace.remove() }
        let blocker = try NftablesBlocker(.init(table: "ctr_test_\(runSuffix())", networkNamespace: namespace.path, capacity: 12))
        try blocker.createTable()
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            // Exact IPv4 and IPv6 elements (netlink) and /128s (libnftables) at once.
            let text = ["198.51.100.\(index + 1)", "2001:db8:\(index + 1)::/64", "2001:db8::\(index + 1)"][index % 3]
            _ = try? blocker.add(entry(text, ttl: .seconds(60)))
        }
        #expect(try blocker.entries().count == 12)
    }
}

/// Blocked sources really are dropped: a victim namespace runs the blocker and a listener, a peer namespace
/// connects from several lab addresses over a veth pair.
@Suite(.enabled(if: geteuid() == 0, "needs root for network namespaces and nftables"), .timeLimit(.minutes(1)))
struct NftablesDropTests {
    @Test func blockedSourcesCannotConnectWhileOthersCan() throws {
        let lab = try VethLab(
            "nft",
            sources: [
                "203.0.113.10/24", "203.0.113.20/24", "203.0.113.33/24", "203.0.113.34/24", "2001:db8:0:bad::2/64",
                "2001:db8:0:900d::2/64", "2001:db8:0:900d::3/64",
            ]
        )
        defer { lab.remove() }
        let (victim, peer, suffix) = (lab.victim, lab.peer, runSuffix())

        let listener = try BackgroundCommand(
            ["ip", "netns", "exec", victim.name, "python3", "-m", "http.server", "8080", "--bind", "::"]
        )
        defer { listener.stop() }

        let sources = [
            "203.0.113.10", "203.0.113.20", "203.0.113.33", "203.0.113.34", "2001:db8:0:bad::2", "2001:db8:0:900d::2",
            "2001:db8:0:900d::3",
        ]
        let destinations = sources.map { $0.contains(":") ? "2001:db8:0:1::1" : "203.0.113.1" }
        func results() throws -> [String: String] {
            try connectResults(in: peer, from: sources, to: destinations, port: 8080)
        }

        // Before any block everyone gets through (retrying while the listener starts).
        var before: [String: String] = [:]
        for _ in 0..<20 {
            before = try results()
            if before.values.allSatisfy({ $0 == "open" }) { break }
            Thread.sleep(forTimeInterval: 0.25)
        }
        try #require(before.values.allSatisfy { $0 == "open" }, "lab not ready: \(before)")

        let blocker = try NftablesBlocker(.init(table: "ctr_test_\(suffix)", networkNamespace: victim.path))
        // 203.0.113.33 is allowlisted and stays reachable although a hand-made /28 block covers it.
        try blocker.createTable(allowing: Allowlist([.init(prefix: prefix("203.0.113.33"), reason: .configured)]))
        let now = Timestamp.now()
        // 2001:db8:0:900d::3 is blocked as itself (units6_128), beside an open neighbour in its /64.
        for blocked in ["203.0.113.10", "203.0.113.32/28", "2001:db8:0:bad::/64", "2001:db8:0:900d::3"] {
            #expect(
                try blocker.add(
                    BlockEntry(prefix: prefix(blocked), reason: .portScan, since: now, expires: now + .seconds(300))
                )
            )
        }

        let during = try results()
        #expect(
            during == [
                "203.0.113.10": "TimeoutError",
                "203.0.113.20": "open",
                "203.0.113.33": "open",
                "203.0.113.34": "TimeoutError",
                "2001:db8:0:bad::2": "TimeoutError",
                "2001:db8:0:900d::2": "open",
                "2001:db8:0:900d::3": "TimeoutError",
            ]
        )
        let counted = try blocker.entries().first { $0.prefix == prefix("203.0.113.10") }
        #expect((counted?.droppedPackets ?? 0) >= 1)

        #expect(try blocker.remove(prefix("203.0.113.10")))
        #expect(try results()["203.0.113.10"] == "open")

        // Removing the table (agent exit) lifts every block.
        try blocker.removeTable()
        let after = try results()
        #expect(after.values.allSatisfy { $0 == "open" }, "\(after)")
    }
}

/// The scan guard in the real kernel: what a prober learns port by port (an RST from a closed port is an answer,
/// silence is a drop), from several sources of a peer namespace.
@Suite(.enabled(if: geteuid() == 0, "needs root for network namespaces and nftables"), .timeLimit(.minutes(1)))
struct NftablesScanGuardKernelTests {
    /// Connects from `source` to each of `ports` of `destination` in turn, each attempt one SYN (given up after
    /// 0.3 s, before any retransmission): "answered" (refused or open) or "dropped".
    func probe(_ peer: NetworkNamespace, from source: String, to destination: String, ports: [Int]) throws -> [String] {
        let script = """
            import socket, sys
            source, destination = sys.argv[1], sys.argv[2]
            family = socket.AF_INET6 if ":" in destination else socket.AF_INET
            for port in sys.argv[3:]:
                s = socket.socket(family, socket.SOCK_STREAM)
                s.settimeout(0.3)
                s.bind((source, 0))
                try:
                    s.connect((destination, int(port)))
                    print("answered")
                except ConnectionRefusedError:
                    print("answered")
                except TimeoutError:
                    print("dropped")
                finally:
                    s.close()
            """
        let output = try peer.exec(
            ["timeout", "20", "python3", "-c", script, source, destination] + ports.map(String.init),
            timeout: .seconds(25)
        )
        return output.split(separator: "\n").map(String.init)
    }

    @Test func scannersLearnTheThresholdsWorthWithinTheBudgetAndOthersAreUntouched() throws {
        let lab = try VethLab("ng", sources: ["203.0.113.10/24", "203.0.113.20/24", "203.0.113.33/24", "2001:db8:0:bad::2/64"])
        defer { lab.remove() }
        let (victim, peer, suffix, victimLink) = (lab.victim, lab.peer, runSuffix(), lab.victimLink)

        let guarded = try #require(
            NftablesScanGuard(
                rule: ScanRule(portThreshold: 3, window: .seconds(60), ignoredPorts: PortSet([9...9])),
                interface: victimLink, localDestinationsOnly: true, maxBlocksPerMinute: 2
            )
        )
        let blocker = try NftablesBlocker(
            .init(table: "ctr_test_\(suffix)", networkNamespace: victim.path, scanGuard: guarded)
        )
        try blocker.createTable(allowing: Allowlist([.init(prefix: prefix("203.0.113.33"), reason: .configured)]))
        defer { try? blocker.removeTable() }

        let answered = Array(repeating: "answered", count: 3)
        // A scanner: three ports answer, the rest are dropped.
        #expect(try probe(peer, from: "203.0.113.10", to: "203.0.113.1", ports: [1, 2, 3, 4, 5]) == answered + ["dropped", "dropped"])
        // Asking a dropped port again does not pass as a port already reached; a reached port and an ignored one do.
        #expect(try probe(peer, from: "203.0.113.10", to: "203.0.113.1", ports: [4, 1, 9]) == ["dropped", "answered", "answered"])
        // IPv6 alike: the second pair the budget (2 a minute) holds.
        #expect(try probe(peer, from: "2001:db8:0:bad::2", to: "2001:db8:0:1::1", ports: [1, 2, 3, 4, 5]) == answered + ["dropped", "dropped"])
        // The budget is spent: a third scanner passes the guard (the agent's detection is left to deal with it).
        #expect(try probe(peer, from: "203.0.113.20", to: "203.0.113.1", ports: [1, 2, 3, 4, 5]) == Array(repeating: "answered", count: 5))
        // Allowlisted sources are never counted.
        #expect(try probe(peer, from: "203.0.113.33", to: "203.0.113.1", ports: Array(1...6)) == Array(repeating: "answered", count: 6))
        let held = try victim.exec(["nft", "list", "set", "inet", "ctr_test_\(suffix)_guard", "guard_held4"])
        #expect(held.contains("203.0.113.10 . 203.0.113.1") && !held.contains("203.0.113.20"), "\(held)")
        // The block listing does not read the guard's sets.
        #expect(try blocker.entries().isEmpty)
        try blocker.removeTable()
        let tables = try victim.exec(["nft", "list", "tables"])
        #expect(!tables.contains("ctr_test"), "\(tables)")
    }
}
