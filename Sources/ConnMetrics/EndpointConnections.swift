import NIOCore
import Synchronization

/// The open connections of the metrics endpoint.
///
/// A new connection is always admitted (until shutdown), so clients that hold connections open cannot starve the
/// scraper or the liveness probe: when the endpoint is full, or the new connection's client already has its
/// share, the connection that has waited longest for its next request makes room (one with a request in progress
/// only when none is waiting). A client holding connections thus evicts its own first, and can never take more
/// than its share.
final class EndpointConnections: Sendable {
    private struct Entry {
        let channel: any Channel
        let client: String
        /// Whether a request is in progress (head received, response not yet written).
        var busy = false
        /// Since when the connection is in its current phase (waiting, or busy).
        var since: NIODeadline
    }

    private struct State {
        var open: [ObjectIdentifier: Entry] = [:]
        var closing = false
    }

    /// The most connections open at once.
    let limit: Int
    /// The most connections open at once from one client address.
    let perClientLimit: Int
    private let state = Mutex(State())

    init(limit: Int, perClientLimit: Int) {
        self.limit = max(limit, 1)
        self.perClientLimit = max(min(perClientLimit, limit), 1)
    }

    /// Admits `channel` from `client` and returns the connection it evicts, which the caller closes; `nil` when the
    /// server is shutting down and `channel` is not admitted. An admitted channel is forgotten when it closes.
    func admit(_ channel: any Channel, client: String) -> Admission {
        let key = ObjectIdentifier(channel)
        let admission = state.withLock { state -> Admission in
            guard !state.closing else { return .refused }
            var evicted: (any Channel)?
            let ofClient = state.open.filter { $0.value.client == client }
            if ofClient.count >= perClientLimit {
                evicted = Self.evict(from: ofClient, in: &state)
            } else if state.open.count >= limit {
                evicted = Self.evict(from: state.open, in: &state)
            }
            state.open[key] = Entry(channel: channel, client: client, since: .now())
            return .admitted(evicting: evicted)
        }
        if case .admitted = admission {
            channel.closeFuture.whenComplete { [self] _ in
                _ = state.withLock { $0.open.removeValue(forKey: key) }
            }
        }
        return admission
    }

    /// What ``admit(_:client:)`` decided.
    enum Admission {
        case admitted(evicting: (any Channel)?)
        case refused
    }

    /// Removes the entry of `candidates` that has waited longest for a request (or, if all are busy, has been
    /// busy longest) and returns its channel.
    private static func evict(from candidates: [ObjectIdentifier: Entry], in state: inout State) -> (any Channel)? {
        guard let victim = candidates.min(by: { ($0.value.busy ? 1 : 0, $0.value.since) < ($1.value.busy ? 1 : 0, $1.value.since) })
        else { return nil }
        state.open.removeValue(forKey: victim.key)
        return victim.value.channel
    }

    /// Records that `channel` received a request head (`true`) or finished its response (`false`).
    func setBusy(_ channel: any Channel, _ busy: Bool) {
        state.withLock { state in
            state.open[ObjectIdentifier(channel)]?.busy = busy
            state.open[ObjectIdentifier(channel)]?.since = .now()
        }
    }

    /// The connections open now.
    var openCount: Int { state.withLock { $0.open.count } }

    /// Stops admitting and returns the connections still open.
    func stopAdmitting() -> [any Channel] {
        state.withLock { state in
            state.closing = true
            return state.open.values.map(\.channel)
        }
    }
}
