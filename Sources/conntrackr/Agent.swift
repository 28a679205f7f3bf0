import ConnBlock
import ConnCapture
import ConnCore
import ConnMetrics
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The running agent: its parts, composed from settings, and the service group that runs them.
struct Agent {
    let writer: EventWriter
    let group: ServiceGroup
    /// Cleanup that must run after the services stop (detaching, removing tables), in order.
    let cleanups: [@Sendable () -> Void]

    static func assemble(settings: AgentSettings, logger: Logger) async throws -> Agent {
        guard let interface = settings.interface ?? HostNetwork.defaultRouteInterface() else {
            throw ConntrackrError(.noSuchInterface, "no default route to pick an interface from: pass --interface")
        }
        let metrics = PrometheusMetricsSink(version: BuildInfo.version)
        let metricsAddress: MetricsAddress
        do {
            metricsAddress = try MetricsAddress(parsing: settings.metricsAddress)
        } catch {
            throw error
        }
        // Live output must never stall capture: a slow reader loses events (counted), not packets.
        let writer = EventWriter(format: settings.format, policy: .dropWhenBehind(maxQueuedBytes: 8 << 20))
        metrics.addScrapeHook(name: "event writer") { scrape in
            scrape.setTotal(.eventsDropped, to: UInt64(writer.droppedEvents))
        }
        var blocking: BlockController?
        var cleanups: [@Sendable () -> Void] = []
        if settings.block == .nftables {
            let allowlist = try HostAllowlist(
                allowed: settings.allow.compactMap { IPPrefix($0) },
                allowFiles: settings.allowFile.map { [$0] } ?? []
            ).build()
            let blocker = try NftablesBlocker()
            try blocker.createTable(allowing: allowlist)
            cleanups.append { try? blocker.removeTable() }
            blocking = BlockController(blocker: blocker, policy: settings.blockPolicy, allowlist: allowlist, metrics: metrics)
        }
        let pipeline = ConnectionPipeline(
            configuration: settings.pipelineConfiguration,
            events: writer,
            blocking: blocking,
            metrics: metrics,
            logger: logger
        )
        let source: any PacketSource
        switch settings.source {
        case .pcap:
            source = PcapLiveSource(
                configuration: .init(
                    interface: interface,
                    destinations: settings.allDestinations ? nil : try HostAddresses.current()
                ),
                logger: logger
            )
        case .xdp:
            throw ConntrackrError(.invalidConfiguration, "--source xdp is not available in this build")
        }
        guard settings.block != .xdp else {
            throw ConntrackrError(.invalidConfiguration, "--block \(settings.block) is not available in this build")
        }
        let capture = CaptureService(source: source, pipeline: pipeline, logger: logger)
        metrics.addScrapeHook(name: "capture state") { scrape in
            scrape.set(.captureRunning, to: capture.isRunning ? 1 : 0)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: capture, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
        ]
        if case .endpoint(let endpoint) = metricsAddress {
            let server = MetricsServer(
                configuration: .init(endpoint: endpoint),
                sink: metrics,
                isHealthy: { capture.isRunning },
                logger: logger
            )
            // Bind before capture starts, so a port in use fails the start-up with one line.
            _ = try await server.bind()
            services.append(.init(service: server))
        }
        var configuration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        configuration.maximumGracefulShutdownDuration = .seconds(5)
        return Agent(writer: writer, group: ServiceGroup(configuration: configuration), cleanups: cleanups)
    }

    func run() async throws {
        let cleanups = self.cleanups
        // The group shuts down gracefully on the first SIGINT or SIGTERM; a second one ends the agent at once,
        // after undoing what it set up in the kernel. Copies of one signal arrive together (a terminal's process
        // group, `timeout` forwarding to its child and its group), so only a signal half a second after the
        // first counts as a second one.
        let impatience = Task {
            var first: ContinuousClock.Instant?
            for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                guard let firstSignal = first else {
                    first = .now
                    continue
                }
                guard ContinuousClock.now - firstSignal >= .milliseconds(500) else { continue }
                for cleanup in cleanups { cleanup() }
                exit(130)
            }
        }
        defer { impatience.cancel() }
        try await group.run()
    }

    /// Flushes output and undoes what the agent set up in the kernel.
    func shutDown() {
        for cleanup in cleanups { cleanup() }
        writer.close()
    }
}
