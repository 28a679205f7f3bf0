import AsyncHTTPClient
import ConnCore
public import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A ``FleetStore`` backed by etcd (3.4 or later), through the JSON gateway of its v3 API (`/v3/kv/range`,
/// `/v3/kv/put`, `/v3/lease/grant`, `/v3/watch`, ...), over async-http-client.
///
/// - Endpoints: requests go to the first endpoint until one fails to connect or times out; then to the next.
/// - TLS: `https` endpoints use ``EtcdConfiguration/tls`` (the CA that signed etcd's certificate, and a client
///   certificate and key when etcd runs with `--client-cert-auth`).
/// - Authentication: with ``EtcdConfiguration/credentials``, the store gets a token from `/v3/auth/authenticate`
///   and sends it in the `Authorization` header; an expired token is renewed once per request.
///
/// - Important: Call ``shutdown()`` (``FleetService`` does, when it stops) before releasing the store.
public final class EtcdStore: FleetStore {
    private enum ClientState {
        case idle
        case running(HTTPClient)
        case shutDown
    }

    private let httpConfiguration: HTTPClient.Configuration
    /// Made at the first request, so that a store never used needs no shutdown.
    private let clientState = Mutex(ClientState.idle)
    private let endpoints: [String]
    private let credentials: EtcdConfiguration.Credentials?
    private let requestTimeout: Duration
    private let logger: Logger
    private let current = Mutex(0)  // index of the endpoint in use
    private let token = Mutex<String?>(nil)
    private let pageSize: Int
    private let maxListedKeys: Int
    private let maxListedBytes: Int

    /// The most bytes read from one answer (a page of a listing, a line of a watch).
    static let maxResponseBytes = 64 << 20
    /// Makes a store; no connection is made until the first request.
    /// - Throws: a ``FleetError`` with code ``FleetError/Code/invalidConfiguration`` naming the endpoint or file.
    public init(configuration: EtcdConfiguration, logger: Logger = Logger(label: "conntrackr.fleet")) throws {
        guard !configuration.endpoints.isEmpty else {
            throw FleetError(.invalidConfiguration, "no etcd endpoint given")
        }
        let endpoints = try configuration.endpoints.map(Self.normalizedEndpoint)
        let usesTLS = endpoints.contains { $0.hasPrefix("https://") }
        if configuration.tls != nil, !usesTLS {
            throw FleetError(
                .invalidConfiguration,
                "TLS files given but no etcd endpoint is https://: use https:// endpoints with --fleet-ca/--fleet-cert"
            )
        }
        if configuration.credentials != nil, !configuration.allowInsecure,
            let clear = endpoints.first(where: { $0.hasPrefix("http://") })
        {
            throw FleetError(
                .invalidConfiguration,
                "fleet-user would send its password in clear to \(clear): use https:// endpoints "
                    + "(or fleet-allow-insecure, in a lab only)"
            )
        }
        var httpConfiguration = HTTPClient.Configuration(
            tlsConfiguration: usesTLS ? try Self.makeTLSConfiguration(configuration.tls) : nil,
            timeout: HTTPClient.Configuration.Timeout(
                connect: .nanoseconds(configuration.connectTimeout.nanosecondsClamped),
                read: nil  // watches are quiet for long; unary requests carry their own deadline
            )
        )
        httpConfiguration.httpVersion = .http1Only
        // Never follow a redirect: it would carry the token (and the request) to wherever the answer points.
        httpConfiguration.redirectConfiguration = .disallow
        self.httpConfiguration = httpConfiguration
        self.pageSize = max(configuration.listPageSize, 1)
        self.maxListedKeys = max(configuration.maxListedKeys, 0)
        self.maxListedBytes = max(configuration.maxListedBytes, 0)
        self.endpoints = endpoints
        self.credentials = configuration.credentials
        self.requestTimeout = configuration.requestTimeout
        self.logger = logger
    }

    /// Checks an endpoint and returns it as `scheme://host:port` with no trailing slash; a bare `host:port` means
    /// `http://host:port`.
    static func normalizedEndpoint(_ text: String) throws -> String {
        var endpoint = String(text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        if !endpoint.contains("://") { endpoint = "http://" + endpoint }
        while endpoint.hasSuffix("/") { endpoint.removeLast() }
        guard let url = URL(string: endpoint), let scheme = url.scheme, ["http", "https"].contains(scheme),
            let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil
        else {
            throw FleetError(
                .invalidConfiguration,
                "invalid etcd endpoint \"\(text)\": expected http://HOST:PORT or https://HOST:PORT"
            )
        }
        return endpoint
    }

    private static func makeTLSConfiguration(_ tls: EtcdConfiguration.TLS?) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        guard let tls else { return configuration }
        func read<T>(_ what: String, _ path: String, _ body: (String) throws -> T) throws -> T {
            do {
                return try body(path)
            } catch {
                throw FleetError(.invalidConfiguration, "cannot read \(what) \(path): \(error)")
            }
        }
        if let caFile = tls.caFile {
            let roots = try read("--fleet-ca", caFile) { try NIOSSLCertificate.fromPEMFile($0) }
            guard !roots.isEmpty else {
                throw FleetError(.invalidConfiguration, "--fleet-ca \(caFile) holds no PEM certificate")
            }
            configuration.trustRoots = .certificates(roots)
        }
        switch (tls.certificateFile, tls.keyFile) {
        case (nil, nil):
            break
        case (let certificateFile?, let keyFile?):
            let chain = try read("--fleet-cert", certificateFile) { try NIOSSLCertificate.fromPEMFile($0) }
            guard !chain.isEmpty else {
                throw FleetError(.invalidConfiguration, "--fleet-cert \(certificateFile) holds no PEM certificate")
            }
            let key = try read("--fleet-key", keyFile) { try NIOSSLPrivateKey(file: $0, format: .pem) }
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(key)
        default:
            throw FleetError(.invalidConfiguration, "--fleet-cert and --fleet-key go together: give both or neither")
        }
        return configuration
    }

    // MARK: FleetStore

    public func grantLease(ttl: Duration) async throws -> Int64 {
        let seconds = max(1, (ttl.nanosecondsClamped + 999_999_999) / 1_000_000_000)
        let response: LeaseGrantResponse = try await call("/v3/lease/grant", LeaseGrantRequest(TTL: String(seconds)))
        if let error = response.error, !error.isEmpty {
            throw FleetError(.rejected, "etcd refused a lease of \(seconds) s: \(error)")
        }
        guard let id = response.ID?.value, id != 0 else {
            throw FleetError(.malformedResponse, "etcd granted a lease without an ID")
        }
        return id
    }

    public func put(key: String, value: [UInt8], lease: Int64?) async throws {
        let request = PutRequest(
            key: Self.base64(Array(key.utf8)),
            value: Self.base64(value),
            lease: lease.map(String.init)
        )
        let _: EmptyResponse = try await call("/v3/kv/put", request)
    }

    public func list(prefix: String) async throws -> FleetListing {
        let prefixBytes = Array(prefix.utf8)
        let end = Self.base64(rangeEnd(forPrefix: prefixBytes))
        var start = prefixBytes
        var revision: Int64?
        var values: [FleetKeyValue] = []
        var bytes = 0
        var limit = pageSize
        var omitted = 0
        while true {
            let room = maxListedKeys - values.count
            guard room > 0, bytes < maxListedBytes else {
                // Bounded: what is left is counted, not read.
                let request = RangeRequest(
                    key: Self.base64(start), range_end: end, limit: "1", revision: revision.map(String.init),
                    count_only: true
                )
                let response: RangeResponse = try await call("/v3/kv/range", request)
                omitted = Int(clamping: response.count?.value ?? 0)
                break
            }
            let request = RangeRequest(
                key: Self.base64(start),
                range_end: end,
                limit: String(min(limit, room)),
                revision: revision.map(String.init)
            )
            let response: RangeResponse
            do {
                response = try await call("/v3/kv/range", request)
            } catch let error as FleetError where error.code == .tooLarge && limit > 1 {
                // A page of large values can be over the largest answer read: ask for fewer keys at a time.
                limit /= 2
                logger.debug("etcd listing page failed; asking for fewer keys", metadata: ["error": "\(error)"])
                continue
            }
            // Later pages read at the first page's revision, so the listing is one consistent snapshot.
            let pageRevision = revision ?? response.header?.revision?.value ?? 0
            revision = pageRevision
            let page = try (response.kvs ?? []).map { try $0.keyValue() }
            values += page.map(\.value)
            bytes += page.reduce(0) { $0 + $1.value.value.count }
            guard response.more == true, let last = page.last else { break }
            start = last.keyBytes + [0]
        }
        return FleetListing(values: values, revision: revision ?? 0, omitted: omitted)
    }

    public func watch(prefix: String, fromRevision revision: Int64) -> AsyncThrowingStream<[FleetChange], any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await self.streamWatch(prefix: prefix, from: revision, into: continuation)
                    continuation.finish(throwing: FleetError(.unavailable, "etcd closed the watch stream"))
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    @discardableResult
    public func delete(key: String) async throws -> Bool {
        let response: DeleteRangeResponse = try await call(
            "/v3/kv/deleterange",
            DeleteRangeRequest(key: Self.base64(Array(key.utf8)))
        )
        return (response.deleted?.value ?? 0) > 0
    }

    public func checkHealth() async throws {
        let _: EmptyResponse = try await call("/v3/maintenance/status", EmptyRequest())
    }

    public func shutdown() async throws {
        let client = clientState.withLock { state -> HTTPClient? in
            defer { state = .shutDown }
            if case .running(let client) = state { return client }
            return nil
        }
        try await client?.shutdown()
    }

    private func httpClient() throws -> HTTPClient {
        try clientState.withLock { state in
            switch state {
            case .idle:
                let client = HTTPClient(
                    eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                    configuration: httpConfiguration
                )
                state = .running(client)
                return client
            case .running(let client):
                return client
            case .shutDown:
                throw FleetError(.unavailable, "the etcd store has been shut down")
            }
        }
    }

    // MARK: Requests

    private var endpoint: String { endpoints[current.withLock { $0 } % endpoints.count] }

    /// After a failure to reach `failed`, moves on to the next endpoint (unless another request already did).
    private func rotate(from failed: String) {
        guard endpoints.count > 1 else { return }
        current.withLock { index in
            if endpoints[index % endpoints.count] == failed { index = (index + 1) % endpoints.count }
        }
    }

    /// Sends one unary request and decodes its answer, authenticating first when credentials are set, and once
    /// more if the token was refused (they expire).
    private func call<Request: Encodable, Response: Decodable>(
        _ path: String,
        _ request: Request
    ) async throws -> Response {
        let body = try JSONEncoder().encode(request)
        var renewed = false
        while true {
            let token = try await currentToken()
            do {
                let bytes = try await send(path, body: Array(body), token: token)
                return try Self.decode(Response.self, from: bytes, what: path)
            } catch let error as FleetError where error.code == .unauthenticated && credentials != nil && !renewed {
                renewed = true
                self.token.withLock { if $0 == token { $0 = nil } }
            }
        }
    }

    private func currentToken() async throws -> String? {
        guard let credentials else { return nil }
        if let token = token.withLock({ $0 }) { return token }
        let body = try JSONEncoder().encode(AuthenticateRequest(name: credentials.user, password: credentials.password))
        let bytes: [UInt8]
        do {
            bytes = try await send("/v3/auth/authenticate", body: Array(body), token: nil)
        } catch let error as FleetError where error.code == .rejected {
            // etcd answers a wrong password with InvalidArgument; say what it is.
            throw FleetError(.unauthenticated, "etcd refused user \"\(credentials.user)\": \(error.message)")
        }
        let response = try Self.decode(AuthenticateResponse.self, from: bytes, what: "/v3/auth/authenticate")
        guard let token = response.token, !token.isEmpty else {
            throw FleetError(.unauthenticated, "etcd gave no token for user \"\(credentials.user)\"")
        }
        self.token.withLock { $0 = token }
        return token
    }

    private func makeRequest(_ endpoint: String, _ path: String, body: [UInt8], token: String?) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        if let token { request.headers.add(name: "Authorization", value: token) }
        request.body = .bytes(body)
        return request
    }

    private func send(_ path: String, body: [UInt8], token: String?) async throws -> [UInt8] {
        let endpoint = self.endpoint
        let request = makeRequest(endpoint, path, body: body, token: token)
        let response: HTTPClientResponse
        let bytes: [UInt8]
        do {
            response = try await httpClient().execute(request, timeout: .nanoseconds(requestTimeout.nanosecondsClamped))
            bytes = Array(try await response.body.collect(upTo: Self.maxResponseBytes).readableBytesView)
        } catch is NIOTooManyBytesError {
            throw FleetError(.tooLarge, "etcd at \(endpoint) answered \(path) with over 64 MiB")
        } catch {
            try Task.checkCancellation()
            rotate(from: endpoint)
            throw FleetError(.unavailable, "etcd at \(endpoint) unreachable: \(error)")
        }
        guard response.status == .ok else {
            throw failure(status: response.status, body: bytes, endpoint: endpoint, path: path)
        }
        return bytes
    }

    /// The error an etcd error answer stands for, by its gRPC code.
    private func failure(status: HTTPResponseStatus, body: [UInt8], endpoint: String, path: String) -> FleetError {
        let answer = try? JSONDecoder().decode(GatewayError.self, from: Data(body))
        let message = answer?.message ?? answer?.error ?? "HTTP \(status.code)"
        let detail = "etcd at \(endpoint) answered \(path) with: \(message)"
        switch answer?.code {
        case 16?:  // Unauthenticated: missing or expired token
            return FleetError(.unauthenticated, detail)
        case 3? where message.contains("user name is empty") || message.contains("invalid auth token"):
            return FleetError(.unauthenticated, detail + " (set --fleet-user and --fleet-password)")
        case 11?:  // OutOfRange: the revision was compacted
            return FleetError(.compacted, detail)
        // Canceled, DeadlineExceeded, ResourceExhausted, Aborted, Internal, Unavailable: worth retrying.
        case 1?, 4?, 8?, 10?, 13?, 14?:
            return FleetError(.unavailable, detail)
        case nil where status.code >= 500:
            return FleetError(.unavailable, detail)
        default:
            return FleetError(.rejected, detail)
        }
    }

    // MARK: Watch

    private func streamWatch(
        prefix: String,
        from revision: Int64,
        into continuation: AsyncThrowingStream<[FleetChange], any Error>.Continuation
    ) async throws {
        let prefixBytes = Array(prefix.utf8)
        let body = try JSONEncoder().encode(
            WatchRequest(
                create_request: .init(
                    key: Self.base64(prefixBytes),
                    range_end: Self.base64(rangeEnd(forPrefix: prefixBytes)),
                    start_revision: String(revision)
                )
            )
        )
        let token = try await currentToken()
        let endpoint = self.endpoint
        let response: HTTPClientResponse
        do {
            response = try await httpClient().execute(
                makeRequest(endpoint, "/v3/watch", body: Array(body), token: token),
                deadline: .distantFuture
            )
        } catch {
            try Task.checkCancellation()
            rotate(from: endpoint)
            throw FleetError(.unavailable, "etcd at \(endpoint) unreachable: \(error)")
        }
        guard response.status == .ok else {
            let bytes = (try? await response.body.collect(upTo: Self.maxResponseBytes)).map {
                Array($0.readableBytesView)
            }
            throw failure(status: response.status, body: bytes ?? [], endpoint: endpoint, path: "/v3/watch")
        }
        // The gateway writes one JSON object per line: {"result":{...}} or {"error":{...}}.
        var pending: [UInt8] = []
        do {
            for try await chunk in response.body {
                pending += chunk.readableBytesView
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    if let changes = try watchChanges(inLine: line, endpoint: endpoint), !changes.isEmpty {
                        continuation.yield(changes)
                    }
                }
                guard pending.count <= Self.maxResponseBytes else {
                    throw FleetError(.malformedResponse, "etcd at \(endpoint) sent a watch message over 64 MiB")
                }
            }
        } catch let error as FleetError {
            throw error
        } catch {
            try Task.checkCancellation()
            throw FleetError(.unavailable, "etcd watch at \(endpoint) lost: \(error)")
        }
    }

    /// The changes in one line of a watch stream; `nil` for a line without any (creation, progress).
    private func watchChanges(inLine line: [UInt8], endpoint: String) throws -> [FleetChange]? {
        guard line.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") }) else { return nil }
        let message = try Self.decode(WatchMessage.self, from: line, what: "/v3/watch")
        if let error = message.error {
            let code = error.grpc_code ?? error.code
            let detail = "etcd watch at \(endpoint) failed: \(error.message ?? "code \(code ?? -1)")"
            if code == 16 {
                token.withLock { $0 = nil }
                throw FleetError(.unauthenticated, detail)
            }
            throw FleetError(code == 11 ? .compacted : .unavailable, detail)
        }
        guard let result = message.result else { return nil }
        if result.canceled == true {
            if let compacted = result.compact_revision?.value, compacted > 0 {
                throw FleetError(.compacted, "etcd compacted the watched revisions up to \(compacted)")
            }
            throw FleetError(.unavailable, "etcd cancelled the watch: \(result.cancel_reason ?? "no reason given")")
        }
        return try (result.events ?? []).map { event in
            let kv = try event.kv.keyValue()
            switch event.type {
            case "DELETE": return .delete(key: kv.value.key, revision: kv.value.modRevision)
            default: return .put(kv.value)
            }
        }
    }

    // MARK: Encoding

    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw FleetError(.malformedResponse, "etcd's answer to \(what) is not what etcd sends: \(error)")
        }
    }
}

// MARK: - The JSON gateway's messages
// Field names are etcd's (snake case, as the gateway writes them); 64-bit integers travel as strings.

/// A 64-bit integer the gateway writes as a string (`"12"`), and accepts either way.
struct EtcdInt: Decodable, Hashable {
    let value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self) {
            value = number
        } else if let number = Int64(try container.decode(String.self)) {
            value = number
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a 64-bit integer")
        }
    }
}

private struct EmptyRequest: Encodable {}
private struct EmptyResponse: Decodable {}

private struct GatewayError: Decodable {
    var error: String?
    var code: Int?
    var grpc_code: Int?
    var message: String?
}

private struct ResponseHeader: Decodable {
    var revision: EtcdInt?
}

private struct EtcdKeyValue: Decodable {
    var key: String
    var value: String?
    var mod_revision: EtcdInt?
    var lease: EtcdInt?

    func keyValue() throws -> (keyBytes: [UInt8], value: FleetKeyValue) {
        guard let keyBytes = Data(base64Encoded: key).map(Array.init) else {
            throw FleetError(.malformedResponse, "etcd sent a key that is not base64")
        }
        guard let valueBytes = Data(base64Encoded: value ?? "").map(Array.init) else {
            throw FleetError(.malformedResponse, "etcd sent a value that is not base64")
        }
        let stored = FleetKeyValue(
            key: String(decoding: keyBytes, as: UTF8.self),
            value: valueBytes,
            modRevision: mod_revision?.value ?? 0,
            lease: lease?.value ?? 0
        )
        return (keyBytes, stored)
    }
}

private struct AuthenticateRequest: Encodable {
    var name: String
    var password: String
}

private struct AuthenticateResponse: Decodable {
    var token: String?
}

private struct LeaseGrantRequest: Encodable {
    var TTL: String
}

private struct LeaseGrantResponse: Decodable {
    var ID: EtcdInt?
    var error: String?
}

private struct PutRequest: Encodable {
    var key: String
    var value: String
    var lease: String?
}

private struct RangeRequest: Encodable {
    var key: String
    var range_end: String
    var limit: String
    var revision: String?
    var count_only: Bool?
}

private struct RangeResponse: Decodable {
    var header: ResponseHeader?
    var kvs: [EtcdKeyValue]?
    var more: Bool?
    var count: EtcdInt?
}

private struct DeleteRangeRequest: Encodable {
    var key: String
}

private struct DeleteRangeResponse: Decodable {
    /// How many keys went; absent when none did.
    var deleted: EtcdInt?
}

private struct WatchRequest: Encodable {
    struct Create: Encodable {
        var key: String
        var range_end: String
        var start_revision: String
    }

    var create_request: Create
}

private struct WatchMessage: Decodable {
    struct Result: Decodable {
        var created: Bool?
        var canceled: Bool?
        var compact_revision: EtcdInt?
        var cancel_reason: String?
        var events: [Event]?
    }

    struct Event: Decodable {
        var type: String?
        var kv: EtcdKeyValue
    }

    var result: Result?
    var error: GatewayError?
}
