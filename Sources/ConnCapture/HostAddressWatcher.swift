import CAddressWatch
import ConnCore
public import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Hears when an address is added to or removed from one of this host's interfaces (a VIP taken over after a
/// failover, SLAAC, renumbering), through rtnetlink, and calls `onChange` then, from a thread of its own. Needs no
/// capability.
///
/// The callback re-reads what it needs (`HostAddresses.current()`): notifications say that something changed, and
/// when the kernel drops some (a full queue) a change is reported all the same.
public final class HostAddressWatcher: Service, Sendable {
    private let onChange: @Sendable () -> Void

    /// A watcher that calls `onChange` after each change.
    public init(onChange: @escaping @Sendable () -> Void) {
        self.onChange = onChange
    }

    /// Opens the rtnetlink socket now, so that a failure is a start-up error.
    /// - Throws: ``ConnCore/ConntrackrError`` when the socket cannot be opened.
    static func openSocket() throws(ConntrackrError) -> Int32 {
        let descriptor = ct_address_watch_open()
        guard descriptor >= 0 else {
            throw ConntrackrError(
                .captureFailed, "cannot watch this host's addresses: rtnetlink: \(String(cString: strerror(-descriptor)))"
            )
        }
        return descriptor
    }

    /// Watches until the service group shuts down; then the watching thread ends within half a second.
    public func run() async throws {
        let descriptor = try Self.openSocket()
        let stop = StopFlag()
        let onChange = self.onChange
        await withTaskCancellationOrGracefulShutdownHandler {
            await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
                let created = DetachedThread.start {
                    defer {
                        close(descriptor)
                        finished.resume()
                    }
                    while !stop.isSet {
                        let result = ct_address_watch_wait(descriptor, 500)
                        if result > 0 { onChange() }
                        if result < 0 { return }  // the socket failed; the addresses known stay in force
                    }
                }
                if created != 0 {
                    close(descriptor)
                    finished.resume()
                }
            }
        } onCancelOrGracefulShutdown: {
            stop.set()
        }
    }
}

/// Tells the watching thread to end.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
