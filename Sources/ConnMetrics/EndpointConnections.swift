import NIOCore
import Synchronization

/// The open connections of the metrics endpoint: admits at most a fixed number, and asks them all to finish on
/// shutdown.
final class EndpointConnections: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var closing = false
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// Admits `channel` unless the limit is reached or the server is shutting down; an admitted channel is
    /// forgotten when it closes.
    func admit(_ channel: any Channel) -> Bool {
        let key = ObjectIdentifier(channel)
        let admitted = state.withLock { state in
            guard !state.closing, state.open.count < limit else { return false }
            state.open[key] = channel
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [self] _ in
                _ = state.withLock { $0.open.removeValue(forKey: key) }
            }
        }
        return admitted
    }

    /// The connections open now.
    var openCount: Int { state.withLock { $0.open.count } }

    /// Stops admitting and returns the connections still open.
    func stopAdmitting() -> [any Channel] {
        state.withLock { state in
            state.closing = true
            return Array(state.open.values)
        }
    }
}
