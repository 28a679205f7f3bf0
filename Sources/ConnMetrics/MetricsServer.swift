import ConnCore
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The HTTP endpoint Prometheus scrapes, as a swift-service-lifecycle `Service`.
///
/// Served with SwiftNIO's HTTP/1.1 support. It answers only:
/// - `GET /metrics`: 200 with the text exposition of a ``PrometheusMetricsSink`` (scrape hooks run first);
/// - `GET /healthz`: 200 `ok` while capture runs, 503 otherwise.
///
/// Other paths get 404 and other methods on these paths 405. Request heads over
/// ``Configuration/maxRequestHeadBytes`` get 431, bodies over ``Configuration/maxRequestBodyBytes`` 413; both close
/// the connection. A connection with no complete request for ``Configuration/idleTimeout`` is closed, and one past
/// ``Configuration/maxConnectionAge`` or ``Configuration/maxRequestsPerConnection`` is closed after its response.
///
/// Holding connections open cannot starve it: at most ``Configuration/maxConnections`` are open at once, at most
/// ``Configuration/maxConnectionsPerClient`` from one address, and a new connection is never refused for that:
/// the one that has waited longest for a request (its client's own first) is closed to make room, so `/healthz` is
/// answered however many connections others hold.
///
/// ``run()`` serves until the service group's graceful shutdown (or cancellation): it closes the listening socket,
/// lets each connection finish the request it is on, and closes what is left after
/// ``Configuration/shutdownGracePeriod``. Call ``bind()`` first to fail early (port in use) or to learn the port
/// the kernel chose for port 0; otherwise ``run()`` binds.
public final class MetricsServer: Service, Sendable {
    /// Settings of the endpoint.
    public struct Configuration: Hashable, Sendable {
        /// Where to listen. Default `127.0.0.1:9542`.
        public var endpoint: MetricsEndpoint
        /// The most connections open at once. Default 64.
        public var maxConnections: Int
        /// The most connections open at once from one client address. Default 8.
        public var maxConnectionsPerClient: Int
        /// How long a connection may serve requests; the response after that closes it. Default 60 seconds.
        public var maxConnectionAge: Duration
        /// How many requests a connection may make; the last response closes it. Default 100.
        public var maxRequestsPerConnection: Int
        /// How long a connection may go without a complete request. Default 30 seconds.
        public var idleTimeout: Duration
        /// The largest request head (request line and headers). Default 8 KiB.
        public var maxRequestHeadBytes: Int
        /// The largest request body; these requests need none. Default 1 KiB.
        public var maxRequestBodyBytes: Int
        /// How long open connections get to finish on shutdown. Default 2 seconds.
        public var shutdownGracePeriod: Duration

        public init(
            endpoint: MetricsEndpoint = MetricsEndpoint(host: "127.0.0.1", port: 9542),
            maxConnections: Int = 64,
            maxConnectionsPerClient: Int = 8,
            maxConnectionAge: Duration = .seconds(60),
            maxRequestsPerConnection: Int = 100,
            idleTimeout: Duration = .seconds(30),
            maxRequestHeadBytes: Int = 8192,
            maxRequestBodyBytes: Int = 1024,
            shutdownGracePeriod: Duration = .seconds(2)
        ) {
            self.endpoint = endpoint
            self.maxConnections = maxConnections
            self.maxConnectionsPerClient = maxConnectionsPerClient
            self.maxConnectionAge = maxConnectionAge
            self.maxRequestsPerConnection = maxRequestsPerConnection
            self.idleTimeout = idleTimeout
            self.maxRequestHeadBytes = maxRequestHeadBytes
            self.maxRequestBodyBytes = maxRequestBodyBytes
            self.shutdownGracePeriod = shutdownGracePeriod
        }
    }

    private enum Lifecycle {
        case unbound
        case bound(EventLoopFuture<any Channel>)
        case running
        case finished
    }

    public let configuration: Configuration
    private let responder: MetricsResponder
    private let group: any EventLoopGroup
    private let connections: EndpointConnections
    private let lifecycle = Mutex(Lifecycle.unbound)
    private let logger: Logger

    /// Makes a server for `sink`'s metrics.
    /// - Parameters:
    ///   - isHealthy: whether capture is running, for `/healthz`; by default
    ///     ``PrometheusMetricsSink/isCaptureRunning``.
    ///   - eventLoopGroup: where connections are served; by default NIO's shared group.
    public convenience init(
        configuration: Configuration = Configuration(),
        sink: PrometheusMetricsSink,
        isHealthy: (@Sendable () -> Bool)? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "conntrackr.metrics")
    ) {
        self.init(
            configuration: configuration,
            exposition: { sink.exposition() },
            isHealthy: isHealthy ?? { sink.isCaptureRunning },
            eventLoopGroup: eventLoopGroup,
            logger: logger
        )
    }

    /// Makes a server that answers `/metrics` with whatever `exposition` renders (Prometheus text format 0.0.4).
    public init(
        configuration: Configuration = Configuration(),
        exposition: @escaping @Sendable () -> [UInt8],
        isHealthy: @escaping @Sendable () -> Bool,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "conntrackr.metrics")
    ) {
        self.configuration = configuration
        let connections = EndpointConnections(
            limit: configuration.maxConnections, perClientLimit: configuration.maxConnectionsPerClient
        )
        self.responder = MetricsResponder(
            exposition: exposition,
            isHealthy: isHealthy,
            maxBodyBytes: configuration.maxRequestBodyBytes,
            idleTimeout: TimeAmount(configuration.idleTimeout),
            maxConnectionAge: TimeAmount(configuration.maxConnectionAge),
            maxRequestsPerConnection: configuration.maxRequestsPerConnection,
            connections: connections,
            threadPool: .singleton
        )
        self.group = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.connections = connections
        self.logger = logger
    }

    /// Opens the listening socket, if ``run()`` has not, and returns the address it is bound to.
    ///
    /// The socket stays open until ``run()`` ends, so call ``run()`` after a successful `bind()` (a process that
    /// exits instead closes it anyway).
    /// - Throws: ``ConnCore/ConntrackrError`` naming the address when it cannot be bound (in use, not an address
    ///   of this host, unknown host name).
    @discardableResult
    public func bind() async throws -> MetricsEndpoint {
        let future = try lifecycle.withLock { lifecycle throws -> EventLoopFuture<any Channel> in
            switch lifecycle {
            case .unbound:
                let future = startBinding()
                lifecycle = .bound(future)
                return future
            case .bound(let future):
                return future
            case .running, .finished:
                throw ConntrackrError(
                    .invalidConfiguration,
                    "the metrics server at \(configuration.endpoint) has already run"
                )
            }
        }
        let channel = try await awaitBinding(future)
        return Self.endpoint(of: channel) ?? configuration.endpoint
    }

    /// Serves until graceful shutdown or cancellation, then closes every connection.
    public func run() async throws {
        let future = try lifecycle.withLock { lifecycle throws -> EventLoopFuture<any Channel> in
            switch lifecycle {
            case .unbound:
                lifecycle = .running
                return startBinding()
            case .bound(let future):
                lifecycle = .running
                return future
            case .running, .finished:
                throw ConntrackrError(
                    .invalidConfiguration,
                    "the metrics server at \(configuration.endpoint) runs only once"
                )
            }
        }
        defer { lifecycle.withLock { $0 = .finished } }
        let channel = try await awaitBinding(future)
        let address = Self.endpoint(of: channel) ?? configuration.endpoint
        logger.info("serving metrics", metadata: ["address": "\(address)"])

        try await withTaskCancellationOrGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onCancelOrGracefulShutdown: {
            channel.close(promise: nil)
        }
        let grace = Task.isCancelled ? Duration.zero : configuration.shutdownGracePeriod
        try await finish(connections.stopAdmitting(), within: grace, on: channel.eventLoop)
        logger.info("metrics endpoint stopped", metadata: ["address": "\(address)"])
    }

    /// Lets each open connection finish the request it is on, then closes what is left after `grace`.
    private func finish(_ connections: [any Channel], within grace: Duration, on loop: any EventLoop) async throws {
        guard !connections.isEmpty else { return }
        for connection in connections {
            // HTTPServerPipelineHandler closes an idle connection at once and a busy one after its response.
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = loop.scheduleTask(in: TimeAmount(grace)) {
            for connection in connections { connection.close(promise: nil) }
        }
        try await EventLoopFuture.andAllComplete(connections.map(\.closeFuture), on: loop).get()
        deadline.cancel()
    }

    // MARK: Binding

    private func startBinding() -> EventLoopFuture<any Channel> {
        let responder = self.responder
        let connections = self.connections
        let logger = self.logger
        let limits = Self.decoderLimits(maxHeadBytes: configuration.maxRequestHeadBytes)
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let client = channel.remoteAddress?.ipAddress ?? "unknown"
                switch connections.admit(channel, client: client) {
                case .refused:
                    // Shutting down. ServerBootstrap closes a child whose initializer fails.
                    return channel.eventLoop.makeFailedFuture(ShuttingDown())
                case .admitted(let evicted?):
                    logger.debug("metrics connection closed to make room", metadata: ["client": "\(client)"])
                    evicted.close(promise: nil)
                case .admitted(nil):
                    break
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(HTTPResponseEncoder())
                    try pipeline.addHandler(
                        ByteToMessageHandler(
                            HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: limits)
                        )
                    )
                    try pipeline.addHandler(HTTPServerPipelineHandler())
                    try pipeline.addHandler(MetricsHTTPHandler(responder: responder))
                }
            }
            .bind(host: configuration.endpoint.host, port: configuration.endpoint.port)
    }

    private func awaitBinding(_ future: EventLoopFuture<any Channel>) async throws -> any Channel {
        do {
            return try await future.get()
        } catch {
            throw ConntrackrError(
                .invalidConfiguration,
                "cannot serve metrics on \(configuration.endpoint): \(Self.reason(for: error))"
            )
        }
    }

    /// NIO's limits count every byte of a request head; the request line and each header share them.
    private static func decoderLimits(maxHeadBytes: Int) -> NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = maxHeadBytes
        limits.maxHeaderListSize = maxHeadBytes
        limits.maxHeaderFieldCount = 100
        return limits
    }

    private static func reason(for error: any Error) -> String {
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode)).lowercased()
        }
        if let error = error as? SocketAddressError, case .unknown = error {
            return "unknown host"
        }
        return "\(error)"
    }

    private static func endpoint(of channel: any Channel) -> MetricsEndpoint? {
        guard let address = channel.localAddress, let host = address.ipAddress, let port = address.port else {
            return nil
        }
        return MetricsEndpoint(host: host, port: port)
    }
}

/// Why a connection over the limit was closed.
private struct ShuttingDown: Error {}
