import Synchronization

/// Where frames or connection attempts come from: a live capture or a capture file.
///
/// ``run(into:)`` blocks its thread and feeds the pipeline until the input ends or ``stop()`` is called from any
/// thread; it calls ``ConnectionPipeline/endOfBatch(now:)`` after each batch and at least every few hundred
/// milliseconds when idle, so that expiry and output keep moving.
public protocol PacketSource: AnyObject, Sendable {
    /// A short name for logs and metric labels, such as `pcap` or `xdp`.
    var name: String { get }

    /// Delivers everything captured to `pipeline` until the input ends or ``stop()`` is called.
    /// - Throws: ``ConntrackrError`` when capture cannot start or fails; what was delivered before stays delivered.
    func run(into pipeline: ConnectionPipeline) throws

    /// Asks a running ``run(into:)`` to return soon. Safe from any thread.
    func stop()

    /// From the next batch on, reports only attempts to `destinations` (`nil`: to any address), as when the host's
    /// addresses change. Safe from any thread. Optional: a file has no destinations to follow.
    func replaceDestinations(_ destinations: [IPAddress]?)
}

extension PacketSource {
    public func replaceDestinations(_ destinations: [IPAddress]?) {}
}

/// A change of destinations handed from any thread to a source's capture thread.
public final class PendingDestinations: Sendable {
    private let pending = Mutex<[IPAddress]??>(nil)

    public init() {}

    /// Queues `destinations`, replacing any change not yet taken.
    public func post(_ destinations: [IPAddress]?) {
        pending.withLock { $0 = .some(destinations) }
    }

    /// The change queued since the last call, if any.
    public func take() -> [IPAddress]?? {
        pending.withLock { queued in
            defer { queued = nil }
            return queued
        }
    }
}
