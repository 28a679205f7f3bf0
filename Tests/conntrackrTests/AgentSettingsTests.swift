import ArgumentParser
import ConnBlock
import ConnCore
import ConnFleet
import ConnMetrics
import ConnTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import conntrackr

@Suite("Agent settings")
struct AgentSettingsTests {
    func resolve(_ arguments: [String], config: String? = nil) throws -> AgentSettings {
        let file = config.map { TemporaryFile(Array($0.utf8), suffix: ".yaml") }
        let all = arguments + (file.map { ["--config", $0.path] } ?? [])
        return try withExtendedLifetime(file) { try RunOptions.parse(all).resolve() }
    }

    @Test("Defaults are safe: detect only, metrics on loopback")
    func defaults() throws {
        let settings = try resolve([])
        #expect(settings.block == .none)
        #expect(settings.metricsAddress.description == "127.0.0.1:9542")
        #expect(settings.scanPorts == 3)
        #expect(settings.scanWindow == 60)
        #expect(settings.blockPolicy.ttl == .seconds(3600))
    }

    @Test("The configuration file sets everything, and flags win over it")
    func configThenFlags() throws {
        let config = """
            interface: eth9
            source: xdp
            block: xdp
            block-ttl: 0
            scan-ports: 10
            scan-window: 30
            allow: [198.51.100.0/24, "2001:db8::/32"]
            metrics-address: none
            format: json
            flush-on-exit: true
            """
        let fromFile = try resolve([], config: config)
        #expect(fromFile.interface == "eth9")
        #expect(fromFile.source == .xdp)
        #expect(fromFile.blockPolicy.ttl == nil)
        #expect(fromFile.scanPorts == 10)
        #expect(fromFile.allow == ["198.51.100.0/24", "2001:db8::/32"])
        #expect(fromFile.format == .json)
        #expect(fromFile.flushOnExit)
        let overridden = try resolve(["--scan-ports", "5", "--no-flush-on-exit", "--format", "text"], config: config)
        #expect(overridden.scanPorts == 5)
        #expect(!overridden.flushOnExit)
        #expect(overridden.format == .text)
        #expect(overridden.scanWindow == 30)
    }

    @Test("Bad settings fail with one line naming the file and key", arguments: [
        ("scan-ports: many", "scan-ports must be a whole number"),
        ("colour: blue", "unknown setting colour"),
        ("block: maybe", "block must be one of none, xdp, nftables"),
        ("allow: [not-a-cidr]", "allow: not-a-cidr is not an address or CIDR prefix"),
        ("scan-ports: 0", "scan-ports must be between 1 and 1024"),
        ("max-tracked-pairs: 1000000000", "max-tracked-pairs and max-tracked-connections must be between 1 and 100000000"),
        ("- just\n- a list", "must be a mapping"),
        ("key: [unclosed", "is not valid YAML"),
    ])
    func badSettings(config: String, message: String) {
        let error = #expect(throws: ConntrackrError.self) { try resolve([], config: config) }
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("\n") == false)
    }

    @Test("A missing configuration file is named")
    func missingFile() {
        let error = #expect(throws: ConntrackrError.self) {
            try RunOptions.parse(["--config", "/nonexistent/conntrackr.yaml"]).resolve()
        }
        #expect(error?.message == "cannot read configuration file /nonexistent/conntrackr.yaml: No such file or directory")
    }
}

@Suite("Fleet settings")
struct FleetSettingsTests {
    let settings = AgentSettingsTests()

    @Test("Every fleet flag has a key in the file, and each flag wins over its key")
    func fileThenFlags() throws {
        let config = """
            fleet-etcd: [https://203.0.113.10:2379, "https://203.0.113.11:2379"]
            fleet-prefix: /lab/blocks/
            fleet-ca: /etc/conntrackr/etcd-ca.pem
            fleet-cert: /etc/conntrackr/client.pem
            fleet-key: /etc/conntrackr/client-key.pem
            fleet-user: agent
            fleet-password: from-file
            fleet-host-name: edge-1
            """
        let fromFile = try #require(try settings.resolve([], config: config).fleet)
        #expect(fromFile.etcd.endpoints == ["https://203.0.113.10:2379", "https://203.0.113.11:2379"])
        #expect(fromFile.keyPrefix == "/lab/blocks/")
        #expect(fromFile.etcd.tls?.caFile == "/etc/conntrackr/etcd-ca.pem")
        #expect(fromFile.etcd.tls?.certificateFile == "/etc/conntrackr/client.pem")
        #expect(fromFile.etcd.tls?.keyFile == "/etc/conntrackr/client-key.pem")
        #expect(fromFile.etcd.credentials?.user == "agent")
        #expect(fromFile.etcd.credentials?.password == "from-file")
        #expect(fromFile.hostName == "edge-1")

        let overridden = try #require(
            try settings.resolve(
                ["--fleet-etcd", "http://198.51.100.9:2379", "--fleet-user", "other", "--fleet-password", "from-flag",
                 "--fleet-host-name", "edge-2", "--fleet-allow-insecure"],
                config: config
            ).fleet
        )
        #expect(overridden.etcd.endpoints == ["http://198.51.100.9:2379"])
        #expect(overridden.etcd.credentials == .init(user: "other", password: "from-flag"))
        #expect(overridden.hostName == "edge-2")
        #expect(overridden.keyPrefix == "/lab/blocks/")  // not overridden: still the file's
        #expect(overridden.etcd.tls?.keyFile == "/etc/conntrackr/client-key.pem")
    }

    @Test("Without an endpoint fleet mode is off")
    func off() throws {
        #expect(try settings.resolve([]).fleet == nil)
    }

    @Test("Settings that do not fit together fail with one line, wherever they come from", arguments: [
        ([], "fleet-user: agent\n", "fleet-user needs fleet-etcd"),
        (["--fleet-ca", "/ca.pem"], "", "fleet-ca needs fleet-etcd"),
        (["--fleet-etcd", "http://203.0.113.10:2379"], "fleet-cert: /c.pem\n", "fleet-cert and fleet-key go together"),
        (["--fleet-key", "/k.pem"], "fleet-etcd: http://203.0.113.10:2379\n", "fleet-cert and fleet-key go together"),
        (["--fleet-etcd", "http://203.0.113.10:2379"], "fleet-password: secret\n", "fleet-password needs fleet-user"),
        (["--fleet-etcd", "http://203.0.113.10:2379", "--fleet-user", "agent"], "", "fleet-user needs fleet-password"),
        (["--fleet-etcd", "http://203.0.113.10:2379"], "fleet-prefix: blocks\n", "fleet-prefix must start with /"),
        (["--fleet-etcd", "http://203.0.113.10:2379"], "fleet-host-name: \"\"\n", "fleet-host-name \"\" must be"),
        (["--fleet-etcd", "http://203.0.113.10:2379"], "fleet-host-name: a/b\n", "fleet-host-name \"a/b\" must be"),
        (
            ["--fleet-etcd", "http://203.0.113.10:2379", "--fleet-user", "agent", "--fleet-password", "p"], "",
            "fleet-user would send its password in clear"
        ),
        ([], "fleet-min-reporters: 2\n", "fleet-min-reporters needs fleet-etcd"),
        (["--fleet-etcd", "http://203.0.113.10:2379", "--fleet-min-reporters", "0"], "", "fleet-min-reporters must be"),
        (["--fleet-allow", "not-a-prefix"], "", "fleet-allow: not-a-prefix is not"),
    ] as [([String], String, String)])
    func mismatched(arguments: [String], config: String, message: String) {
        // The password may also come from the environment. (Not unset here: setenv and unsetenv race with getenv
        // in tests running in parallel.)
        if message.contains("needs fleet-password"), getenv("CONNTRACKR_FLEET_PASSWORD") != nil { return }
        let error = #expect(throws: ConntrackrError.self) { try settings.resolve(arguments, config: config) }
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("\n") == false)
    }

    @Test("Fleet trust settings make the trust, the learned blocks' budget and the fleet allowlist")
    func trust() throws {
        let resolved = try settings.resolve(
            [
                "--fleet-etcd", "http://203.0.113.10:2379", "--fleet-min-reporters", "2", "--fleet-widest-ipv4", "24",
                "--fleet-allow-permanent", "--fleet-allow", "198.51.100.0/25", "--fleet-allow", "2001:db8::53",
                "--fleet-max-blocked", "100", "--fleet-max-blocks-per-minute", "7", "--block-ttl", "90",
                "--ipv6-block-prefix", "56",
            ]
        )
        let fleet = try #require(resolved.fleet)
        #expect(fleet.trust.minReporters == 2)
        #expect(fleet.trust.widestIPv4 == 24)
        #expect(fleet.trust.widestIPv6 == 56)
        #expect(fleet.trust.allowPermanent)
        #expect(fleet.trust.maxLifetime == .seconds(90))
        #expect(resolved.blockPolicy.maxFleetBlocked == 100)
        #expect(resolved.blockPolicy.maxFleetBlocksPerMinute == 7)
        #expect(resolved.fleetSettings.allowedPrefixes == [IPPrefix("198.51.100.0/25")!, IPPrefix("2001:db8::53")!])
        // Every agent allowlists etcd's address and the fleet allowlist.
        let allowlist = try HostAllowlist(settings: resolved).build(hostAddresses: [])
        #expect(allowlist.reason(for: IPAddress("203.0.113.10")!) == .fleetInfrastructure)
        #expect(allowlist.reason(for: IPAddress("198.51.100.9")!) == .fleetAllowed)
        #expect(allowlist.reason(for: IPAddress("198.51.100.200")!) == nil)
    }
}

@Suite("Busy-host settings: ignore-ports and events")
struct BusyHostSettingsTests {
    let settings = AgentSettingsTests()

    @Test("By default no port is ignored and every kind of event is written")
    func defaults() throws {
        let resolved = try settings.resolve([])
        #expect(resolved.pipelineConfiguration.scanRule.ignoredPorts.isEmpty)
        #expect(resolved.events == Set(ConnEvent.Kind.allCases))
    }

    @Test("The file takes numbers, strings and ranges; flags (repeated or with commas) replace the file's list")
    func fileThenFlags() throws {
        let config = """
            ignore-ports: [25, 465, "587", 993, 995, 8000-8100]
            events: [port_scan, blocked, unblocked, not_blocked]
            """
        let fromFile = try settings.resolve([], config: config)
        #expect(fromFile.pipelineConfiguration.scanRule.ignoredPorts.description == "25,465,587,993,995,8000-8100")
        #expect(fromFile.events == [.portScan, .blocked, .unblocked, .notBlocked])
        let overridden = try settings.resolve(
            ["--ignore-ports", "22", "--ignore-ports", "80,443", "--events", "port_scan,new_connection"], config: config
        )
        #expect(overridden.pipelineConfiguration.scanRule.ignoredPorts.description == "22,80,443")
        #expect(overridden.events == [.portScan, .newConnection])
    }

    @Test("Bad values fail with one line naming the setting and the item", arguments: [
        ("ignore-ports: [25, 70000]", #"ignore-ports: "70000" is not a port"#),
        ("ignore-ports: [9000-8000]", #"ignore-ports: "9000-8000" is not a port"#),
        ("ignore-ports: {smtp: 25}", "ignore-ports must be a list"),
        ("events: [port_scan, scans]", #"events: "scans" is not one of new_connection, port_scan"#),
    ])
    func badValues(config: String, message: String) {
        let error = #expect(throws: ConntrackrError.self) { try settings.resolve([], config: config) }
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("\n") == false)
    }

    @Test("replay takes both settings, and the help shows them")
    func replayAndHelp() throws {
        let (resolved, positional) = try AgentSettings.resolve(
            arguments: ["capture.pcap", "--ignore-ports", "25", "--events", "port_scan"], configurationFile: nil,
            table: AgentSettings.detection
        )
        #expect(positional == ["capture.pcap"])
        #expect(resolved.pipelineConfiguration.scanRule.ignoredPorts.contains(25))
        #expect(resolved.events == [.portScan])
        let help = ReplayCommand.helpMessage(columns: 200)
        #expect(help.contains("--ignore-ports <port|low-high> ..."))
        #expect(help.contains("new_connection,port_scan,blocked,unblocked,not_blocked)"), "the default: every kind")
    }
}

@Suite("Start-up failures name the fix")
struct StartUpFixTests {
    func message(_ fix: (() throws -> Void) throws -> Void, _ error: ConntrackrError) -> String {
        do {
            try fix { throw error }
        } catch let thrown as ConntrackrError {
            return thrown.message
        } catch {
            return "not a ConntrackrError: \(error)"
        }
        return "nothing thrown"
    }

    @Test("A failure of a kind with a known fix gets it; one naming its fix already is left alone", arguments: [
        (ConntrackrError(.noSuchInterface, "no such interface: eth9"), "no such interface: eth9: pick one of `ip -br link` with --interface"),
        (ConntrackrError(.bpfFailed, "cannot attach XDP to eth0 in native mode: Invalid argument"), "cannot attach XDP to eth0 in native mode: Invalid argument: try --xdp-mode generic, or use --source pcap with --block nftables where XDP cannot run"),
        (ConntrackrError(.bpfFailed, "cannot load the XDP program: Invalid argument"), "cannot load the XDP program: Invalid argument: CONNTRACKR_LIBBPF_DEBUG=1 shows libbpf's log; or use --source pcap with --block nftables where XDP cannot run"),
        (ConntrackrError(.alreadyRunning, "the XDP program is already attached"), "the XDP program is already attached: stop the other agent, or detach it with `ip link set dev eth0 xdp off`"),
        (ConntrackrError(.missingPrivilege, "attaching XDP to eth0 needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (run as root)"), "attaching XDP to eth0 needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (run as root)"),
        (ConntrackrError(.bpfFailed, "the maps pinned under /p belong to another conntrackr version (remove that directory to start afresh, which drops its blocks): x"), "the maps pinned under /p belong to another conntrackr version (remove that directory to start afresh, which drops its blocks): x"),
    ])
    func xdp(error: ConntrackrError, expected: String) {
        #expect(message({ try StartUpFix.xdp(interface: "eth0", $0) }, error) == expected)
    }

    @Test("pcap and nftables failures get theirs")
    func pcapAndNftables() {
        #expect(
            message({ try StartUpFix.pcap(interface: "eth0", $0) }, ConntrackrError(.captureFailed, "cannot capture on eth0: That device is not up"))
                == "cannot capture on eth0: That device is not up: check `ip link show eth0` (it must exist and be up), or pick one of `ip -br link` with --interface"
        )
        #expect(
            message({ try StartUpFix.nftables($0) }, ConntrackrError(.blockerFailed, "nftables: creating the table failed: Error: Could not process rule: No such file or directory"))
                .hasSuffix(": check that `nft list ruleset` works on this host, or use --block xdp")
        )
        let missing = "nftables blocker: cannot run nft: not found in /usr/sbin (install the nftables package)"
        #expect(message({ try StartUpFix.nftables($0) }, ConntrackrError(.blockerFailed, missing)) == missing)
    }
}

@Suite("Replay settings")
struct ReplaySettingsTests {
    @Test("--events none writes no event; --summary belongs to replay only")
    func eventsNoneAndSummary() throws {
        let (replay, files) = try AgentSettings.resolve(
            arguments: ["a.pcap", "--events", "none", "--summary", "b.pcap.gz"], configurationFile: nil,
            table: AgentSettings.detection
        )
        #expect(replay.events.isEmpty)
        #expect(replay.summary)
        #expect(files == ["a.pcap", "b.pcap.gz"])
        #expect(throws: (any Error).self) {
            try AgentSettings.resolve(arguments: ["--summary"], configurationFile: nil, table: AgentSettings.all)
        }
        #expect(throws: (any Error).self) {
            try AgentSettings.resolve(arguments: ["--events", "nonsense"], configurationFile: nil, table: AgentSettings.detection)
        }
    }
}
