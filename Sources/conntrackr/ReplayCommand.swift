import ArgumentParser
import ConnCapture
import ConnCore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `conntrackr replay FILE`: the live pipeline over a capture file, with the file's own timestamps.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Analyse a pcap or pcapng file with the same pipeline as live capture, then exit."
    )

    @Argument(help: "The capture file (pcap or pcapng).")
    var file: String

    @OptionGroup var detection: DetectionOptions

    func run() throws {
        bootstrapLogging(level: detection.logLevel)
        signal(SIGPIPE, SIG_IGN)
        let writer = EventWriter(format: detection.format, policy: .lossless)
        let pipeline = ConnectionPipeline(configuration: detection.pipelineConfiguration, events: writer)
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
