import Synchronization

/// This agent's blocks waiting to be published: filled from the capture thread, emptied by the fleet task.
///
/// Bounded: while etcd is away for long, the oldest are dropped (and counted by the caller) so memory stays flat;
/// the newest blocks are the ones most worth sharing.
final class PublicationQueue: Sendable {
    fileprivate struct State {
        var records: [FleetRecord] = []
        var head = 0  // records before `head` are taken; compacted lazily so taking is O(1)
        var waiter: CheckedContinuation<Void, any Error>?
        var signalled = false
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    /// Appends `record`; returns how many old records were dropped to make room (0 or 1). Never blocks.
    func push(_ record: FleetRecord) -> Int {
        let (dropped, waiter) = state.withLock { state -> (Int, CheckedContinuation<Void, any Error>?) in
            var dropped = 0
            if state.records.count - state.head >= capacity {
                state.head += 1
                dropped = 1
            }
            state.records.append(record)
            state.compact()
            let waiter = state.waiter
            state.waiter = nil
            state.signalled = waiter == nil
            return (dropped, waiter)
        }
        waiter?.resume()
        return dropped
    }

    /// Takes the oldest record.
    func popFirst() -> FleetRecord? {
        state.withLock { state in
            guard state.head < state.records.count else { return nil }
            defer {
                state.head += 1
                state.compact()
            }
            return state.records[state.head]
        }
    }

    /// Puts back a record whose publication failed, to be first next time. Drops it instead when the queue has
    /// filled up meanwhile; returns how many were dropped.
    func pushFront(_ record: FleetRecord) -> Int {
        state.withLock { state in
            guard state.records.count - state.head < capacity else { return 1 }
            if state.head > 0 {
                state.head -= 1
                state.records[state.head] = record
            } else {
                state.records.insert(record, at: 0)
            }
            return 0
        }
    }

    var count: Int { state.withLock { $0.records.count - $0.head } }

    /// Waits until a record is pushed after the last wait ended (returns at once if one was). One waiter at a time.
    /// - Throws: `CancellationError` when the task is cancelled.
    func waitForPush() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = state.withLock { state in
                    if state.signalled {
                        state.signalled = false
                        return .success(())
                    }
                    // Checked under the lock: the cancellation handler takes the lock too, so either it already
                    // ran and the flag is set, or it will find the waiter stored here.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    precondition(state.waiter == nil, "PublicationQueue allows one waiter at a time")
                    state.waiter = continuation
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume(throwing: CancellationError())
        }
    }
}

extension PublicationQueue.State {
    fileprivate mutating func compact() {
        if head > 64, head * 2 > records.count {
            records.removeFirst(head)
            head = 0
        }
    }
}
