import ArgumentParser
import ConnCore
import Logging

/// The flags of `conntrackr run`. Each is optional: a flag that is given overrides the configuration file, which
/// overrides the defaults of ``AgentSettings``.
struct RunOptions: ParsableArguments {
    @Option(help: "A YAML configuration file; its keys are these flags' names without dashes.")
    var config: String?

    @Option(help: "The interface to watch (default: the one holding the default route; `any` for all, pcap only).")
    var interface: String?

    @Option(help: "Where attempts are captured: pcap (libpcap, portable) or xdp (XDP program, fast). Default pcap.")
    var source: String?

    @Option(help: "How the XDP program attaches: auto (native, else generic), native or generic.")
    var xdpMode: String?

    @Option(help: "The bpffs directory of conntrackr's pinned maps. Default /sys/fs/bpf/conntrackr.")
    var pinDir: String?

    @Option(help: "How scanners are blocked: none (detect only), xdp or nftables. Default none.")
    var block: String?

    @Option(help: "Seconds a block lasts; 0 blocks until removed. Default 3600.")
    var blockTTL: Double?

    @Option(help: "IPv6 scanners are blocked as this prefix of their address. Default 64.")
    var ipv6BlockPrefix: Int?

    @Option(help: "The most blocked prefixes; further blocks are refused and counted. Default 65536.")
    var maxBlocked: Int?

    @Option(help: "The most new blocks in any minute (protects against forged scans). Default 120.")
    var maxBlocksPerMinute: Int?

    @Option(help: "An address or CIDR prefix never to block (repeatable); loopback, this host and its gateways always are.")
    var allow: [String] = []

    @Option(help: "A file of addresses or CIDR prefixes never to block, one per line, # comments.")
    var allowFile: String?

    @Flag(inversion: .prefixedNo, help: "Remove every pinned block when the agent exits.")
    var flushOnExit: Bool?

    @Option(help: "Where Prometheus metrics are served: HOST:PORT, [V6]:PORT or none. Default 127.0.0.1:9542.")
    var metricsAddress: String?

    @Option(help: "Output format of events: text or json.")
    var format: String?

    @Option(help: "Log level on standard error: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Option(help: "Log format on standard error: text or json.")
    var logFormat: String?

    @Option(help: "A scan is more than this many distinct ports of one destination. Default 3.")
    var scanPorts: Int?

    @Option(help: "The window, in seconds, in which those ports must be reached. Default 60.")
    var scanWindow: Double?

    @Option(help: "The most (source, destination) pairs tracked at once. Default 1000000.")
    var maxTrackedPairs: Int?

    @Option(help: "The most 4-tuples remembered to tell retransmissions from new connections. Default 1000000.")
    var maxTrackedConnections: Int?

    @Flag(inversion: .prefixedNo, help: "Report attempts to any destination, not only to this host's addresses.")
    var allDestinations: Bool?

    @OptionGroup var fleet: FleetOptions

    /// The settings in force: defaults, then the configuration file, then these flags.
    func resolve() throws -> AgentSettings {
        var settings = AgentSettings()
        if let config { try settings.load(configurationFile: config) }
        func choose<T: RawRepresentable & CaseIterable>(_ text: String?, _ flag: String, into value: inout T)
        throws where T.RawValue == String {
            guard let text else { return }
            guard let chosen = T(rawValue: text) else {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "--\(flag) must be one of " + T.allCases.map(\.rawValue).joined(separator: ", ")
                )
            }
            value = chosen
        }
        if let interface { settings.interface = interface }
        try choose(source, "source", into: &settings.source)
        try choose(xdpMode, "xdp-mode", into: &settings.xdpMode)
        if let pinDir { settings.pinDirectory = pinDir }
        try choose(block, "block", into: &settings.block)
        if let blockTTL { settings.blockTTL = blockTTL }
        if let ipv6BlockPrefix { settings.ipv6BlockPrefix = ipv6BlockPrefix }
        if let maxBlocked { settings.maxBlocked = maxBlocked }
        if let maxBlocksPerMinute { settings.maxBlocksPerMinute = maxBlocksPerMinute }
        if !allow.isEmpty { settings.allow = allow }
        if let allowFile { settings.allowFile = allowFile }
        if let flushOnExit { settings.flushOnExit = flushOnExit }
        if let metricsAddress { settings.metricsAddress = metricsAddress }
        try choose(format, "format", into: &settings.format)
        try choose(logLevel, "log-level", into: &settings.logLevel)
        try choose(logFormat, "log-format", into: &settings.logFormat)
        if let scanPorts { settings.scanPorts = scanPorts }
        if let scanWindow { settings.scanWindow = scanWindow }
        if let maxTrackedPairs { settings.maxTrackedPairs = maxTrackedPairs }
        if let maxTrackedConnections { settings.maxTrackedConnections = maxTrackedConnections }
        if let allDestinations { settings.allDestinations = allDestinations }
        try settings.validate()
        settings.fleet = try fleet.configuration(fileEndpoints: settings.fleetEtcd)
        return settings
    }
}
