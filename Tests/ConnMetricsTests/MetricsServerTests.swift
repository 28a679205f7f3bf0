import ConnCore
import ConnMetrics
import Logging
import ServiceLifecycle
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The HTTP endpoint on an ephemeral port of 127.0.0.1, spoken to over plain sockets.
///
/// Serialized: the client blocks on sockets, and the connection-limit cases must not share the machine's few
/// cooperative threads with each other.
@Suite("Metrics server", .serialized)
struct MetricsServerTests {
    static var quietLogger: Logger {
        var logger = Logger(label: "conntrackr.metrics.test")
        logger.logLevel = .critical
        return logger
    }

    static func configuration(
        maxConnections: Int = 64,
        maxConnectionsPerClient: Int = 64,
        maxConnectionAge: Duration = .seconds(60),
        maxRequestsPerConnection: Int = 100,
        idleTimeout: Duration = .seconds(30),
        shutdownGracePeriod: Duration = .seconds(1)
    ) -> MetricsServer.Configuration {
        MetricsServer.Configuration(
            endpoint: MetricsEndpoint(host: "127.0.0.1", port: 0),
            maxConnections: maxConnections,
            maxConnectionsPerClient: maxConnectionsPerClient,
            maxConnectionAge: maxConnectionAge,
            maxRequestsPerConnection: maxRequestsPerConnection,
            idleTimeout: idleTimeout,
            maxRequestHeadBytes: 4096,
            maxRequestBodyBytes: 1024,
            shutdownGracePeriod: shutdownGracePeriod
        )
    }

    /// Runs a server for `body`, then cancels it and waits until it has stopped.
    static func withServer(
        _ configuration: MetricsServer.Configuration = configuration(),
        sink: PrometheusMetricsSink = PrometheusMetricsSink(version: "test"),
        _ body: (_ port: Int) async throws -> Void
    ) async throws {
        let server = MetricsServer(configuration: configuration, sink: sink, logger: quietLogger)
        let endpoint = try await server.bind()
        #expect(endpoint.host == "127.0.0.1")
        #expect(endpoint.port != 0)
        let running = Task { try await server.run() }
        do {
            try await body(endpoint.port)
        } catch {
            running.cancel()
            _ = await running.result
            throw error
        }
        running.cancel()
        try await running.value
    }

    @Test func servesTheExpositionAndHealthOnOneKeepAliveConnection() async throws {
        let sink = PrometheusMetricsSink(version: "9.9.9")
        let scrapes = LockedBox(0)
        sink.addScrapeHook(name: "counting") { _ in scrapes.mutate { $0 += 1 } }
        sink.increment(.newConnections, by: 42)
        try await Self.withServer(sink: sink) { port in
            let connection = try TestConnection(port: port)
            let metrics = try connection.request("GET", "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.header("content-type") == "text/plain; version=0.0.4; charset=utf-8")
            #expect(metrics.header("connection") == nil)
            let exposition = try Exposition(metrics.body)
            #expect(exposition.value("conntrackr_new_connections_total") == 42)
            #expect(exposition.value("conntrackr_build_info", ["version": "9.9.9"]) == 1)
            #expect(scrapes.get() == 1)

            let down = try connection.request("GET", "/healthz")
            #expect(down.status == 503)
            #expect(down.body == "capture not running\n")
            sink.set(.captureRunning, to: 1)
            let up = try connection.request("GET", "/healthz")
            #expect(up.status == 200)
            #expect(up.body == "ok\n")

            let withQuery = try connection.request("GET", "/metrics?name[]=conntrackr_frames_total")
            #expect(withQuery.status == 200)
            #expect(scrapes.get() == 2)
        }
    }

    @Test func healthFollowsTheGivenClosure() async throws {
        let healthy = LockedBox(false)
        let sink = PrometheusMetricsSink(version: "test")
        let server = MetricsServer(
            configuration: Self.configuration(),
            sink: sink,
            isHealthy: { healthy.get() },
            logger: Self.quietLogger
        )
        let port = try await server.bind().port
        let running = Task { try await server.run() }
        defer { running.cancel() }
        #expect(try TestConnection(port: port).request("GET", "/healthz").status == 503)
        healthy.set(true)
        #expect(try TestConnection(port: port).request("GET", "/healthz").status == 200)
        running.cancel()
        try await running.value
    }

    @Test(arguments: [
        ("GET", "/", 404),
        ("GET", "/metricsx", 404),
        ("GET", "/metrics/", 404),
        ("POST", "/nothing", 404),
        ("POST", "/metrics", 405),
        ("PUT", "/healthz", 405),
        ("DELETE", "/metrics", 405),
    ])
    func otherPathsAndMethodsAreRefused(method: String, path: String, status: Int) async throws {
        try await Self.withServer { port in
            let connection = try TestConnection(port: port)
            let response = try connection.request(method, path)
            #expect(response.status == status)
            if status == 405 { #expect(response.header("allow") == "GET") }
            // The connection stays usable.
            #expect(try connection.request("GET", "/metrics").status == 200)
        }
    }

    @Test func headGetsAnEmpty405() async throws {
        try await Self.withServer { port in
            let connection = try TestConnection(port: port)
            let response = try connection.request("HEAD", "/metrics")
            #expect(response.status == 405)
            #expect(response.header("content-length") == "0")
            #expect(try connection.request("GET", "/healthz").status == 503)
        }
    }

    @Test(arguments: [
        ("oversized header", ["X-Padding: " + String(repeating: "a", count: 5000)]),
        ("too many headers", (0..<200).map { "X-Header-\($0): 1" }),
    ])
    func oversizedHeadsGet431AndAreClosed(_ name: String, headers: [String]) async throws {
        try await Self.withServer { port in
            let connection = try TestConnection(port: port)
            let response = try connection.request("GET", "/metrics", headers: headers)
            #expect(response.status == 431)
            #expect(connection.isClosedByPeer())
        }
    }

    @Test func anOversizedRequestLineGets431() async throws {
        try await Self.withServer { port in
            let connection = try TestConnection(port: port)
            let response = try connection.request("GET", "/" + String(repeating: "m", count: 100_000))
            #expect(response.status == 431)
            #expect(connection.isClosedByPeer())
        }
    }

    @Test func bodiesOverTheLimitGet413() async throws {
        try await Self.withServer { port in
            // Declared too long: refused before any of it is read.
            let declared = try TestConnection(port: port)
            #expect(try declared.request("GET", "/metrics", headers: ["Content-Length: 5000"]).status == 413)
            #expect(declared.isClosedByPeer())

            // Chunked, so only counting the bytes finds it.
            let chunked = try TestConnection(port: port)
            chunked.write("POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in 0..<3 { chunked.write("200\r\n" + String(repeating: "b", count: 512) + "\r\n") }
            #expect(try chunked.readResponse().status == 413)
            #expect(chunked.isClosedByPeer())

            // A small body is fine (and still a 405 for POST).
            let small = try TestConnection(port: port)
            #expect(try small.request("POST", "/metrics", headers: ["Content-Length: 0"]).status == 405)
        }
    }

    @Test func garbageGets400() async throws {
        try await Self.withServer { port in
            let connection = try TestConnection(port: port)
            connection.write("\u{1}\u{2}NOT HTTP\r\n\r\n")
            #expect(try connection.readResponse().status == 400)
            #expect(connection.isClosedByPeer())
        }
    }

    /// Issue 14: 64 keep-alive connections re-sending a request every 20 s used to hold every slot for ever, and
    /// `/healthz` got no answer. Now a client holding connections evicts its own beyond its share, and the probe,
    /// from another address, is answered at once.
    @Test func aClientHoldingConnectionsCannotStarveTheProbe() async throws {
        try await Self.withServer(Self.configuration(maxConnections: 64, maxConnectionsPerClient: 8)) { port in
            var held: [TestConnection] = []
            for _ in 0..<64 {
                let connection = try TestConnection(port: port, source: "127.0.0.2")
                #expect(try connection.request("GET", "/healthz").status == 503)
                held.append(connection)
            }
            // The 56 that waited longest for their next request were closed; the last 8 are open.
            #expect(held.prefix(56).allSatisfy { $0.isClosedByPeer() })
            for connection in held.suffix(8) { #expect(try connection.request("GET", "/healthz").status == 503) }
            let probe = try TestConnection(port: port, source: "127.0.0.1")
            #expect(try probe.request("GET", "/healthz").status == 503)
        }
    }

    /// A full endpoint admits a new client by closing the connection that has waited longest for a request.
    @Test func aFullEndpointClosesTheLongestWaitingConnection() async throws {
        try await Self.withServer(Self.configuration(maxConnections: 3, maxConnectionsPerClient: 3)) { port in
            let clients = try (1...3).map { try TestConnection(port: port, source: "127.0.1.\($0)") }
            for client in clients { #expect(try client.request("GET", "/healthz").status == 503) }
            // The second and third ask again: the first has waited longest.
            #expect(try clients[1].request("GET", "/healthz").status == 503)
            #expect(try clients[2].request("GET", "/healthz").status == 503)
            let newcomer = try TestConnection(port: port, source: "127.0.1.4")
            #expect(try newcomer.request("GET", "/healthz").status == 503)
            #expect(clients[0].isClosedByPeer())
            #expect(try clients[1].request("GET", "/healthz").status == 503)
        }
    }

    @Test func aConnectionPastItsRequestOrAgeLimitIsClosedAfterItsResponse() async throws {
        try await Self.withServer(Self.configuration(maxRequestsPerConnection: 3)) { port in
            let connection = try TestConnection(port: port)
            for _ in 1...2 { #expect(try connection.request("GET", "/healthz").header("connection") == nil) }
            let last = try connection.request("GET", "/healthz")
            #expect(last.status == 503)
            #expect(last.header("connection") == "close")
            #expect(connection.isClosedByPeer())
        }
        try await Self.withServer(Self.configuration(maxConnectionAge: .milliseconds(200))) { port in
            let connection = try TestConnection(port: port)
            #expect(try connection.request("GET", "/healthz").header("connection") == nil)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try connection.request("GET", "/healthz").header("connection") == "close")
            #expect(connection.isClosedByPeer())
        }
    }

    @Test func idleAndTricklingConnectionsAreClosed() async throws {
        try await Self.withServer(Self.configuration(idleTimeout: .milliseconds(300))) { port in
            let silent = try TestConnection(port: port)
            let trickling = try TestConnection(port: port)
            trickling.write("GET /metrics HTTP/1.1\r\n")
            let afterResponse = try TestConnection(port: port)
            #expect(try afterResponse.request("GET", "/healthz").status == 503)
            let clock = ContinuousClock()
            let started = clock.now
            #expect(silent.isClosedByPeer())
            #expect(trickling.isClosedByPeer())
            #expect(afterResponse.isClosedByPeer())
            #expect(clock.now - started < .seconds(25), "closed by the 300 ms idle timeout, not the default 30 s")
        }
    }

    @Test func gracefulShutdownClosesTheListenerAndTheConnections() async throws {
        // A long grace period: closing idle connections at once is told apart from waiting it out.
        let server = MetricsServer(
            configuration: Self.configuration(shutdownGracePeriod: .seconds(60)),
            sink: PrometheusMetricsSink(version: "test"),
            logger: Self.quietLogger
        )
        let port = try await server.bind().port
        let group = ServiceGroup(services: [server], logger: Self.quietLogger)
        let running = Task { try await group.run() }
        let idle = try TestConnection(port: port)
        #expect(try idle.request("GET", "/healthz").status == 503)

        await group.triggerGracefulShutdown()
        let clock = ContinuousClock()
        let started = clock.now
        try await running.value
        #expect(clock.now - started < .seconds(30), "idle connections closed at once, not after the 60 s grace")
        #expect(idle.isClosedByPeer())
        #expect(throws: TestConnection.Failure.self) { try TestConnection(port: port) }
    }

    @Test func aScrapeInProgressAtShutdownIsAnsweredThenClosed() async throws {
        let sink = PrometheusMetricsSink(version: "test")
        let hookStarted = LockedBox(false)
        let hookReleased = LockedBox(false)
        sink.addScrapeHook(name: "slow map") { _ in
            hookStarted.set(true)
            // Held until the test has seen the listener close, so the scrape is certainly in flight at shutdown.
            for _ in 0..<500 where !hookReleased.get() { usleep(10_000) }
        }
        let server = MetricsServer(configuration: Self.configuration(), sink: sink, logger: Self.quietLogger)
        let port = try await server.bind().port
        let group = ServiceGroup(services: [server], logger: Self.quietLogger)
        let running = Task { try await group.run() }
        let scraping = try TestConnection(port: port)
        scraping.write("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in 0..<500 where !hookStarted.get() { try await Task.sleep(for: .milliseconds(10)) }
        #expect(hookStarted.get())

        await group.triggerGracefulShutdown()
        var listening = true
        for _ in 0..<500 where listening {
            listening = (try? TestConnection(port: port)) != nil
            if listening { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(!listening)
        hookReleased.set(true)

        // Answered in full, then closed (with `Connection: close` when the request to quiesce came first).
        let response = try scraping.readResponse()
        #expect(response.status == 200)
        #expect(try Exposition(response.body).value("conntrackr_port_scans_total") == 0)
        #expect(scraping.isClosedByPeer())
        try await running.value
    }

    @Test func aPortInUseIsAOneLineErrorNamingTheAddress() async throws {
        try await Self.withServer { port in
            let second = MetricsServer(
                configuration: MetricsServer.Configuration(endpoint: MetricsEndpoint(host: "127.0.0.1", port: port)),
                sink: PrometheusMetricsSink(version: "test"),
                logger: Self.quietLogger
            )
            let error = await #expect(throws: ConntrackrError.self) { try await second.run() }
            #expect(error?.message == "cannot serve metrics on 127.0.0.1:\(port): address already in use")
        }
    }

    @Test func anAddressOfAnotherHostIsAOneLineError() async throws {
        let server = MetricsServer(
            configuration: MetricsServer.Configuration(endpoint: MetricsEndpoint(host: "203.0.113.7", port: 9542)),
            sink: PrometheusMetricsSink(version: "test"),
            logger: Self.quietLogger
        )
        let error = await #expect(throws: ConntrackrError.self) { try await server.bind() }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message == "cannot serve metrics on 203.0.113.7:9542: cannot assign requested address")
    }

    @Test func bindsToIPv6Loopback() async throws {
        let server = MetricsServer(
            configuration: MetricsServer.Configuration(endpoint: MetricsEndpoint(host: "::1", port: 0)),
            sink: PrometheusMetricsSink(version: "test"),
            logger: Self.quietLogger
        )
        let endpoint = try await server.bind()
        #expect(endpoint.host == "::1")
        #expect(endpoint.port != 0)
        #expect(endpoint.description == "[::1]:\(endpoint.port)")
        let running = Task { try await server.run() }
        running.cancel()
        try await running.value
    }

    @Test func aServerRunsOnce() async throws {
        let server = MetricsServer(
            configuration: Self.configuration(),
            sink: PrometheusMetricsSink(version: "test"),
            logger: Self.quietLogger
        )
        let running = Task { try await server.run() }
        try await Task.sleep(for: .milliseconds(100))
        await #expect(throws: ConntrackrError.self) { try await server.run() }
        running.cancel()
        try await running.value
    }
}
