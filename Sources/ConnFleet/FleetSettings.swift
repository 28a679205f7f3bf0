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

    public init() {}

    /// The configuration these settings make, `nil` when fleet mode is off (no endpoint).
    /// - Parameter defaultHostName: the name to publish under when ``hostName`` is not set.
    /// - Throws: ``ConnCore/ConntrackrError`` (`invalidConfiguration`, one line naming the settings) for settings
    ///   that do not fit together, or fleet settings without any endpoint.
    public func configuration(defaultHostName: String) throws(ConntrackrError) -> FleetConfiguration? {
        func invalid(_ message: String) -> ConntrackrError { ConntrackrError(.invalidConfiguration, message) }
        let ownPassword = password != nil && !passwordFromEnvironment
        guard !endpoints.isEmpty else {
            let others: [(String, Bool)] = [
                ("fleet-prefix", keyPrefix != FleetConfiguration.defaultKeyPrefix), ("fleet-ca", caFile != nil),
                ("fleet-cert", certificateFile != nil), ("fleet-key", keyFile != nil), ("fleet-user", user != nil),
                ("fleet-password", ownPassword), ("fleet-host-name", hostName != nil),
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
        if let hostName, hostName.isEmpty { throw invalid("fleet-host-name must not be empty") }
        let tls: EtcdConfiguration.TLS? =
            caFile == nil && certificateFile == nil
            ? nil : EtcdConfiguration.TLS(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        let credentials = user.map { EtcdConfiguration.Credentials(user: $0, password: password ?? "") }
        return FleetConfiguration(
            etcd: EtcdConfiguration(endpoints: endpoints, tls: tls, credentials: credentials),
            keyPrefix: keyPrefix,
            hostName: hostName ?? defaultHostName
        )
    }
}
