import ConnBlock
import ConnCore
import ConnTesting
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The host allowlist as the ``BlockController`` applies it: each listed address is refused with its reason.
@Suite struct HostAllowlistBlockingTests {
    @Test func anAllowlistedScannerIsReportedWithItsReasonAndNotBlocked() throws {
        let allowlist = try HostAllowlist(
            allowed: [prefix("198.51.100.0/24")],
            ipv4RouteTable: fixturePath("route"),
            ipv6RouteTable: fixturePath("ipv6_route")
        ).build(hostAddresses: [address("203.0.113.5")])
        let metrics = RecordingMetricsSink()
        let controller = BlockController(
            blocker: InMemoryBlocker(), policy: BlockPolicy(), allowlist: allowlist, metrics: metrics
        )
        let cases = [
            ("198.51.100.77", "allowlisted: configured 198.51.100.0/24"),
            ("203.0.113.1", "allowlisted: gateway 203.0.113.1"),
            ("203.0.113.5", "allowlisted: host address 203.0.113.5"),
            ("127.0.0.1", "allowlisted: loopback 127.0.0.0/8"),
            // The IPv6 gateway is link-local, and a scan from the gateway itself is refused.
            ("fe80::1", "allowlisted: gateway fe80::1"),
        ]
        for (source, reason) in cases {
            let scan = PortScan(
                time: referenceTime, source: address(source), destination: address("203.0.113.5"), ports: [80, 81, 82, 83]
            )
            guard case .refused(let refusal) = controller.handle(scan) else {
                Issue.record("\(source) was blocked")
                continue
            }
            #expect(refusal.description == reason)
        }
        #expect(try controller.entries().isEmpty)
        #expect(metrics[.blocksRefused(.allowlisted)] == cases.count)
        #expect(metrics[.blocks(.local)] == 0)
        // A neighbour in the gateway's /64 is blocked as itself, never as the /64 that holds the gateway.
        let neighbour = PortScan(
            time: referenceTime, source: address("fe80::1234"), destination: address("203.0.113.5"), ports: [80, 81, 82, 83]
        )
        guard case .blocked = controller.handle(neighbour) else {
            Issue.record("the neighbour was not blocked")
            return
        }
        #expect(try controller.entries().map(\.prefix) == [prefix("fe80::1234/128")])
    }

}

@Suite struct AllowFileTests {
    /// FuzzAllowlist, `Regressions/FuzzAllowlist/comment-with-combining-mark`: "#" followed by a combining mark is
    /// one Swift Character that is not "#", so the comment was read as a bad line.
    @Test func commentsAndSeparatorsAreBytesNotCharacters() throws {
        let combining = "\u{0610}"
        let good = Array("#\(combining) a comment\n198.51.100.0/24\t#\(combining)\n \(combining)".utf8)
        let error = #expect(throws: ConntrackrError.self) { try AllowFile.parse(good, path: "allow.txt") }
        // The comments are ignored; only the last line (a lone combining mark) is bad.
        #expect(error?.message.hasPrefix("allow.txt:3: ") == true, "\(error?.message ?? "")")
        let prefixes = try AllowFile.parse(Array("#\(combining)x\n198.51.100.0/24 #\(combining)\n".utf8), path: "a")
        #expect(prefixes == [prefix("198.51.100.0/24")])
    }

    @Test func readsAddressesCIDRsCommentsBlankLinesAndCRLF() throws {
        let prefixes = try AllowFile.load(path: fixturePath("allow-good.txt"))
        #expect(
            prefixes == [
                prefix("198.51.100.0/24"),
                prefix("203.0.113.9"),
                prefix("2001:db8:42::/48"),
                prefix("2001:db8::7"),
                // Host bits set in a CIDR mean its network.
                prefix("203.0.113.76/30"),
            ]
        )
        #expect(prefixes[1].length == 32)
        #expect(prefixes[3].length == 128)
    }

    @Test(arguments: [
        ("allow-bad-address.txt", 4, "203.0.113.300", "a word that is not a valid address"),
        ("allow-bad-ipv6-length.txt", 2, "2001:db8:1::/129", "a CIDR whose address or prefix length is not valid"),
        ("allow-two-words.txt", 1, "198.51.100.1", "2 words"),
    ])
    func aBadLineIsAnErrorNamingFileLineAndProblemNotItsText(file: String, line: Int, text: String, problem: String)
        throws
    {
        let path = fixturePath(file)
        let error = try #require(throws: ConntrackrError.self) { try AllowFile.load(path: path) }
        #expect(error.code == .invalidConfiguration)
        #expect(error.message == "\(path):\(line): expected one address or CIDR, found \(problem)")
        #expect(!error.message.contains(text), "the file's text is echoed: \(error.message)")
    }

    @Test("A bad line's content is never echoed", arguments: [
        "root:$6$secret$hash:19000:0:99999:7:::", "secret-token-1234", "198.51.100.1 hunter2", "/etc/shadow",
        String(repeating: "f", count: 100),
    ])
    func contentIsNotEchoed(line: String) throws {
        let error = try #require(throws: ConntrackrError.self) {
            try AllowFile.parse(Array("198.51.100.0/24\n\(line)\n".utf8), path: "allow.txt")
        }
        #expect(error.message.hasPrefix("allow.txt:2: expected one address or CIDR, found "))
        for word in line.split(separator: " ") where word.count > 4 {
            #expect(!error.message.contains(word), "\(error.message)")
        }
    }

    /// A file in a fresh directory, written as `bytes` with `mode`, removed with the directory.
    final class Directory {
        let path: String
        init() {
            var template = Array("/tmp/conntrackr-allow-XXXXXX".utf8CString)
            path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        }
        func file(_ name: String, _ text: String, mode: mode_t = 0o644) -> String {
            let file = path + "/" + name
            _ = FileManager.default.createFile(atPath: file, contents: Data(text.utf8))
            chmod(file, mode)
            return file
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    @Test("An allow file reached through a symbolic link, writable by others, or not a file is refused")
    func unsafeFilesAreRefused() throws {
        let directory = Directory()
        let real = directory.file("real.txt", "198.51.100.0/24\n")
        #expect(try AllowFile.load(path: real) == [prefix("198.51.100.0/24")])

        let link = directory.path + "/link.txt"
        #expect(symlink(real, link) == 0)
        let groupWritable = directory.file("group.txt", "198.51.100.0/24\n", mode: 0o664)
        let worldWritable = directory.file("world.txt", "198.51.100.0/24\n", mode: 0o646)
        let fifo = directory.path + "/fifo.txt"
        #expect(mkfifo(fifo, 0o600) == 0)
        let cases: [(String, String)] = [
            (link, "refused: it is a symbolic link (name the file itself)"),
            (groupWritable, "refused: it is writable by group or others (mode 664; chmod go-w it)"),
            (worldWritable, "refused: it is writable by group or others (mode 646; chmod go-w it)"),
            (directory.path, "refused: it is a directory, not a regular file"),
            (fifo, "refused: it is a FIFO, not a regular file"),
        ]
        for (path, reason) in cases {
            let error = try #require(throws: ConntrackrError.self) { try AllowFile.load(path: path) }
            #expect(error.code == .invalidConfiguration)
            #expect(error.message == "cannot read allow file \(path): \(reason)")
        }
    }

    @Test("An allow file owned by another user is refused", .enabled(if: geteuid() == 0, "chown needs root"))
    func foreignOwnerIsRefused() throws {
        let directory = Directory()
        let file = directory.file("nobody.txt", "198.51.100.0/24\n")
        #expect(chown(file, 65534, 65534) == 0)
        let error = try #require(throws: ConntrackrError.self) { try AllowFile.load(path: file) }
        #expect(error.message == "cannot read allow file \(file): refused: it is owned by uid 65534, not by root (chown root it)")
    }

    @Test(arguments: [
        "fe80::1%eth0",  // zone indexes are not addresses here
        "198.51.100.1\u{0}junk",  // a NUL must not cut the text short before parsing
        "198.51.100.1/",
        "/24",
        "198.51.100.0/+24",
        "198.51.100.0/33",
        "::ffff:zz",
        "2001:db8::/64/64",
        String(repeating: "1", count: 300),
        "\u{1B}[31m198.51.100.1",
    ])
    func rejectsMalformedWords(text: String) {
        #expect(throws: ConntrackrError.self) { try AllowFile.parse(Array("\(text)\n".utf8), path: "x") }
    }

    @Test func errorTextStaysOnOneLineAndShort() throws {
        let junk = "\u{1B}[2J" + String(repeating: "x", count: 500)
        let error = try #require(throws: ConntrackrError.self) { try AllowFile.parse(Array(junk.utf8), path: "f") }
        #expect(!error.message.contains("\u{1B}"))
        #expect(error.message.count < 120)
    }

    @Test func emptyAndCommentOnlyFilesAllowNothing() throws {
        #expect(try AllowFile.parse([], path: "x").isEmpty)
        #expect(try AllowFile.parse(Array("# nothing\n\n   \n\t# still nothing".utf8), path: "x").isEmpty)
    }

    @Test func binaryJunkIsAnErrorNotACrash() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let bytes = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Either an error or prefixes; never a trap.
            _ = try? AllowFile.parse(bytes, path: "junk")
        }
    }

    @Test func aMissingFileIsAnErrorNamingIt() {
        #expect {
            try AllowFile.load(path: "/nonexistent/conntrackr-allow")
        } throws: { error in
            (error as? ConntrackrError)?.message
                == "cannot read allow file /nonexistent/conntrackr-allow: No such file or directory"
        }
    }
}

@Suite struct DefaultRouteTests {
    @Test func ipv4DefaultRoutesWithAGatewayAndUp() throws {
        let routes = DefaultRoutes.ipv4(routeTable: try fixtureBytes("route"))
        #expect(DefaultRoutes.gateways(routes) == [address("203.0.113.1"), address("198.51.100.1")])
        // eth2's route is down; wg0's has no gateway but still carries traffic.
        #expect(routes.map(\.interface) == ["eth0", "wg0", "eth1", "eth0.100"])
        #expect(routes.map(\.metric) == [100, 50, 200, 400])
    }

    @Test func ipv6DefaultRoutesSkipRejectAndUnreachable() throws {
        let routes = DefaultRoutes.ipv6(routeTable: try fixtureBytes("ipv6_route"))
        #expect(DefaultRoutes.gateways(routes) == [address("fe80::1"), address("2001:db8:0:2::1")])
        #expect(routes.map(\.interface) == ["eth0", "eth1", "eth2"])
    }

    @Test func aMetricPrintedSignedStillParses() {
        // Kernels that print the metric with %d show 4294967295 as -1.
        let table = Array("""
            Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
            eth0\t00000000\t017100CB\t0003\t0\t0\t-1\t00000000\t0\t0\t0
            eth1\t00000000\t016433C6\t0003\t0\t0\t100\t00000000\t0\t0\t0
            """.utf8)
        let routes = DefaultRoutes.ipv4(routeTable: table)
        #expect(routes.map(\.metric) == [UInt32.max, 100])
        #expect(DefaultRoutes.gateways(routes) == [address("203.0.113.1"), address("198.51.100.1")])
        #expect(DefaultRoutes.preferredInterface(routes) == "eth1")
    }

    @Test func theDefaultInterfaceHasTheLowestMetricIPv4First() throws {
        let ipv4 = DefaultRoutes.ipv4(routeTable: try fixtureBytes("route"))
        let ipv6 = DefaultRoutes.ipv6(routeTable: try fixtureBytes("ipv6_route"))
        #expect(DefaultRoutes.preferredInterface(ipv6 + ipv4) == "wg0")
        #expect(DefaultRoutes.preferredInterface(ipv6) == "eth0")  // eth0 and eth1 tie at 1024: the first listed
        #expect(DefaultRoutes.preferredInterface([]) == nil)
    }

    @Test func missingTablesMeanNoRoutes() throws {
        #expect(
            try DefaultRoutes.read(ipv4RouteTable: "/nonexistent/route", ipv6RouteTable: "/nonexistent/ipv6").isEmpty
        )
    }

    @Test func anUnreadableTableIsAnError() {
        // A directory cannot be read as a file.
        #expect(throws: ConntrackrError.self) {
            try DefaultRoutes.read(ipv4RouteTable: fixturePath(""), ipv6RouteTable: "/nonexistent")
        }
    }

    @Test func junkNeverCrashes() {
        for _ in 0..<200 {
            let bytes = (0..<200).map { _ in UInt8.random(in: 0...255) }
            _ = DefaultRoutes.ipv4(routeTable: bytes)
            _ = DefaultRoutes.ipv6(routeTable: bytes)
        }
    }

    /// The parser agrees with iproute2 about this machine's own default routes (main table).
    @Test func agreesWithIPRouteOnThisHost() throws {
        let ours = try DefaultRoutes.read()
        let theirs = try ipRouteDefaults("-4") + ipRouteDefaults("-6")
        #expect(Set(DefaultRoutes.gateways(ours)) == Set(theirs.compactMap { ($0["gateway"] as? String).flatMap(IPAddress.init) }))
        #expect(Set(ours.map(\.interface)) == Set(theirs.compactMap { $0["dev"] as? String }))
    }

    private func ipRouteDefaults(_ family: String) throws -> [[String: Any]] {
        let output = try shell(["ip", "-j", family, "route", "show", "default", "table", "main"])
        return try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] ?? []
    }
}

@Suite struct HostAllowlistTests {
    let fixtures = HostAllowlist(
        allowed: [prefix("198.51.100.128/25"), prefix("2001:db8:77::/48")],
        allowFiles: [fixturePath("allow-good.txt")],
        ipv4RouteTable: fixturePath("route"),
        ipv6RouteTable: fixturePath("ipv6_route")
    )

    @Test func everySourceWithItsReason() throws {
        let allowlist = try fixtures.build(
            hostAddresses: [address("127.0.0.1"), address("::1"), address("203.0.113.5"), address("fe80::5")]
        )
        #expect(allowlist.reason(for: address("127.0.0.1"))?.rawValue == "loopback")
        #expect(allowlist.reason(for: address("::1"))?.rawValue == "loopback")
        #expect(allowlist.reason(for: address("203.0.113.5"))?.rawValue == "host address")
        #expect(allowlist.reason(for: address("fe80::5"))?.rawValue == "host address")
        #expect(allowlist.reason(for: address("203.0.113.1"))?.rawValue == "gateway")
        #expect(allowlist.reason(for: address("198.51.100.1"))?.rawValue == "gateway")
        #expect(allowlist.reason(for: address("fe80::1"))?.rawValue == "gateway")
        #expect(allowlist.reason(for: address("2001:db8:0:2::1"))?.rawValue == "gateway")
        #expect(allowlist.reason(for: address("198.51.100.200"))?.rawValue == "configured")
        #expect(allowlist.reason(for: address("2001:db8:77:1::1"))?.rawValue == "configured")
        #expect(allowlist.reason(for: address("2001:db8:42::99"))?.rawValue == "configured")
        #expect(allowlist.reason(for: address("203.0.113.9"))?.rawValue == "configured")
        // Not listed: another host on the gateway's network, another IPv6 host.
        #expect(allowlist.reason(for: address("203.0.113.6"))?.rawValue == nil)
        #expect(allowlist.reason(for: address("2001:db8:0:2::2"))?.rawValue == nil)
        // Loopback from the interfaces is not listed twice.
        #expect(allowlist.entries.filter { $0.prefix == prefix("127.0.0.1") }.isEmpty)
    }

    @Test func aBadAllowFileFailsTheBuild() {
        var broken = fixtures
        broken.allowFiles.append(fixturePath("allow-bad-address.txt"))
        #expect(throws: ConntrackrError.self) { try broken.build(hostAddresses: []) }
    }

    @Test func thisHostsOwnAddressesAreAllowed() throws {
        let allowlist = try HostAllowlist().build()
        for text in try interfaceAddresses() {
            let reason = allowlist.reason(for: address(text))?.rawValue
            #expect(reason == "host address" || reason == "loopback", "\(text)")
        }
    }

    /// getifaddrs agrees with iproute2 about the addresses of this namespace's loopback and default-route
    /// interfaces (the ones other helpers' labs never touch).
    @Test func hostAddressesMatchIPAddr() throws {
        let ours = Set(try HostAddresses.current())
        for text in try interfaceAddresses() {
            #expect(ours.contains(address(text)), "\(text) missing from getifaddrs")
        }
    }

    private func interfaceAddresses() throws -> [String] {
        let defaultRoute = try shell(["ip", "-j", "route", "show", "default"])
        let routes = try JSONSerialization.jsonObject(with: Data(defaultRoute.utf8)) as? [[String: Any]] ?? []
        let devices = Set(["lo"] + routes.compactMap { $0["dev"] as? String })
        var addresses: [String] = []
        for device in devices {
            let output = try shell(["ip", "-j", "address", "show", "dev", device])
            let interfaces = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] ?? []
            for interface in interfaces {
                for info in interface["addr_info"] as? [[String: Any]] ?? [] {
                    if let local = info["local"] as? String { addresses.append(local) }
                }
            }
        }
        #expect(addresses.contains("127.0.0.1"))
        return addresses
    }
}

/// Issue 13: the fleet never blocks its own infrastructure, nor what the fleet allowlist names.
@Suite struct FleetAllowlistTests {
    @Test func etcdsAddressesAndTheFleetAllowlistAreNeverBlockedNorLearned() throws {
        let allowlist = try HostAllowlist(
            fleetInfrastructure: [address("198.51.100.2"), address("2001:db8::2"), address("127.0.0.1")],
            fleetAllowed: [prefix("198.51.100.128/25")],
            ipv4RouteTable: fixturePath("route"),
            ipv6RouteTable: fixturePath("ipv6_route")
        ).build(hostAddresses: [])
        let controller = BlockController(
            blocker: InMemoryBlocker(), policy: BlockPolicy(), allowlist: allowlist, metrics: RecordingMetricsSink()
        )
        let cases = [
            ("198.51.100.2/32", "allowlisted: fleet infrastructure 198.51.100.2"),
            ("2001:db8::/64", "allowlisted: fleet infrastructure 2001:db8::2"),
            ("198.51.100.200/32", "allowlisted: fleet allow 198.51.100.128/25"),
            ("127.0.0.1/32", "allowlisted: loopback 127.0.0.0/8"),  // loopback keeps its own reason
        ]
        for (blocked, reason) in cases {
            let entry = BlockEntry(
                prefix: prefix(blocked), reason: .portScan, origin: .fleet, since: referenceTime, expires: nil
            )
            guard case .refused(let refusal) = controller.applyLearned(entry, at: referenceTime) else {
                Issue.record("\(blocked) was blocked")
                continue
            }
            #expect(refusal.description == reason)
        }
    }
}
