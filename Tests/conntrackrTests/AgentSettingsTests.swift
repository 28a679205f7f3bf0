import ArgumentParser
import ConnCore
import ConnTesting
import Testing

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
        #expect(settings.metricsAddress == "127.0.0.1:9542")
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
