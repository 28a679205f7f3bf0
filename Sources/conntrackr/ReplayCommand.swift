import ArgumentParser
import ConnCapture
import ConnCore
import ConnLogging
import ConnSettings
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `conntrackr replay FILE`: the live pipeline over a capture file, with the file's own timestamps.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Analyse a pcap or pcapng file with the same pipeline as live capture, then exit.",
        discussion: AgentSettings.detection.helpText
    )

    @Argument(
        parsing: .allUnrecognized,
        help: ArgumentHelp("The capture file (pcap or pcapng; - reads standard input), and settings.", valueName: "file")
    )
    var arguments: [String] = []

    /// The settings and the capture file the arguments name.
    private func resolve() throws -> (AgentSettings, file: String) {
        do {
            let resolved = try AgentSettings.resolve(
                arguments: arguments, configurationFile: nil, table: AgentSettings.detection
            )
            guard resolved.positional.count == 1 else {
                throw ValidationError(resolved.positional.isEmpty ? "missing the capture file" : "replay reads one file")
            }
            return (resolved.0, resolved.positional[0])
        } catch let error as ConntrackrError {
            throw ValidationError(error.message)
        }
    }

    func validate() throws {
        _ = try resolve()
    }

    func run() throws {
        let (settings, file) = try resolve()
        bootstrapLogging(level: settings.logLevel)
        signal(SIGPIPE, SIG_IGN)
        let writer = EventWriter(format: settings.format, policy: .lossless)
        let pipeline = ConnectionPipeline(
            configuration: settings.pipelineConfiguration,
            events: FilteringEventSink.wrapping(writer, kinds: settings.events),
            units: SourceUnits(ipv6PrefixLength: settings.ipv6BlockPrefix)
        )
        let source = PcapFileSource(path: file)
        do {
            try source.run(into: pipeline)
        } catch {
            writer.close()
            exitWithFailure(error)
        }
        writer.close()
        let statistics = pipeline.statistics
        if statistics.malformedFrames > 0 {
            Logger(label: "conntrackr.replay").notice(
                "skipped malformed frames",
                metadata: ["count": "\(statistics.malformedFrames)", "frames": "\(statistics.frames)"]
            )
        }
    }
}
