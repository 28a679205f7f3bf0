import ArgumentParser
import ConnCore
import ConnFleet
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The `--fleet-*` flags of `conntrackr run`: share blocks with other hosts through etcd.
struct FleetOptions: ParsableArguments {
    @Option(
        name: .customLong("fleet-etcd"),
        help: ArgumentHelp(
            "Share blocks through etcd at these endpoints, comma-separated (http://HOST:2379 or https://...).",
            valueName: "url[,url...]"
        )
    )
    var etcd: String?

    @Option(
        name: .customLong("fleet-prefix"),
        help: "The etcd key prefix blocks are shared under (default: /conntrackr/blocks/)."
    )
    var prefix: String?

    @Option(
        name: .customLong("fleet-ca"),
        help: ArgumentHelp("PEM file of the CA that signed etcd's certificate (https:// endpoints).", valueName: "file")
    )
    var caFile: String?

    @Option(
        name: .customLong("fleet-cert"),
        help: ArgumentHelp(
            "PEM client certificate, for etcd's --client-cert-auth (with --fleet-key).",
            valueName: "file"
        )
    )
    var certificateFile: String?

    @Option(
        name: .customLong("fleet-key"),
        help: ArgumentHelp("PEM private key of --fleet-cert.", valueName: "file")
    )
    var keyFile: String?

    @Option(name: .customLong("fleet-user"), help: "etcd user, when etcd has authentication enabled.")
    var user: String?

    @Option(
        name: .customLong("fleet-password"),
        help: "Password of --fleet-user (or set CONNTRACKR_FLEET_PASSWORD, which other users cannot see in ps)."
    )
    var password: String?

    @Option(
        name: .customLong("fleet-host-name"),
        help: "This agent's name in the blocks it publishes (default: the host name)."
    )
    var hostName: String?

    func validate() throws {
        if let etcd, splitEndpoints([etcd]).isEmpty { throw ValidationError("--fleet-etcd needs at least one endpoint") }
    }

    private func splitEndpoints(_ lists: [String]) -> [String] {
        lists.flatMap { $0.split(separator: ",") }.map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
    }

    /// The fleet settings, or `nil` when fleet mode is off (no endpoint from `--fleet-etcd` or the file).
    /// - Parameter file: the configuration file's `fleet-*` settings; each `--fleet-*` flag overrides its own.
    /// - Throws: ``ConnCore/ConntrackrError`` for settings that do not fit together, or fleet settings without any
    ///   endpoint.
    func configuration(file: FleetFileSettings = FleetFileSettings()) throws -> FleetConfiguration? {
        func invalid(_ message: String) -> ConntrackrError { ConntrackrError(.invalidConfiguration, message) }
        let endpoints = etcd.map { splitEndpoints([$0]) } ?? splitEndpoints(file.etcd)
        let prefix = prefix ?? file.prefix ?? FleetConfiguration.defaultKeyPrefix
        let caFile = caFile ?? file.caFile
        let certificateFile = certificateFile ?? file.certificateFile
        let keyFile = keyFile ?? file.keyFile
        let user = user ?? file.user
        let password = password ?? getenv("CONNTRACKR_FLEET_PASSWORD").map { String(cString: $0) } ?? file.password
        let hostName = hostName ?? file.hostName
        guard !endpoints.isEmpty else {
            let others: [(String, Bool)] = [
                ("fleet-prefix", prefix != FleetConfiguration.defaultKeyPrefix), ("fleet-ca", caFile != nil),
                ("fleet-cert", certificateFile != nil), ("fleet-key", keyFile != nil), ("fleet-user", user != nil),
                ("fleet-password", self.password != nil || file.password != nil), ("fleet-host-name", hostName != nil),
            ]
            if let (name, _) = others.first(where: \.1) {
                throw invalid("\(name) needs fleet-etcd (--fleet-etcd or in the configuration file)")
            }
            return nil
        }
        guard prefix.hasPrefix("/"), prefix.count >= 2 else {
            throw invalid("fleet-prefix must start with / and name a prefix, such as \(FleetConfiguration.defaultKeyPrefix)")
        }
        guard (certificateFile == nil) == (keyFile == nil) else {
            throw invalid("fleet-cert and fleet-key go together: give both or neither")
        }
        if user == nil, self.password != nil || file.password != nil { throw invalid("fleet-password needs fleet-user") }
        if user != nil, password == nil {
            throw invalid("fleet-user needs fleet-password (flag, file, or CONNTRACKR_FLEET_PASSWORD)")
        }
        if let hostName, hostName.isEmpty { throw invalid("fleet-host-name must not be empty") }
        let tls: EtcdConfiguration.TLS? =
            caFile == nil && certificateFile == nil
            ? nil : EtcdConfiguration.TLS(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        let credentials = user.map { EtcdConfiguration.Credentials(user: $0, password: password ?? "") }
        return FleetConfiguration(
            etcd: EtcdConfiguration(endpoints: endpoints, tls: tls, credentials: credentials),
            keyPrefix: prefix,
            hostName: hostName ?? Self.systemHostName()
        )
    }

    /// The fleet service for `configuration`.
    ///
    /// Make it before the pipeline is handed to the capture service (take `pipeline.inbox` first) and add it to the
    /// same `ServiceGroup`: it publishes `controller`'s local blocks, applies the fleet's through it, and posts
    /// their events to `inbox`. It never stops the group: etcd being away only delays sharing.
    /// - Throws: a ``ConnFleet/FleetError`` (one line) for an invalid endpoint or an unreadable TLS file.
    static func makeService(
        configuration: FleetConfiguration,
        controller: BlockController,
        inbox: EventInbox,
        metrics: any MetricsSink,
        logger: Logger
    ) throws -> FleetService {
        try FleetService(
            configuration: configuration,
            controller: controller,
            events: { inbox.post($0) },
            metrics: metrics,
            logger: logger
        )
    }

    private static func systemHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "unknown" : name
    }
}
