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
/// when the kernel drops some (a full queue) a change is reported all the same. Where rtnetlink cannot be used
/// (refused by a sandbox, failed), it calls `onChange` every ``fallbackInterval`` instead. It never ends before the
/// service group shuts down, so a failure here never stops the agent.
public final class HostAddressWatcher: Service, Sendable {
    private let onChange: @Sendable () -> Void
    private let onFallback: @Sendable (String) -> Void

    /// How often `onChange` is called when rtnetlink cannot be used.
    public static let fallbackIntervalMilliseconds: Int32 = 2000

    /// A watcher that calls `onChange` after each change, and `onFallback` with the reason when it has to poll.
    public init(onFallback: @escaping @Sendable (String) -> Void, onChange: @escaping @Sendable () -> Void) {
        self.onChange = onChange
        self.onFallback = onFallback
    }

    /// Watches until the service group shuts down; then the watching thread, asleep until a notification, is
    /// woken at once and ends (the group shuts its services down one after another, within a few seconds in all).
    public func run() async throws {
        let stop = StopSignal()
        let onChange = self.onChange
        let onFallback = self.onFallback
        await withTaskCancellationOrGracefulShutdownHandler {
            await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
                let created = DetachedThread.start {
                    defer { finished.resume() }
                    var descriptor = ct_address_watch_open()
                    if descriptor < 0 { onFallback("rtnetlink: \(String(cString: strerror(-descriptor)))") }
                    var sinceChangeCall: Int32 = 0  // in fallback polling
                    while !stop.isSet {
                        // Without a wake descriptor, wake every tenth of a second to see the stop flag.
                        let limit = stop.descriptor < 0 ? Int32(100) : descriptor < 0 ? Self.fallbackIntervalMilliseconds : -1
                        let result = ct_address_watch_wait(descriptor, stop.descriptor, limit)
                        if stop.isSet { break }
                        if descriptor < 0 {
                            // No notifications: look again every few seconds.
                            sinceChangeCall += limit
                            if sinceChangeCall >= Self.fallbackIntervalMilliseconds {
                                sinceChangeCall = 0
                                onChange()
                            }
                            continue
                        }
                        if result > 0 { onChange() }
                        if result < 0 {
                            onFallback("rtnetlink: \(String(cString: strerror(-result)))")
                            close(descriptor)
                            descriptor = -1
                        }
                    }
                    if descriptor >= 0 { close(descriptor) }
                }
                if created != 0 { finished.resume() }
            }
        } onCancelOrGracefulShutdown: {
            stop.set()
        }
    }
}

/// Tells the watching thread to end, and wakes it through an eventfd it polls with the netlink socket.
private final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    /// The eventfd, or -errno when none could be made (the thread then wakes every tenth of a second).
    let descriptor = ct_address_watch_wake_open()

    var isSet: Bool { flag.load(ordering: .acquiring) }

    func set() {
        flag.store(true, ordering: .releasing)
        if descriptor >= 0 { _ = ct_address_watch_wake(descriptor) }
    }

    // Closed only when neither the thread nor the shutdown handler holds the signal any more: `set` may write to
    // it after the thread has ended.
    deinit {
        if descriptor >= 0 { close(descriptor) }
    }
}
