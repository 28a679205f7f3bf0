import ConnBlock
import ConnCore
import Logging
import Synchronization

/// Follows this host's addresses after start (a VIP after a failover, SLAAC, renumbering): when they change, the
/// capture reports attempts to the new set, and the allowlist (in the blocker's kernel maps too) and the units
/// sources are counted as take the new host addresses. Called by ``ConnCapture/HostAddressWatcher``.
final class AddressFollower: Sendable {
    private let source: any PacketSource
    private let followsDestinations: Bool
    private let blocking: BlockController?
    private let units: SourceUnits
    private let logger: Logger
    private struct State {
        var addresses: Set<IPAddress>
        /// The allowlist in force when nothing blocks (with blocking, the controller's).
        var allowlist: Allowlist
    }
    private let state: Mutex<State>

    /// - Parameter followsDestinations: whether capture reports only attempts to this host's addresses.
    init(
        source: any PacketSource, followsDestinations: Bool, blocking: BlockController?, units: SourceUnits,
        allowlist: Allowlist, logger: Logger
    ) throws(ConntrackrError) {
        self.source = source
        self.followsDestinations = followsDestinations
        self.blocking = blocking
        self.units = units
        self.logger = logger
        self.state = Mutex(State(addresses: Set(try HostAddresses.current()), allowlist: allowlist))
    }

    /// Re-reads the host's addresses and applies them if they changed.
    func addressesMayHaveChanged() {
        let current: [IPAddress]
        do {
            current = try HostAddresses.current()
        } catch {
            logger.error("cannot read this host's addresses; the previous ones stay", metadata: ["error": "\(error)"])
            return
        }
        let change = state.withLock { state -> (added: [IPAddress], removed: [IPAddress], allowlist: Allowlist)? in
            let fresh = Set(current)
            guard fresh != state.addresses else { return nil }
            defer { state.addresses = fresh }
            let allowlist = (blocking?.allowlist ?? state.allowlist).replacingHostAddresses(with: current)
            state.allowlist = allowlist
            return (fresh.subtracting(state.addresses).sorted(), state.addresses.subtracting(fresh).sorted(), allowlist)
        }
        guard let change else { return }
        if followsDestinations { source.replaceDestinations(current) }
        do {
            if let blocking {
                try blocking.replaceAllowlist(change.allowlist)
            } else {
                units.replaceAllowlist(change.allowlist)
            }
        } catch {
            logger.error("allowlist not updated for the new addresses", metadata: ["error": "\(error)"])
        }
        logger.notice(
            "host addresses changed",
            metadata: [
                "added": "\(change.added.map(\.description).joined(separator: ","))",
                "removed": "\(change.removed.map(\.description).joined(separator: ","))",
            ]
        )
    }
}
