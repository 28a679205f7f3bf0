public import ConnCore

/// Fleet mode's settings as an operator gives them (the agent's `fleet-*` flags and configuration keys), before
/// they are checked to fit together and become a ``FleetConfiguration``.
public struct FleetSettings: Hashable, Sendable {
    /// etcd endpoints (`http://HOST:2379`, `https://...`); none turns fleet mode off.
    public var endpoints: [String] = []
    /// The key prefix blocks are shared under.
    public var keyPrefix = FleetConfiguration.defaultKeyPrefix
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var user: String?
    public var password: String?
    /// Whether ``password`` came from the environment, where it may be set for every process whether or not fleet
    /// mode is on: then it alone does not ask for fleet settings.
    public var passwordFromEnvironment = false
    /// This agent's name in the records it publishes; `nil` takes the host name.
    public var hostName: String?
    /// Whether credentials may go to `http://` endpoints, in clear (a lab). Default off.
    public var allowInsecure = false
    /// How many distinct hosts must report a source before a learned block is applied (``FleetTrust/minReporters``).
    public var minReporters = 1
    /// The widest IPv4 prefix applied from the fleet (``FleetTrust/widestIPv4``).
    public var widestIPv4 = 32
    /// The widest IPv6 prefix applied from the fleet; 0 takes the local IPv6 block prefix.
    public var widestIPv6 = 0
    /// Whether records without expiry stay permanent (``FleetTrust/allowPermanent``).
    public var allowPermanent = false
    /// Prefixes no agent of the fleet blocks (monitoring, DNS, bastions, load balancers): every agent adds them to
    /// its allowlist, as `fleet allow`.
    public var allow: [String] = []

    public init() {}

    /// The prefixes of ``allow`` (invalid ones are refused when the settings are read).
    public var allowedPrefixes: [IPPrefix] { allow.compactMap { IPPrefix($0) } }

    /// The configuration these settings make, `nil` when fleet mode is off (no endpoint).
    /// - Parameters:
    ///   - defaultHostName: the name to publish under when ``hostName`` is not set.
    ///   - policy: the local block policy: its TTL bounds learned blocks' lifetimes (one hour when blocks are
    ///     permanent), its IPv6 prefix length is the widest IPv6 prefix accepted unless ``widestIPv6`` is set.
    /// - Throws: ``ConnCore/ConntrackrError`` (`invalidConfiguration`, one line naming the settings) for settings
    ///   that do not fit together, or fleet settings without any endpoint.
    public func configuration(defaultHostName: String, policy: BlockPolicy = BlockPolicy())
        throws(ConntrackrError) -> FleetConfiguration?
    {
        func invalid(_ message: String) -> ConntrackrError { ConntrackrError(.invalidConfiguration, message) }
        let ownPassword = password != nil && !passwordFromEnvironment
        guard !endpoints.isEmpty else {
            let others: [(String, Bool)] = [
                ("fleet-prefix", keyPrefix != FleetConfiguration.defaultKeyPrefix), ("fleet-ca", caFile != nil),
                ("fleet-cert", certificateFile != nil), ("fleet-key", keyFile != nil), ("fleet-user", user != nil),
                ("fleet-password", ownPassword), ("fleet-host-name", hostName != nil),
                ("fleet-allow-insecure", allowInsecure), ("fleet-min-reporters", minReporters != 1),
                ("fleet-widest-ipv4", widestIPv4 != 32), ("fleet-widest-ipv6", widestIPv6 != 0),
                ("fleet-allow-permanent", allowPermanent),
            ]
            if let (name, _) = others.first(where: \.1) {
                throw invalid("\(name) needs fleet-etcd (--fleet-etcd or in the configuration file)")
            }
            return nil
        }
        guard keyPrefix.hasPrefix("/"), keyPrefix.count >= 2 else {
            throw invalid("fleet-prefix must start with / and name a prefix, such as \(FleetConfiguration.defaultKeyPrefix)")
        }
        guard (certificateFile == nil) == (keyFile == nil) else {
            throw invalid("fleet-cert and fleet-key go together: give both or neither")
        }
        if user == nil, ownPassword { throw invalid("fleet-password needs fleet-user") }
        if user != nil, password == nil {
            throw invalid("fleet-user needs fleet-password (flag, file, or CONNTRACKR_FLEET_PASSWORD)")
        }
        let name = hostName ?? defaultHostName
        guard FleetKeys.isValidHostName(name) else {
            throw invalid(
                "fleet-host-name \"\(name.prefix(64))\" must be 1 to \(FleetTrust.maxHostBytes) letters, digits, '.', '-' "
                    + "or '_' (it is a segment of this host's etcd keys)"
            )
        }
        let insecure = endpoints.first { !$0.hasPrefix("https://") }
        if user != nil, !allowInsecure, let insecure {
            throw invalid(
                "fleet-user would send its password in clear to \(insecure): use https:// endpoints "
                    + "(fleet-allow-insecure allows it, in a lab only)"
            )
        }
        let tls: EtcdConfiguration.TLS? =
            caFile == nil && certificateFile == nil
            ? nil : EtcdConfiguration.TLS(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        let credentials = user.map { EtcdConfiguration.Credentials(user: $0, password: password ?? "") }
        let trust = FleetTrust(
            widestIPv4: widestIPv4,
            widestIPv6: widestIPv6 == 0 ? policy.ipv6PrefixLength : widestIPv6,
            maxLifetime: policy.ttl ?? .seconds(3600),
            allowPermanent: allowPermanent,
            minReporters: minReporters
        )
        return FleetConfiguration(
            etcd: EtcdConfiguration(
                endpoints: endpoints, tls: tls, credentials: credentials, allowInsecure: allowInsecure
            ),
            keyPrefix: keyPrefix,
            hostName: name,
            trust: trust
        )
    }
}
