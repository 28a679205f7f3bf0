#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Writes event lines to a file descriptor (normally standard output).
///
/// Two policies, because the agent and the replay want opposite things from a slow reader:
/// - ``Policy/lossless``: the capture thread writes each batch itself and waits for the reader. A replay must
///   print every event of the file, so it may go only as fast as its reader.
/// - ``Policy/dropWhenBehind(maxQueuedBytes:)``: a writer thread drains a bounded queue; when the reader is slower
///   than the events, whole batches are dropped and counted instead of stalling capture or growing memory.
public final class EventWriter: EventSink, @unchecked Sendable {
    // @unchecked: `pending` and `formatter` belong to the capture thread; everything shared sits behind `queue`.

    /// What to do when the reader cannot keep up.
    public enum Policy: Hashable, Sendable {
        case lossless
        case dropWhenBehind(maxQueuedBytes: Int)
    }

    private struct Queue {
        var chunks: [[UInt8]] = []
        var queuedBytes = 0
        var closed = false
        var writerFailed = false
    }

    private let fileDescriptor: Int32
    private let policy: Policy
    // The capture thread's own state, touched for every event: `@exclusivity(unchecked)` spares the runtime
    // exclusivity bookkeeping that an inout access to a class property costs on each call.
    @exclusivity(unchecked) private var formatter: EventFormatter
    @exclusivity(unchecked) private var pending = LineBuffer(capacity: EventWriter.batchBytes + 1024)
    /// Output is handed on in batches of about this many bytes.
    private static let batchBytes = 1 << 16
    @exclusivity(unchecked) private var pendingEvents = 0
    private let queue = Mutex(Queue())
    private let signal = WakeSignal()
    private var writerThread: pthread_t?
    private let droppedCount = Atomic<Int>(0)
    private let writtenCount = Atomic<Int>(0)

    /// Events discarded because the reader fell behind or went away.
    public var droppedEvents: Int { droppedCount.load(ordering: .relaxed) }
    /// Events handed to the file descriptor.
    public var writtenEvents: Int { writtenCount.load(ordering: .relaxed) }

    public init(fileDescriptor: Int32 = 1, format: OutputFormat, policy: Policy = .lossless) {
        self.fileDescriptor = fileDescriptor
        self.formatter = EventFormatter(format: format)
        self.policy = policy
        if case .dropWhenBehind = policy { startWriterThread() }
    }

    public func emit(_ event: ConnEvent) {
        formatter.append(event, to: &pending)
        pendingEvents += 1
        if pending.count >= Self.batchBytes { flush() }
    }

    public func flush() {
        guard !pending.isEmpty else { return }
        switch policy {
        case .lossless:
            if writeFully(pending.bytes) {
                writtenCount.add(pendingEvents, ordering: .relaxed)
            } else {
                droppedCount.add(pendingEvents, ordering: .relaxed)
            }
            pending.removeAll()
        case .dropWhenBehind(let maxQueuedBytes):
            let chunk = Array(pending.bytes)
            let accepted = queue.withLock { state -> Bool in
                guard !state.writerFailed, state.queuedBytes + chunk.count <= maxQueuedBytes else { return false }
                state.chunks.append(chunk)
                state.queuedBytes += chunk.count
                return true
            }
            if accepted {
                writtenCount.add(pendingEvents, ordering: .relaxed)
                signal.wake()
            } else {
                droppedCount.add(pendingEvents, ordering: .relaxed)
            }
            pending.removeAll()
        }
        pendingEvents = 0
    }

    /// Flushes, lets the writer thread finish what is queued, and stops it.
    public func close() {
        flush()
        queue.withLock { $0.closed = true }
        signal.wake()
        if let thread = writerThread {
            pthread_join(thread, nil)
            writerThread = nil
        }
    }

    deinit { close() }

    private func startWriterThread() {
        let context = Unmanaged.passUnretained(self).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            let writer = Unmanaged<EventWriter>.fromOpaque(raw!).takeUnretainedValue()
            writer.drainQueue()
            return nil
        }, context)
        if created == 0 { writerThread = thread }
    }

    private func drainQueue() {
        while true {
            let (chunks, closed) = queue.withLock { state -> ([[UInt8]], Bool) in
                let taken = state.chunks
                state.chunks.removeAll()
                state.queuedBytes = 0
                return (taken, state.closed)
            }
            for chunk in chunks where !chunk.withUnsafeBytes({ writeFully($0) }) {
                queue.withLock { $0.writerFailed = true }
            }
            if closed && chunks.isEmpty { return }
            if chunks.isEmpty { signal.wait(timeoutMilliseconds: 200) }
        }
    }

    /// Writes all of `raw`, retrying short writes and interrupts; `false` when the reader is gone.
    private func writeFully(_ raw: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < raw.count {
            let written = write(fileDescriptor, raw.baseAddress! + offset, raw.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    usleep(1000)
                    continue
                }
                return false
            }
            offset += written
        }
        return true
    }
}

/// A wake-up flag a thread can sleep on, built on a pthread condition variable.
final class WakeSignal: @unchecked Sendable {
    // @unchecked: all state is guarded by `mutex`.
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var raised = false

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    func wake() {
        pthread_mutex_lock(&mutex)
        raised = true
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    func wait(timeoutMilliseconds: Int) {
        pthread_mutex_lock(&mutex)
        if !raised {
            var deadline = timespec()
            clock_gettime(CLOCK_REALTIME, &deadline)
            let nanoseconds = Int(deadline.tv_nsec) + timeoutMilliseconds * 1_000_000
            deadline.tv_sec += nanoseconds / 1_000_000_000
            deadline.tv_nsec = nanoseconds % 1_000_000_000
            pthread_cond_timedwait(&condition, &mutex, &deadline)
        }
        raised = false
        pthread_mutex_unlock(&mutex)
    }
}
