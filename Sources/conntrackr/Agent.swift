import ConnBlock
import ConnCapture
import ConnCore
import ConnFleet
import ConnMetrics
import ConnXDP
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

    /// The second phase of start-up, unprivileged: output, pipeline, metrics and services around `parts`.
    static func assemble(parts: PrivilegedParts, settings: AgentSettings, configFile: String?, logger: Logger) async throws
        -> Agent
    {
        let metrics = PrometheusMetricsSink(version: BuildInfo.version)
        // Live output must never stall capture: a slow reader loses events (counted), not packets.
        let writer = EventWriter(format: settings.format, policy: .dropWhenBehind(maxQueuedBytes: 8 << 20))
        metrics.addScrapeHook(name: "event writer") { scrape in
            scrape.setTotal(.eventsDropped, to: UInt64(writer.droppedEvents))
        }
        // The unit counted is the unit blocked: the detector and the controller share one.
        let units = SourceUnits(ipv6PrefixLength: settings.ipv6BlockPrefix, allowlist: parts.allowlist)
        let blocking = parts.blocker.map {
            BlockController(
                blocker: $0, policy: settings.blockPolicy, allowlist: parts.allowlist, metrics: metrics, units: units
            )
        }
        if let blocking {
            metrics.addScrapeHook(name: "blocklist") { scrape in
                scrape.set(.blockedSources, to: try blocking.blockedCount())
            }
        }
        if let xdpStatistics = parts.xdpStatistics {
            metrics.addScrapeHook(name: "xdp statistics") { scrape in
                guard let statistics = try xdpStatistics() else { return }
                scrape.setTotal(.framesProcessed, to: statistics.frames)
                scrape.setTotal(.tinyFragmentsDropped, to: statistics.tinyFragments)
                scrape.setTotal(.longHeaderChainsDropped, to: statistics.longHeaderChains)
                scrape.setBlockedPacketsTotal(statistics.dropped)
            }
        }
        if let kernelScanStatistics = parts.kernelScanStatistics {
            metrics.addScrapeHook(name: "kernel scan rule") { scrape in
                guard let statistics = try kernelScanStatistics() else { return }
                scrape.setTotal(.kernelScanPairsInserted, to: statistics.pairsInserted)
            }
        }
        let pipeline = ConnectionPipeline(
            configuration: settings.pipelineConfiguration,
            events: FilteringEventSink.wrapping(writer, kinds: settings.events),
            blocking: blocking,
            metrics: metrics,
            logger: logger,
            kernelEnforces: parts.kernelScanStatistics != nil,
            units: units,
            // Capture never waits for the blocker (an nftables transaction): blocks are applied on a thread of
            // their own.
            blockExecution: .dedicatedThread(queueCapacity: 1024)
        )
        // Fleet mode registers for local blocks when made, so it comes before capture starts.
        var fleet: FleetService?
        if let fleetConfiguration = settings.fleet {
            guard let blocking else {
                throw ConntrackrError(.invalidConfiguration, "--fleet-etcd needs --block xdp or --block nftables")
            }
            // It applies the fleet's blocks through `blocking` and posts their events to the pipeline's inbox; etcd
            // being away only delays sharing, so it never stops the group.
            let inbox = pipeline.inbox
            fleet = try FleetService(
                configuration: fleetConfiguration, controller: blocking, events: { inbox.post($0) }, metrics: metrics,
                logger: logger
            )
        }
        let capture = CaptureService(source: parts.source, pipeline: pipeline, logger: logger)
        metrics.addScrapeHook(name: "capture state") { scrape in
            scrape.set(.captureRunning, to: capture.isRunning ? 1 : 0)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: capture,
                successTerminationBehavior: .gracefullyShutdownGroup,
                failureTerminationBehavior: .gracefullyShutdownGroup
            )
        ]
        if let fleet { services.append(.init(service: fleet)) }
        // The allowlist changes on SIGHUP and when the host's addresses change: one keeper applies both in turn.
        let allowlist = AllowlistKeeper(allowlist: parts.allowlist, blocking: blocking, units: units)
        let follower = try AddressFollower(
            source: parts.source, followsDestinations: !settings.allDestinations, allowlist: allowlist, logger: logger
        )
        let watcher = HostAddressWatcher(
            onFallback: { reason in
                logger.warning("address changes are polled every 2 s", metadata: ["reason": "\(reason)"])
            },
            onChange: { follower.addressesMayHaveChanged() }
        )
        services.append(.init(service: watcher))
        services.append(
            .init(service: AllowlistReloader(settings: settings, configFile: configFile, keeper: allowlist, logger: logger))
        )
        if case .endpoint(let endpoint) = settings.metricsAddress {
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
        return Agent(writer: writer, group: ServiceGroup(configuration: configuration), cleanups: parts.cleanups)
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

extension HostAllowlist {
    /// The allowlist sources the settings name, on top of loopback, this host's addresses and its gateways; in
    /// fleet mode, etcd's addresses (host names resolved now) and the fleet allowlist too.
    /// - Throws: ``ConnCore/ConntrackrError`` when an etcd endpoint's host does not resolve.
    init(settings: AgentSettings) throws(ConntrackrError) {
        self.init(
            allowed: settings.allow.compactMap { IPPrefix($0) },
            allowFiles: settings.allowFile.map { [$0] } ?? [],
            fleetInfrastructure: try settings.fleet?.etcd.endpointAddresses() ?? [],
            fleetAllowed: settings.fleetSettings.allowedPrefixes
        )
    }
}
