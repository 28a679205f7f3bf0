public import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// Settings of fleet mode: where the store is, how to reach it, and how this agent shows itself.
public struct FleetConfiguration: Hashable, Sendable {
    /// How to reach etcd.
    public var etcd: EtcdConfiguration
    /// The key prefix blocks live under. Default `/conntrackr/blocks/`.
    public var keyPrefix: String
    /// This agent's name in the records it publishes (the `host` field); by default the host name.
    public var hostName: String
    /// How often a connected agent checks that etcd still answers, so that a connection that died silently (a
    /// partition, not a closed socket) is noticed; also how often learned blocks refused for a rate limit are
    /// retried. Default 5 seconds.
    public var healthCheckInterval: Duration
    /// The first wait before reconnecting; it doubles after each failure, up to ``maxBackoff``. Default 200 ms.
    public var initialBackoff: Duration
    /// The longest wait between reconnection attempts. Default 10 seconds.
    public var maxBackoff: Duration
    /// The most publications kept while etcd is unreachable; beyond it the oldest are dropped and counted.
    /// Default 1024.
    public var maxQueuedPublications: Int
    /// What this agent accepts from the store (prefix widths, lifetimes, reporters, bounds).
    public var trust: FleetTrust

    /// The key prefix used unless another is configured.
    public static let defaultKeyPrefix = "/conntrackr/blocks/"

    public init(
        etcd: EtcdConfiguration,
        keyPrefix: String = defaultKeyPrefix,
        hostName: String,
        healthCheckInterval: Duration = .seconds(5),
        initialBackoff: Duration = .milliseconds(200),
        maxBackoff: Duration = .seconds(10),
        maxQueuedPublications: Int = 1024,
        trust: FleetTrust = FleetTrust()
    ) {
        self.trust = trust
        self.etcd = etcd
        self.keyPrefix = keyPrefix
        self.hostName = hostName
        self.healthCheckInterval = healthCheckInterval
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.maxQueuedPublications = maxQueuedPublications
    }

    /// The wait before reconnection attempt `failures + 1`: doubling from ``initialBackoff``, capped at
    /// ``maxBackoff``, then scaled by `jitter` (in 0.5...1) so that a fleet restarted at once does not reconnect in
    /// step.
    public func backoff(afterFailures failures: Int, jitter: Double = 1) -> Duration {
        let cap = max(maxBackoff.nanosecondsClamped, 0)
        var delay = min(max(initialBackoff.nanosecondsClamped, 0), cap)
        for _ in 0..<min(max(failures, 0), 64) where delay < cap {
            delay = delay > cap / 2 ? cap : delay * 2
        }
        return .nanoseconds(Int64(Double(delay) * min(max(jitter, 0.5), 1)))
    }
}

/// How to reach etcd: its endpoints, TLS and credentials.
public struct EtcdConfiguration: Hashable, Sendable {
    /// Client TLS files, all PEM.
    public struct TLS: Hashable, Sendable {
        /// The CA that signed etcd's certificate; `nil` trusts the system's roots.
        public var caFile: String?
        /// This client's certificate chain, for etcd's `--client-cert-auth`.
        public var certificateFile: String?
        /// The private key of ``certificateFile``.
        public var keyFile: String?

        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    /// A user and password for etcd's authentication (`etcdctl auth enable`).
    public struct Credentials: Hashable, Sendable, CustomStringConvertible {
        public var user: String
        public var password: String

        public init(user: String, password: String) {
            self.user = user
            self.password = password
        }

        /// Never shows the password, so that logging a configuration is safe.
        public var description: String { "Credentials(user: \(user), password: <hidden>)" }
    }

    /// Base URLs such as `http://10.0.0.1:2379` or `https://etcd-1:2379`; the next is tried when one fails.
    public var endpoints: [String]
    /// Used for every `https` endpoint; `nil` uses the system's trust roots and no client certificate.
    public var tls: TLS?
    public var credentials: Credentials?
    /// The longest a single request (not a watch) may take. Default 5 seconds.
    public var requestTimeout: Duration
    /// The longest a connection attempt may take. Default 2 seconds.
    public var connectTimeout: Duration
    /// Keys per request when listing, so that a large blocklist is not one huge answer; halved, down to 1, while
    /// a page is over the largest answer read. Default 1000.
    public var listPageSize: Int
    /// The most keys one listing reads; the rest are counted as omitted. Default 100,000.
    public var maxListedKeys: Int
    /// The most bytes of values one listing reads; the rest are counted as omitted. Default 64 MiB.
    public var maxListedBytes: Int
    /// Whether credentials may be sent over `http://` (in clear). Only for a lab. Default off.
    public var allowInsecure: Bool

    public init(
        endpoints: [String],
        tls: TLS? = nil,
        credentials: Credentials? = nil,
        requestTimeout: Duration = .seconds(5),
        connectTimeout: Duration = .seconds(2),
        listPageSize: Int = 1000,
        maxListedKeys: Int = 100_000,
        maxListedBytes: Int = 64 << 20,
        allowInsecure: Bool = false
    ) {
        self.maxListedKeys = maxListedKeys
        self.maxListedBytes = maxListedBytes
        self.allowInsecure = allowInsecure
        self.endpoints = endpoints
        self.tls = tls
        self.credentials = credentials
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout
        self.listPageSize = listPageSize
    }
}

extension EtcdConfiguration {
    /// The addresses of every endpoint: IP literals as they are, host names resolved (every address they have), so
    /// that each agent allowlists its fleet's store and no record can cut the fleet off it.
    /// - Throws: ``ConnCore/ConntrackrError`` (`invalidConfiguration`) naming an endpoint whose host does not
    ///   resolve.
    public func endpointAddresses() throws(ConntrackrError) -> [IPAddress] {
        var addresses: [IPAddress] = []
        for endpoint in endpoints {
            let host = Self.host(of: endpoint)
            if let literal = IPAddress(host) {
                addresses.append(literal)
                continue
            }
            let resolved = Self.resolve(host)
            guard !resolved.isEmpty else {
                throw ConntrackrError(
                    .invalidConfiguration,
                    "cannot resolve the host of fleet-etcd endpoint \(endpoint) to allowlist it: fix DNS or give an "
                        + "IP address"
                )
            }
            addresses += resolved
        }
        var seen = Set<IPAddress>()
        return addresses.filter { seen.insert($0).inserted }
    }

    /// The host of `http://HOST:PORT/...`, `https://[V6]:PORT` or a bare `HOST:PORT`.
    static func host(of endpoint: String) -> String {
        var rest = Substring(endpoint)
        for scheme in ["http://", "https://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            return String(rest[rest.index(after: rest.startIndex)..<close])
        }
        if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") { rest = rest[..<colon] }
        return String(rest)
    }

    private static func resolve(_ host: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var head: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &head) == 0 else { return [] }
        defer { freeaddrinfo(head) }
        var addresses: [IPAddress] = []
        var cursor = head
        while let entry = cursor {
            cursor = entry.pointee.ai_next
            guard let socketAddress = entry.pointee.ai_addr, let address = IPAddress(socketAddress: socketAddress)
            else { continue }
            addresses.append(address)
        }
        return addresses
    }
}
