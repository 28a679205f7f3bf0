import ConnBlock
import ConnCore
import ConnFleet
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The one place the agent's allowlist changes after start: on SIGHUP (rebuilt from the settings and the allow
/// file) and when this host's addresses change (their entries replaced). Each change is applied whole, one at a
/// time, to the block controller (its kernel maps too) or, without blocking, to the source units, so that a reload
/// and an address change never undo each other.
final class AllowlistKeeper: Sendable {
    private let blocking: BlockController?
    private let units: SourceUnits
    private let current: Mutex<Allowlist>

    /// - Parameters:
    ///   - allowlist: the allowlist in force at start.
    ///   - blocking: the controller to apply changes to; `nil` when nothing blocks, then only `units` follow.
    init(allowlist: Allowlist, blocking: BlockController?, units: SourceUnits) {
        self.blocking = blocking
        self.units = units
        self.current = Mutex(allowlist)
    }

    /// Replaces the allowlist in force with `change` of it, and returns the new one. When applying it fails, the
    /// previous one stays in force and the error is thrown.
    @discardableResult
    func update(_ change: (Allowlist) throws -> Allowlist) throws -> Allowlist {
        try current.withLock { current in
            let next = try change(current)
            if let blocking {
                try blocking.replaceAllowlist(next)
            } else {
                units.replaceAllowlist(next)
            }
            current = next
            return next
        }
    }
}

/// Reloads the allowlist on SIGHUP (from the configuration file and the allow file) without dropping any state.
struct AllowlistReloader: Service {
    let settings: AgentSettings
    let configFile: String?
    let keeper: AllowlistKeeper
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            do {
                var fresh = settings
                if let configFile {
                    var reread = AgentSettings()
                    try reread.load(configurationFile: configFile)
                    fresh.allow = reread.allow
                    fresh.allowFile = reread.allowFile
                    fresh.fleetSettings.allow = reread.fleetSettings.allow
                }
                let allowlist = try HostAllowlist(settings: fresh).build()
                try keeper.update { _ in allowlist }
                logger.notice("allowlist reloaded", metadata: ["entries": "\(allowlist.entries.count)"])
            } catch {
                logger.error("allowlist not reloaded; the previous one stays", metadata: ["error": "\(error)"])
            }
        }
    }
}
