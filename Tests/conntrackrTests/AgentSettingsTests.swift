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
