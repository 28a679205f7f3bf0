#if canImport(Glibc)
import Glibc
#endif

/// Feeds a ``ConnectionPipeline`` on two threads: the caller's thread parses frames into batches, and a thread of
/// the feed's own runs the rest of the pipeline (retransmissions, scan detection, events and their output) on
/// them, batch after batch in the order they were made.
///
/// A replay is bound by one core otherwise: reading and parsing a capture file and detecting and writing take
/// about the same time, so on two cores each side takes one. The batches go through a ring of ``slotCount``
/// buffers allocated once: a full ring makes the caller wait, an empty one the pipeline's thread, so memory stays
/// bounded whatever the input, and nothing is allocated per frame. Everything the pipeline does happens in the
/// same order, with the same batch ends, as when a source calls it directly: the output is the same.
///
/// - Important: From ``init(pipeline:threaded:)`` until ``finish()`` returns, the pipeline belongs to the feed's
///   thread: do not call it, nor read its ``ConnectionPipeline/statistics``, meanwhile. One thread (the source's)
///   calls the feed.
public final class PipelineFeed {
    /// Batches that can wait between the two threads.
    static let slotCount = 4
    /// Frames of interest (all but ``FrameVerdict/other``) one slot holds; a source's batch of
    /// ``PcapFileSource``-size fits in one.
    static let slotCapacity = 4096

    /// One batch: the verdicts of the frames that need the pipeline (a trivial type: nothing to deinitialise), how
    /// many frames it covers, and whether the pipeline's batch ends after it.
    private struct Slot {
        let verdicts: UnsafeMutablePointer<(FrameVerdict, Timestamp)>
        var count = 0
        var frames = 0
        var endOfBatch: Timestamp?

        mutating func reset() {
            count = 0
            frames = 0
            endOfBatch = nil
        }
    }

    private let pipeline: ConnectionPipeline
    /// The ring, allocated once. A slot belongs to the caller until handed over, then to the pipeline's thread until
    /// released; the mutex orders each change of hands.
    private let slots: UnsafeMutablePointer<Slot>
    /// The slot the caller fills (the caller's alone until it hands it over).
    private var filling = 0
    // Shared between the two threads, under `mutex`: how many slots are handed over and not yet processed, and
    // whether the input ended.
    private var mutex = pthread_mutex_t()
    private var handedOver = pthread_cond_t()
    private var released = pthread_cond_t()
    private var ready = 0
    private var closed = false
    private var thread: pthread_t?
    private var finished = false

    /// Starts the pipeline's thread.
    /// - Parameter threaded: `false` runs the pipeline on the caller's thread, one batch at a time, as it does also
    ///   when a thread cannot be started.
    public init(pipeline: ConnectionPipeline, threaded: Bool = true) {
        self.pipeline = pipeline
        slots = .allocate(capacity: Self.slotCount)
        for index in 0..<Self.slotCount {
            (slots + index).initialize(to: Slot(verdicts: .allocate(capacity: Self.slotCapacity)))
        }
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&handedOver, nil)
        pthread_cond_init(&released, nil)
        guard threaded else { return }
        let context = Unmanaged.passUnretained(self).toOpaque()
        var started = pthread_t()
        let created = pthread_create(&started, nil, { raw in
            Unmanaged<PipelineFeed>.fromOpaque(raw!).takeUnretainedValue().runPipeline()
            return nil
        }, context)
        if created == 0 { thread = started }
    }

    deinit {
        finish()
        for index in 0..<Self.slotCount { slots[index].verdicts.deallocate() }
        slots.deinitialize(count: Self.slotCount)
        slots.deallocate()
        pthread_cond_destroy(&released)
        pthread_cond_destroy(&handedOver)
        pthread_mutex_destroy(&mutex)
    }

    /// Parses one frame; the pipeline processes it later, in order, on its thread.
    public func process(frame: UnsafeRawBufferPointer, linkType: LinkType, time: Timestamp) {
        let verdict = FrameParser.classify(frame, linkType: linkType)
        if case .other = verdict {
            slots[filling].frames += 1
            return
        }
        if slots[filling].count == Self.slotCapacity { handOver() }
        let slot = slots + filling
        (slot.pointee.verdicts + slot.pointee.count).initialize(to: (verdict, time))
        slot.pointee.count += 1
        slot.pointee.frames += 1
    }

    /// Ends a batch: the pipeline's ``ConnectionPipeline/endOfBatch(now:)`` runs after the frames given so far.
    public func endOfBatch(now: Timestamp) {
        slots[filling].endOfBatch = now
        handOver()
    }

    /// Hands over what is left, lets the pipeline process it and ``ConnectionPipeline/finish()``, and stops the
    /// pipeline's thread. The pipeline is the caller's again when it returns; later calls do nothing.
    public func finish() {
        guard !finished else { return }
        finished = true
        if slots[filling].frames > 0 { handOver() }
        guard let thread else {
            pipeline.finish()
            return
        }
        pthread_mutex_lock(&mutex)
        closed = true
        pthread_cond_signal(&handedOver)
        pthread_mutex_unlock(&mutex)
        pthread_join(thread, nil)
        self.thread = nil
    }

    /// Passes the filling slot to the pipeline's thread (or processes it, unthreaded) and moves to the next one,
    /// waiting while every slot is taken.
    private func handOver() {
        guard thread != nil else {
            process(slots[filling])
            slots[filling].reset()
            return
        }
        pthread_mutex_lock(&mutex)
        ready += 1
        pthread_cond_signal(&handedOver)
        while ready == Self.slotCount { pthread_cond_wait(&released, &mutex) }
        pthread_mutex_unlock(&mutex)
        filling = (filling + 1) % Self.slotCount
    }

    /// The pipeline's thread: processes slots in ring order until the caller finishes.
    private func runPipeline() {
        var next = 0
        while true {
            pthread_mutex_lock(&mutex)
            while ready == 0 && !closed { pthread_cond_wait(&handedOver, &mutex) }
            let available = ready
            pthread_mutex_unlock(&mutex)
            if available == 0 { break }  // closed, and everything processed
            // The caller does not touch a handed-over slot until it is released below (the mutex orders both).
            process(slots[next])
            slots[next].reset()
            next = (next + 1) % Self.slotCount
            pthread_mutex_lock(&mutex)
            ready -= 1
            pthread_cond_signal(&released)
            pthread_mutex_unlock(&mutex)
        }
        pipeline.finish()
    }

    private func process(_ slot: Slot) {
        pipeline.countParsedFrames(slot.frames)
        for index in 0..<slot.count {
            let (verdict, time) = slot.verdicts[index]
            pipeline.process(verdict, time: time)
        }
        if let now = slot.endOfBatch { pipeline.endOfBatch(now: now) }
    }
}

/// Used by one source thread; its pipeline thread touches only what the mutex hands over.
@available(*, unavailable)
extension PipelineFeed: Sendable {}
