import ArgumentParser
import ConnCore

/// Flags shared by `run` and `replay`: the output format and the scan rule.
struct DetectionOptions: ParsableArguments {
    @Option(help: "Output format of events: text or json.")
    var format: OutputFormat = .text

    @Option(help: "A scan is more than this many distinct ports of one destination (1...\(ScanRule.maxPortThreshold)).")
    var scanPorts: Int = 3

    @Option(help: "The window, in seconds, in which those ports must be reached.")
    var scanWindow: Double = 60

    @Option(help: "The most (source, destination) pairs tracked at once; the least recently active are evicted.")
    var maxTrackedPairs: Int = 1_000_000

    @Option(help: "The most 4-tuples remembered to tell retransmissions from new connections.")
    var maxTrackedConnections: Int = 1_000_000

    @Option(help: "Log level on standard error: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        guard (1...ScanRule.maxPortThreshold).contains(scanPorts) else {
            throw ValidationError("--scan-ports must be between 1 and \(ScanRule.maxPortThreshold)")
        }
        guard scanWindow > 0, scanWindow <= 86_400 else {
            throw ValidationError("--scan-window must be more than 0 and at most 86400 seconds")
        }
        guard maxTrackedPairs > 0, maxTrackedConnections > 0 else {
            throw ValidationError("--max-tracked-pairs and --max-tracked-connections must be positive")
        }
    }

    var pipelineConfiguration: ConnectionPipeline.Configuration {
        ConnectionPipeline.Configuration(
            scanRule: ScanRule(
                portThreshold: scanPorts,
                window: .nanoseconds(Int64(scanWindow * 1e9)),
                maxTrackedPairs: maxTrackedPairs
            ),
            maxTrackedConnections: maxTrackedConnections
        )
    }
}

import Logging
