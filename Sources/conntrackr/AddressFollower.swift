import ConnBlock
import ConnCore
import Logging
import Synchronization

/// Follows this host's addresses after start (a VIP after a failover, SLAAC, renumbering): when they change, the
/// capture reports attempts to the new set, and the allowlist's host entries (through `allowlist`, so in the
/// blocker's kernel maps and the units sources are counted as too) are the new addresses. Called by
/// ``ConnCapture/HostAddressWatcher``.
final class AddressFollower: Sendable {
    private let source: any PacketSource
    private let followsDestinations: Bool
    private let allowlist: AllowlistKeeper
    private let logger: Logger
    private let addresses: Mutex<Set<IPAddress>>

    /// - Parameter followsDestinations: whether capture reports only attempts to this host's addresses.
    init(
        source: any PacketSource, followsDestinations: Bool, allowlist: AllowlistKeeper, logger: Logger
    ) throws(ConntrackrError) {
        self.source = source
        self.followsDestinations = followsDestinations
        self.allowlist = allowlist
        self.logger = logger
        self.addresses = Mutex(Set(try HostAddresses.current()))
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
        let change = addresses.withLock { addresses -> (added: [IPAddress], removed: [IPAddress])? in
            let fresh = Set(current)
            guard fresh != addresses else { return nil }
            defer { addresses = fresh }
            return (fresh.subtracting(addresses).sorted(), addresses.subtracting(fresh).sorted())
        }
        guard let change else { return }
        if followsDestinations { source.replaceDestinations(current) }
        do {
            try allowlist.update { $0.replacingHostAddresses(with: current) }
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
