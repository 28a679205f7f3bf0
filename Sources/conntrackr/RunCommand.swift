import ArgumentParser
import ConnCore
import ConnLogging
import ConnSettings
import Dispatch
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// `conntrackr run`: monitors this host until SIGINT or SIGTERM.
///
/// Synchronous on purpose: the privileged part of start-up and the capability drop happen before any other thread
/// exists; only then does the agent start its services.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Monitor this host's inbound connection attempts until SIGINT or SIGTERM.",
        discussion: AgentSettings.all.helpText
    )

    @OptionGroup var options: RunOptions

    func run() {
        let settings: AgentSettings
        do {
            settings = try options.resolve()
        } catch let usage as ValidationError {
            Self.exit(withError: usage)
        } catch {
            exitWithFailure(error)
        }
        bootstrapLogging(level: settings.logLevel, format: settings.logFormat)
        signal(SIGPIPE, SIG_IGN)
        let logger = Logger(label: "conntrackr")

        let parts: PrivilegedParts
        do {
            parts = try PrivilegedParts.open(settings: settings, logger: logger)
        } catch {
            exitWithFailure(error)
        }
        do {
            let kept = Capability.keptAfterStartUp(settings)
            try dropPrivileges(keeping: kept)
            logger.info(
                "privileges dropped",
                metadata: ["kept": "\(kept.map(\.name).sorted().joined(separator: ","))", "no_new_privs": "1"]
            )
        } catch {
            for cleanup in parts.cleanups { cleanup() }
            exitWithFailure(error)
        }

        let failure = runAsync {
            let agent: Agent
            do {
                agent = try await Agent.assemble(
                    parts: parts, settings: settings, configFile: options.config, logger: logger
                )
            } catch {
                for cleanup in parts.cleanups { cleanup() }
                return error
            }
            var outcome: (any Error)?
            do {
                try await agent.run()
            } catch {
                outcome = error
            }
            agent.shutDown()
            return outcome
        }
        if let failure { exitWithFailure(failure) }
    }
}

/// Runs `body` on Swift concurrency's executors and waits for it on this (the main) thread.
func runAsync(_ body: @escaping @Sendable () async -> (any Error)?) -> (any Error)? {
    let done = DispatchSemaphore(value: 0)
    let result = ResultBox()
    Task {
        result.error = await body()
        done.signal()
    }
    done.wait()
    return result.error
}

/// Carries the outcome from the task to the waiting main thread.
private final class ResultBox: @unchecked Sendable {
    // @unchecked: written once by the task before it signals, read by the main thread after the wait.
    var error: (any Error)?
}
