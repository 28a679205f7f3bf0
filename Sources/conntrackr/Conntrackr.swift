public import ArgumentParser
import ConnCore
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The `conntrackr` command: composes the library's parts; it decides nothing the library could.
@main
struct Conntrackr: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conntrackr",
        abstract: "Watch inbound TCP connection attempts, detect port scans, and block scanners.",
        version: BuildInfo.version,
        subcommands: [RunCommand.self, ReplayCommand.self, BlocklistCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// Facts about this build, shown by `--version` and exported as `conntrackr_build_info`.
enum BuildInfo {
    static let version = "0.1.0"
}

/// Prints the one-line reason for a failure and exits with a non-zero status.
func exitWithFailure(_ error: any Error) -> Never {
    let message = (error as? ConntrackrError)?.message ?? "\(error)"
    var line = Array("conntrackr: \(message)\n".utf8)
    _ = line.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// How log records are written to standard error.
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

/// Sets up logging to standard error; events go to standard output.
func bootstrapLogging(level: Logger.Level, format: LogFormat = .text) {
    LoggingSystem.bootstrap { label in
        switch format {
        case .text:
            // Not swift-log's StreamLogHandler: it writes metadata unescaped, so a newline in an etcd key or a
            // prefix would forge a log line.
            var handler = TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        case .json:
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension OutputFormat: ExpressibleByArgument {}
