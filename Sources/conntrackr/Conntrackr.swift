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

extension OutputFormat: ExpressibleByArgument {}
