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
        do {
            try settings.validate()
        } catch let error as ConntrackrError {
            throw ValidationError(error.message)
        }
    }

    /// These flags as agent settings, so that `run` and `replay` share one validation and one pipeline setup.
    var settings: AgentSettings {
        var settings = AgentSettings()
        settings.format = format
        settings.scanPorts = scanPorts
        settings.scanWindow = scanWindow
        settings.maxTrackedPairs = maxTrackedPairs
        settings.maxTrackedConnections = maxTrackedConnections
        settings.logLevel = logLevel
        return settings
    }

    var pipelineConfiguration: ConnectionPipeline.Configuration { settings.pipelineConfiguration }
}

import Logging
