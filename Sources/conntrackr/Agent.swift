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
        let pipeline = ConnectionPipeline(
            configuration: settings.pipelineConfiguration,
            events: writer,
            metrics: metrics,
            logger: logger
        )
        let source: any PacketSource
        switch settings.source {
        case .pcap:
            source = PcapLiveSource(
                configuration: .init(
                    interface: interface,
                    destinations: settings.allDestinations ? nil : HostNetwork.addresses()
                ),
                logger: logger
            )
        case .xdp:
            throw ConntrackrError(.invalidConfiguration, "--source xdp is not available in this build")
        }
        guard settings.block == .none else {
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
        return Agent(writer: writer, group: ServiceGroup(configuration: configuration), cleanups: [])
    }

    func run() async throws {
        let cleanups = self.cleanups
        // The group shuts down gracefully on the first SIGINT or SIGTERM; a second one ends the agent at once,
        // after undoing what it set up in the kernel.
        let impatience = Task {
            var seen = 0
            for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                seen += 1
                guard seen >= 2 else { continue }
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
