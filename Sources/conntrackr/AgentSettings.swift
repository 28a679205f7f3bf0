import ConnCore
import ConnFleet
import ConnLogging
import ConnMetrics
import ConnSettings
import ConnXDP
import ArgumentParser
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Everything `conntrackr run` can be told: defaults (the library types' own), then a configuration file, then
/// the environment, then flags. Each setting is declared once, in ``all``.
struct AgentSettings: SettingsRoot {
    enum SourceKind: String, CaseIterable, Sendable { case pcap, xdp }
    enum BlockKind: String, CaseIterable, Sendable { case none, xdp, nftables }

    var interface: String?
    var source = SourceKind.pcap
    var xdpMode = XDPProgram.AttachMode.auto
    var pinDirectory = XDPProgram.defaultPinRoot
    var block = BlockKind.none
    /// Seconds a block lasts; 0 blocks until removed by hand.
    var blockTTL = BlockPolicy().ttl.map { Double($0.nanosecondsClamped) / 1e9 } ?? 0
    var ipv6BlockPrefix = BlockPolicy().ipv6PrefixLength
    var maxBlocked = BlockPolicy().maxBlocked
    var maxBlocksPerMinute = BlockPolicy().maxBlocksPerMinute
    var fleetMaxBlocked = BlockPolicy().maxFleetBlocked
    var fleetMaxBlocksPerMinute = BlockPolicy().maxFleetBlocksPerMinute
    var allow: [String] = []
    var allowFile: String?
    var flushOnExit = false
    var kernelEnforcement = true
    var metricsAddress = MetricsAddress.default
    var format = OutputFormat.text
    var logLevel = Logger.Level.info
    var logFormat = LogFormat.text
    var scanPorts = ScanRule().portThreshold
    var scanWindow = Double(ScanRule().window.nanosecondsClamped) / 1e9
    var maxTrackedPairs = ScanRule().maxTrackedPairs
    var ignorePorts = ScanRule().ignoredPorts
    var destinationUnit = ScanRule().destinationUnit
    /// The kinds of event written; every kind by default, none with `--events none`.
    var events = Set(ConnEvent.Kind.allCases)
    /// `replay`: a table of scanners and totals after the events.
    var summary = false
    var maxTrackedConnections = ConnectionPipeline.Configuration().maxTrackedConnections
    var allDestinations = false
    var fleetSettings = FleetSettings()
    /// Fleet mode, when endpoints are given (by flag or file); made from ``fleetSettings`` by ``resolve``.
    var fleet: FleetConfiguration?

    /// The most tracked pairs or connections: the tables are reserved up front (committed as used), so an absurd
    /// cap must fail at start, not in the kernel's out-of-memory killer later: 100 million pairs is 16 GB.
    static let maxTrackedLimit = 100_000_000

    /// Every setting, each declared once; ``all`` (run) and ``detection`` (replay) are subsets.
    static let declared = SettingsTable<AgentSettings>([
        .text("interface", \.interface, placeholder: "name", help: "The interface to watch (default: the one holding the default route; `any` for all, pcap only)."),
        .choice("source", \.source, help: "Where attempts are captured: pcap (libpcap, portable) or xdp (XDP program, fast)."),
        .choice("xdp-mode", \.xdpMode, help: "How the XDP program attaches: auto (native, else generic), native or generic."),
        .value("pin-dir", \.pinDirectory, placeholder: "dir", help: "The bpffs directory of conntrackr's pinned maps.", parse: { (input: SettingInput) throws(SettingProblem) in try Parse.text(input) }),
        .choice("block", \.block, help: "How scanners are blocked: none (detect only), xdp or nftables."),
        .seconds("block-ttl", \.blockTTL, help: "Seconds a block lasts; 0 blocks until removed.", valid: { $0 >= 0 }, invalid: "block-ttl must be 0 (permanent) or more seconds"),
        .integer("ipv6-block-prefix", \.ipv6BlockPrefix, help: "IPv6 sources are counted and blocked as this prefix of their address (as themselves inside a prefix that holds one of this host's addresses).", range: 1...128, outOfRange: "ipv6-block-prefix must be 1 to 128"),
        .integer("max-blocked", \.maxBlocked, help: "The most blocked prefixes; further blocks are refused and counted.", range: 1...Int.max, outOfRange: "max-blocked and max-blocks-per-minute must be positive"),
        .integer("max-blocks-per-minute", \.maxBlocksPerMinute, help: "The most new blocks in any minute (protects against forged scans).", range: 1...Int.max, outOfRange: "max-blocked and max-blocks-per-minute must be positive"),
        .list("allow", \.allow, placeholder: "cidr", help: "An address or CIDR prefix never to block; loopback, this host and its gateways always are.", check: { list in
            list.first { IPPrefix($0) == nil }.map { "allow: \($0) is not an address or CIDR prefix" }
        }),
        .text("allow-file", \.allowFile, placeholder: "file", help: "A file of addresses or CIDR prefixes never to block, one per line, # comments."),
        .toggle("flush-on-exit", \.flushOnExit, help: "Remove every pinned block when the agent exits."),
        .toggle("kernel-enforcement", \.kernelEnforcement, help: "With --source xdp --block xdp, the XDP program applies the scan rule itself and blocks at the SYN that crosses it (scan-ports up to \(KernelEnforcement.maxPortThreshold); above, detection stays in user space). With --block nftables, the table drops a pair's SYNs to new ports beyond the threshold's worth in a window until the block lands."),
        .value("metrics-address", \.metricsAddress, placeholder: "host:port", help: "Where Prometheus metrics are served: HOST:PORT, [V6]:PORT or none.", parse: { (input: SettingInput) throws(SettingProblem) in
            do { return try MetricsAddress(parsing: try Parse.text(input)) } catch let error as ConntrackrError { throw .message(error.message) } catch { throw .expected("HOST:PORT") }
        }),
        .choice("format", \.format, help: "Output format of events: text or json."),
        .choice("log-level", \.logLevel, help: "Log level on standard error: trace, debug, info, notice, warning, error, critical."),
        .choice("log-format", \.logFormat, help: "Log format on standard error: text or json."),
        .integer("scan-ports", \.scanPorts, help: "A scan is more than this many distinct ports of one destination.", range: 1...ScanRule.maxPortThreshold, outOfRange: "scan-ports must be between 1 and \(ScanRule.maxPortThreshold)"),
        .seconds("scan-window", \.scanWindow, help: "The window, in seconds, in which those ports must be reached.", valid: { $0 > 0 && $0 <= 86_400 }, invalid: "scan-window must be in (0, 86400] seconds"),
        .choice("destination-unit", \.destinationUnit, help: "What a scan's ports are counted per: each destination address (address), or all of this host's addresses as one (host; not with --all-destinations; in a replay, every destination in the capture)."),
        .integer("max-tracked-pairs", \.maxTrackedPairs, help: "The most (source, destination) pairs tracked at once; the least recently active are evicted.", range: 1...maxTrackedLimit, outOfRange: trackedOutOfRange),
        .integer("max-tracked-connections", \.maxTrackedConnections, help: "The most 4-tuples remembered to tell retransmissions from new connections.", range: 1...maxTrackedLimit, outOfRange: trackedOutOfRange),
        .items("ignore-ports", \.ignorePorts, placeholder: "port|low-high", help: "Destination ports that never count toward a scan (their SYNs are still new connections), e.g. 25,465,587,993,995 or 8000-8100.", parse: { (items: [String]) throws(SettingProblem) in
            do throws(ConntrackrError) { return try PortSet(parsing: items) } catch { throw .message("ignore-ports: \(error.message)") }
        }, describe: { $0.isEmpty ? nil : $0.description }),
        .items("events", \.events, placeholder: "kind", help: "The kinds of event written: \(ConnEvent.Kind.allCases.map(\.rawValue).joined(separator: ", ")), or none; metrics count every kind.", parse: { (items: [String]) throws(SettingProblem) in
            var kinds = Set<ConnEvent.Kind>()
            for item in items where item != "none" {
                guard let kind = ConnEvent.Kind(rawValue: item) else {
                    throw .message("events: \(item.debugDescription) is not one of \(ConnEvent.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                kinds.insert(kind)
            }
            return kinds
        }, describe: { kinds in kinds.isEmpty ? "none" : ConnEvent.Kind.allCases.filter { kinds.contains($0) }.map(\.rawValue).joined(separator: ",") }),
        .toggle("summary", \.summary, help: "replay: after the events, a table of scanners (ports, first and last seen, SYNs, when the rule would have blocked) and totals; in JSON one object {\"kind\":\"summary\",...}. With --events none, only the summary."),
        .toggle("all-destinations", \.allDestinations, help: "Report attempts to any destination, not only to this host's addresses."),
        .list("fleet-etcd", \.fleetSettings.endpoints, placeholder: "url[,url...]", help: "Share blocks through etcd at these endpoints (http://HOST:2379 or https://...).", splitCommas: true),
        .value("fleet-prefix", \.fleetSettings.keyPrefix, placeholder: "prefix", help: "The etcd key prefix blocks are shared under.", parse: { (input: SettingInput) throws(SettingProblem) in try Parse.text(input) }),
        .text("fleet-ca", \.fleetSettings.caFile, placeholder: "file", help: "PEM file of the CA that signed etcd's certificate (https:// endpoints)."),
        .text("fleet-cert", \.fleetSettings.certificateFile, placeholder: "file", help: "PEM client certificate, for etcd's --client-cert-auth (with --fleet-key)."),
        .text("fleet-key", \.fleetSettings.keyFile, placeholder: "file", help: "PEM private key of --fleet-cert."),
        .text("fleet-user", \.fleetSettings.user, placeholder: "name", help: "etcd user, when etcd has authentication enabled."),
        .text("fleet-password", \.fleetSettings.password, placeholder: "password", help: "Password of --fleet-user.", environment: "CONNTRACKR_FLEET_PASSWORD"),
        .text("fleet-host-name", \.fleetSettings.hostName, placeholder: "name", help: "This agent's name in the blocks it publishes (default: the host name); its etcd keys are under PREFIX/NAME/."),
        .toggle("fleet-allow-insecure", \.fleetSettings.allowInsecure, help: "Allow fleet-user over http:// endpoints, sending the password in clear (a lab only)."),
        .integer("fleet-min-reporters", \.fleetSettings.minReporters, help: "Apply a learned block only once this many distinct hosts reported the source within its TTL.", range: 1...1000, outOfRange: "fleet-min-reporters must be 1 to 1000"),
        .integer("fleet-widest-ipv4", \.fleetSettings.widestIPv4, help: "The widest IPv4 prefix applied from the fleet (32: single addresses only).", range: 1...32, outOfRange: "fleet-widest-ipv4 must be 1 to 32"),
        .integer("fleet-widest-ipv6", \.fleetSettings.widestIPv6, help: "The widest IPv6 prefix applied from the fleet; 0 means ipv6-block-prefix.", range: 0...128, outOfRange: "fleet-widest-ipv6 must be 0 (ipv6-block-prefix) to 128"),
        .toggle("fleet-allow-permanent", \.fleetSettings.allowPermanent, help: "Keep fleet records without expiry permanent (else they last block-ttl)."),
        .list("fleet-allow", \.fleetSettings.allow, placeholder: "cidr", help: "An address or CIDR prefix no agent of the fleet blocks (monitoring, DNS, bastions, load balancers); etcd's own addresses always are.", check: { list in
            list.first { IPPrefix($0) == nil }.map { "fleet-allow: \($0) is not an address or CIDR prefix" }
        }),
        .integer("fleet-max-blocked", \.fleetMaxBlocked, help: "The most blocks learned from the fleet at once (within max-blocked).", range: 1...Int.max, outOfRange: "fleet-max-blocked must be positive"),
        .integer("fleet-max-blocks-per-minute", \.fleetMaxBlocksPerMinute, help: "The most new blocks learned from the fleet in any minute (a budget apart from max-blocks-per-minute).", range: 1...Int.max, outOfRange: "fleet-max-blocks-per-minute must be positive"),
    ])

    /// Settings that only `replay` takes.
    static let replayOnly: Set<String> = ["summary"]

    /// Every setting of `run`.
    static let all = declared.only(Set(declared.settings.map(\.name)).subtracting(replayOnly))

    private static let trackedOutOfRange =
        "max-tracked-pairs and max-tracked-connections must be between 1 and \(maxTrackedLimit)"

    /// The settings `replay` takes: the output and the scan rule.
    static let detection = declared.only(
        [
            "format", "scan-ports", "scan-window", "destination-unit", "max-tracked-pairs", "max-tracked-connections", "ignore-ports",
            "ipv6-block-prefix", "events", "log-level", "summary",
        ]
    )

    /// The fleet's settings (for `blocklist remove`).
    static let fleetOnly = all.only(Set(all.settings.map(\.name).filter { $0.hasPrefix("fleet-") }))

    /// The settings in force, with fleet mode's configuration made from them.
    /// - Throws: ``ConnCore/ConntrackrError`` (one line) for a bad file or value, `ValidationError` for a usage
    ///   error.
    static func resolve(arguments: [String], configurationFile: String?, table: SettingsTable<AgentSettings> = all)
        throws -> (AgentSettings, positional: [String])
    {
        let resolution: SettingsTable<AgentSettings>.Resolution
        do {
            resolution = try table.resolve(arguments: arguments, configurationFile: configurationFile)
        } catch let usage as SettingUsageError {
            throw ValidationError(usage.message)
        }
        var settings = resolution.values
        // The password's order is flag, then environment, then file (the environment was applied over the file).
        settings.fleetSettings.passwordFromEnvironment =
            !resolution.givenByFlag.contains("fleet-password") && getenv("CONNTRACKR_FLEET_PASSWORD") != nil
        settings.fleet = try settings.fleetSettings.configuration(
            defaultHostName: systemHostName(),
            policy: settings.blockPolicy
        )
        return (settings, resolution.positional)
    }

    /// Reads a YAML configuration file over these settings (on SIGHUP, for the allowlist).
    mutating func load(configurationFile path: String) throws {
        try Self.all.load(configurationFile: path, into: &self)
    }

    var pipelineConfiguration: ConnectionPipeline.Configuration {
        ConnectionPipeline.Configuration(
            scanRule: ScanRule(
                portThreshold: scanPorts,
                window: .nanoseconds(Int64(scanWindow * 1e9)),
                maxTrackedPairs: maxTrackedPairs,
                ignoredPorts: ignorePorts,
                destinationUnit: destinationUnit
            ),
            maxTrackedConnections: maxTrackedConnections
        )
    }

    var blockPolicy: BlockPolicy {
        BlockPolicy(
            ttl: blockTTL == 0 ? nil : .nanoseconds(Int64(min(blockTTL * 1e9, 9.2e18))),
            ipv6PrefixLength: ipv6BlockPrefix,
            maxBlocked: maxBlocked,
            maxBlocksPerMinute: maxBlocksPerMinute,
            maxFleetBlocked: fleetMaxBlocked,
            maxFleetBlocksPerMinute: fleetMaxBlocksPerMinute
        )
    }

    private static func systemHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "unknown" : name
    }
}
