import ArgumentParser
import ConnCapture
import ConnCore
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `conntrackr run`: monitors this host until SIGINT or SIGTERM.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Monitor this host's inbound connection attempts until SIGINT or SIGTERM."
    )

    /// Where attempts are captured.
    enum SourceKind: String, ExpressibleByArgument, CaseIterable {
        case pcap
    }

    @Option(help: "The interface to watch (default: the one holding the default route; `any` for all).")
    var interface: String?

    @Option(help: "Capture with libpcap (pcap).")
    var source: SourceKind = .pcap

    @Flag(help: "Report attempts to any destination, not only to this host's own addresses.")
    var allDestinations = false

    @OptionGroup var detection: DetectionOptions

    func run() async throws {
        bootstrapLogging(level: detection.logLevel)
        signal(SIGPIPE, SIG_IGN)
        let logger = Logger(label: "conntrackr")
        guard let interface = interface ?? HostNetwork.defaultRouteInterface() else {
            exitWithFailure(
                ConntrackrError(.noSuchInterface, "no default route to pick an interface from: pass --interface")
            )
        }
        // Live output must never stall capture: a slow reader loses events (counted), not packets.
        let writer = EventWriter(format: detection.format, policy: .dropWhenBehind(maxQueuedBytes: 8 << 20))
        let pipeline = ConnectionPipeline(
            configuration: detection.pipelineConfiguration,
            events: writer,
            logger: logger
        )
        let packetSource = PcapLiveSource(
            configuration: .init(
                interface: interface,
                destinations: allDestinations ? nil : HostNetwork.addresses()
            ),
            logger: logger
        )
        let capture = CaptureService(source: packetSource, pipeline: pipeline, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: capture)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            writer.close()
            exitWithFailure(error)
        }
        writer.close()
    }
}
