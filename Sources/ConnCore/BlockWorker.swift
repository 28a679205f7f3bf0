import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Applies a ``BlockController``'s decisions on a thread of its own, fed by a bounded queue, so that the capture
/// thread hands a detected scan over and goes on with the next packet instead of waiting for the blocker (an
/// nftables transaction, a map write). Outcomes wait here until the capture thread takes them.
///
/// - Important: a full queue refuses the job (``submit(_:)`` returns `false`) rather than make capture wait.
final class BlockWorker: Sendable {
    /// Work for the blocker.
    enum Job: Sendable {
        /// Decide on a scan; `retry` when a limit refused its source before (``RefusedScanners``).
        case scan(PortScan, retry: Bool)
        /// Lift the blocks whose time is up.
        case sweep(Timestamp)
    }

    /// What a job came to.
    enum Outcome: Sendable {
        case decided(PortScan, BlockDecision, retry: Bool)
        case swept([ConnEvent])
    }

    private struct Queue {
        var jobs: [Job] = []
        /// Jobs taken by the thread and not yet finished.
        var running = 0
        var outcomes: [Outcome] = []
        var sweepPending = false
        var stopped = false
    }

    /// The most jobs waiting or running at once.
    let capacity: Int
    private let controller: BlockController
    private let queue = Mutex(Queue())
    private let wakeup = DispatchSemaphore(value: 0)

    /// A worker for `controller`; call ``start()`` to start its thread.
    init(controller: BlockController, capacity: Int) {
        self.controller = controller
        self.capacity = max(capacity, 1)
    }

    /// Starts the thread.
    /// - Returns: 0, or the `pthread_create` error number.
    func start() -> Int32 {
        DetachedThread.start { [self] in run() }
    }

    /// Queues `job`; `false` when the queue is full or the worker stopped. A sweep already waiting makes another
    /// one unnecessary: it is dropped and counts as queued.
    func submit(_ job: Job) -> Bool {
        let queued = queue.withLock { queue -> Bool in
            guard !queue.stopped else { return false }
            if case .sweep = job {
                if queue.sweepPending { return true }
            }
            guard queue.jobs.count + queue.running < capacity else { return false }
            if case .sweep = job { queue.sweepPending = true }
            queue.jobs.append(job)
            return true
        }
        if queued { wakeup.signal() }
        return queued
    }

    /// The outcomes of finished jobs, in the order they finished.
    func takeOutcomes() -> [Outcome] {
        queue.withLock { queue in
            defer { queue.outcomes.removeAll() }
            return queue.outcomes
        }
    }

    /// Whether no job waits or runs.
    var isIdle: Bool {
        queue.withLock { $0.jobs.isEmpty && $0.running == 0 }
    }

    /// Waits until no job waits or runs, at most `limit`.
    func waitUntilIdle(limit: Duration) {
        let deadline = ContinuousClock.now + limit
        while !isIdle, ContinuousClock.now < deadline {
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
    }

    /// Ends the thread once the job in hand is done; jobs still waiting are dropped.
    func stop() {
        queue.withLock { $0.stopped = true }
        wakeup.signal()
    }

    private func run() {
        while true {
            wakeup.wait()
            let jobs = queue.withLock { queue -> [Job]? in
                if queue.stopped { return nil }
                defer { queue.jobs.removeAll(keepingCapacity: true) }
                queue.running = queue.jobs.count
                return queue.jobs
            }
            guard let jobs else { return }
            for job in jobs {
                let outcome: Outcome
                switch job {
                case .scan(let scan, let retry):
                    outcome = .decided(scan, controller.handle(scan), retry: retry)
                case .sweep(let now):
                    queue.withLock { $0.sweepPending = false }
                    outcome = .swept(controller.sweep(now: now))
                }
                queue.withLock { queue in
                    queue.outcomes.append(outcome)
                    queue.running -= 1
                }
            }
        }
    }
}
