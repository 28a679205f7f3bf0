import ArgumentParser
import ConnCapture
import ConnCore
import ConnMetrics
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

    @OptionGroup var options: RunOptions

    func run() async throws {
        let settings: AgentSettings
        do {
            settings = try options.resolve()
        } catch {
            exitWithFailure(error)
        }
        bootstrapLogging(level: settings.logLevel, format: settings.logFormat)
        signal(SIGPIPE, SIG_IGN)
        let logger = Logger(label: "conntrackr")
        let agent: Agent
        do {
            agent = try await Agent.assemble(settings: settings, configFile: options.config, logger: logger)
        } catch {
            exitWithFailure(error)
        }
        // Everything privileged is done (program attached, capture open, port bound): keep only what is still used.
        do {
            let kept = Capability.keptAfterStartUp(settings)
            try dropPrivileges(keeping: kept)
            logger.info(
                "privileges dropped",
                metadata: ["kept": "\(kept.map(\.name).sorted().joined(separator: ","))", "no_new_privs": "1"]
            )
        } catch {
            agent.shutDown()
            exitWithFailure(error)
        }
        let outcome: (any Error)?
        do {
            try await agent.run()
            outcome = nil
        } catch {
            outcome = error
        }
        agent.shutDown()
        if let outcome { exitWithFailure(outcome) }
    }
}
