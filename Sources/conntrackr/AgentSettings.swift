import ConnCore
import ConnFleet
import Logging
import Yams

/// Everything `conntrackr run` can be told, by a configuration file or by flags (flags win).
///
/// Configuration keys are the flag names without their dashes (`scan-ports: 5`, `allow: [198.51.100.0/24]`).
struct AgentSettings: Sendable {
    enum SourceKind: String, CaseIterable, Sendable { case pcap, xdp }
    enum BlockKind: String, CaseIterable, Sendable { case none, xdp, nftables }
    enum XDPMode: String, CaseIterable, Sendable { case auto, native, generic }

    var interface: String?
    var source = SourceKind.pcap
    var xdpMode = XDPMode.auto
    var pinDirectory = "/sys/fs/bpf/conntrackr"
    var block = BlockKind.none
    /// Seconds a block lasts; 0 blocks until removed by hand.
    var blockTTL: Double = 3600
    var ipv6BlockPrefix = 64
    var maxBlocked = 65_536
    var maxBlocksPerMinute = 120
    var allow: [String] = []
    var allowFile: String?
    var flushOnExit = false
    var metricsAddress = "127.0.0.1:9542"
    var format = OutputFormat.text
    var logLevel = Logger.Level.info
    var logFormat = LogFormat.text
    var scanPorts = 3
    var scanWindow: Double = 60
    var maxTrackedPairs = 1_000_000
    var maxTrackedConnections = 1_000_000
    var allDestinations = false
    /// The `fleet-*` keys of the file; the `--fleet-*` flags override them one by one.
    var fleetFile = FleetFileSettings()
    /// Fleet mode, when endpoints are given (by flag or file).
    var fleet: FleetConfiguration?

    /// Reads a YAML configuration file (JSON is YAML too) over the defaults.
    /// - Throws: ``ConntrackrError`` naming the file and the offending key.
    mutating func load(configurationFile path: String) throws {
        let text: String
        do {
            text = String(decoding: try TextFile.contents(of: path), as: UTF8.self)
        } catch {
            throw ConntrackrError(.invalidConfiguration, "cannot read configuration file \(path): \(error.text)")
        }
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            let reason = "\(error)".split(separator: "\n").first.map(String.init) ?? "not YAML"
            throw ConntrackrError(.invalidConfiguration, "\(path) is not valid YAML: \(reason)")
        }
        guard let document else { return }  // an empty file keeps the defaults
        guard let table = document as? [String: Any] else {
            throw ConntrackrError(.invalidConfiguration, "\(path): the configuration must be a mapping of settings")
        }
        for (key, value) in table.sorted(by: { $0.key < $1.key }) {
            try apply(key: key, value: value, file: path)
        }
    }

    private mutating func apply(key: String, value: Any, file: String) throws {
        func bad(_ expected: String) -> ConntrackrError {
            ConntrackrError(.invalidConfiguration, "\(file): \(key) must be \(expected), not \(value)")
        }
        func string() throws -> String {
            if let text = value as? String { return text }
            if let number = value as? Int { return String(number) }
            throw bad("a string")
        }
        func integer() throws -> Int {
            guard let number = value as? Int else { throw bad("a whole number") }
            return number
        }
        func number() throws -> Double {
            if let number = value as? Double { return number }
            if let number = value as? Int { return Double(number) }
            throw bad("a number")
        }
        func boolean() throws -> Bool {
            guard let flag = value as? Bool else { throw bad("true or false") }
            return flag
        }
        func list() throws -> [String] {
            if let text = value as? String { return [text] }
            guard let items = value as? [Any] else { throw bad("a list") }
            return try items.map {
                guard let text = $0 as? String else { throw bad("a list of strings") }
                return text
            }
        }
        func choice<T: RawRepresentable & CaseIterable>(_: T.Type) throws -> T where T.RawValue == String {
            guard let chosen = T(rawValue: try string()) else {
                throw bad("one of " + T.allCases.map(\.rawValue).joined(separator: ", "))
            }
            return chosen
        }
        switch key {
        case "interface": interface = try string()
        case "source": source = try choice(SourceKind.self)
        case "xdp-mode": xdpMode = try choice(XDPMode.self)
        case "pin-dir": pinDirectory = try string()
        case "block": block = try choice(BlockKind.self)
        case "block-ttl": blockTTL = try number()
        case "ipv6-block-prefix": ipv6BlockPrefix = try integer()
        case "max-blocked": maxBlocked = try integer()
        case "max-blocks-per-minute": maxBlocksPerMinute = try integer()
        case "allow": allow = try list()
        case "allow-file": allowFile = try string()
        case "flush-on-exit": flushOnExit = try boolean()
        case "metrics-address": metricsAddress = try string()
        case "format": format = try choice(OutputFormat.self)
        case "log-level": logLevel = try choice(Logger.Level.self)
        case "log-format": logFormat = try choice(LogFormat.self)
        case "scan-ports": scanPorts = try integer()
        case "scan-window": scanWindow = try number()
        case "max-tracked-pairs": maxTrackedPairs = try integer()
        case "max-tracked-connections": maxTrackedConnections = try integer()
        case "all-destinations": allDestinations = try boolean()
        case "fleet-etcd": fleetFile.etcd = try list().flatMap { $0.split(separator: ",").map(String.init) }
        case "fleet-prefix": fleetFile.prefix = try string()
        case "fleet-ca": fleetFile.caFile = try string()
        case "fleet-cert": fleetFile.certificateFile = try string()
        case "fleet-key": fleetFile.keyFile = try string()
        case "fleet-user": fleetFile.user = try string()
        case "fleet-password": fleetFile.password = try string()
        case "fleet-host-name": fleetFile.hostName = try string()
        default:
            throw ConntrackrError(.invalidConfiguration, "\(file): unknown setting \(key)")
        }
    }

    /// Checks ranges that neither YAML nor the flag parser can.
    func validate() throws {
        func invalid(_ message: String) -> ConntrackrError { ConntrackrError(.invalidConfiguration, message) }
        guard (1...ScanRule.maxPortThreshold).contains(scanPorts) else {
            throw invalid("scan-ports must be between 1 and \(ScanRule.maxPortThreshold)")
        }
        guard scanWindow > 0, scanWindow <= 86_400 else { throw invalid("scan-window must be in (0, 86400] seconds") }
        // The tables are reserved up front (committed as used), so an absurd cap must fail here, not in the kernel's
        // out-of-memory killer later: 100 million pairs is 16 GB.
        guard (1...Self.maxTrackedLimit).contains(maxTrackedPairs), (1...Self.maxTrackedLimit).contains(maxTrackedConnections)
        else {
            throw invalid("max-tracked-pairs and max-tracked-connections must be between 1 and \(Self.maxTrackedLimit)")
        }
        guard blockTTL >= 0 else { throw invalid("block-ttl must be 0 (permanent) or more seconds") }
        guard (1...128).contains(ipv6BlockPrefix) else { throw invalid("ipv6-block-prefix must be 1 to 128") }
        guard maxBlocked > 0, maxBlocksPerMinute > 0 else {
            throw invalid("max-blocked and max-blocks-per-minute must be positive")
        }
        for cidr in allow where IPPrefix(cidr) == nil {
            throw invalid("allow: \(cidr) is not an address or CIDR prefix")
        }
    }

    static let maxTrackedLimit = 100_000_000

    var pipelineConfiguration: ConnectionPipeline.Configuration {
        ConnectionPipeline.Configuration(
            scanRule: ScanRule(
                portThreshold: scanPorts,
                window: .nanoseconds(Int64(scanWindow * 1e9)),
                maxTrackedPairs: maxTrackedPairs
            ),
            maxTrackedConnections: maxTrackedConnections
        )
    }

    var blockPolicy: BlockPolicy {
        BlockPolicy(
            ttl: blockTTL == 0 ? nil : .nanoseconds(Int64(blockTTL * 1e9)),
            ipv6PrefixLength: ipv6BlockPrefix,
            maxBlocked: maxBlocked,
            maxBlocksPerMinute: maxBlocksPerMinute
        )
    }
}

/// The fleet settings a configuration file may hold, under the names of their flags.
struct FleetFileSettings: Sendable {
    var etcd: [String] = []
    var prefix: String?
    var caFile: String?
    var certificateFile: String?
    var keyFile: String?
    var user: String?
    var password: String?
    var hostName: String?
}
