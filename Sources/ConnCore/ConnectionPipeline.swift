public import Logging
import Synchronization

/// Turns captured frames into events: parse, tell new connections from retransmissions, detect scans, decide
/// blocks, and report counts.
///
/// One pipeline belongs to one capture thread (for a replay, the thread of a ``PipelineFeed``); every method must be
/// called from it. Sources call ``process(frame:linkType:time:)`` (or ``process(_:)`` for attempts the kernel
/// already parsed), and ``endOfBatch(now:)`` after each batch, which flushes output and metrics and runs the expiry
/// sweep.
public final class ConnectionPipeline {
    /// Settings of the pipeline.
    public struct Configuration: Hashable, Sendable {
        public var scanRule: ScanRule
        /// A repeat of the same 4-tuple within this long is a retransmission. Default 60 seconds.
        public var retransmitWindow: Duration
        /// The most 4-tuples remembered per window for the retransmission rule (two windows are kept, so up to
        /// twice this many in all). Default 1,000,000.
        public var maxTrackedConnections: Int

        public init(
            scanRule: ScanRule = ScanRule(),
            retransmitWindow: Duration = .seconds(60),
            maxTrackedConnections: Int = 1_000_000
        ) {
            self.scanRule = scanRule
            self.retransmitWindow = retransmitWindow
            self.maxTrackedConnections = maxTrackedConnections
        }
    }

    /// Where block decisions are applied.
    public enum BlockExecution: Hashable, Sendable {
        /// On the capture thread, each before the next packet: deterministic, for replays and tests.
        case inline
        /// On a thread of the pipeline's own, fed by a queue of at most `queueCapacity` jobs, so that capture
        /// never waits for the blocker. The `port_scan` event is written at detection, the `blocked` (or refusal)
        /// event at the first ``ConnectionPipeline/endOfBatch(now:)`` after the block is in force. A scan that
        /// finds the queue full is counted (``Statistics/blockQueueOverflows``), logged, and retried at its
        /// source's next SYN a second or more later, as a scan a limit refused.
        case dedicatedThread(queueCapacity: Int)
    }

    /// Counts kept by the pipeline since it was made.
    public struct Statistics: Hashable, Sendable {
        public var frames = 0
        public var attempts = 0
        public var newConnections = 0
        public var portScans = 0
        public var malformedFrames = 0
        public var captureDropped = 0
        /// Block decisions that found the blocking thread's queue full
        /// (``BlockExecution/dedicatedThread(queueCapacity:)``).
        public var blockQueueOverflows = 0
    }

    public let configuration: Configuration
    /// Whether the attempts come from an XDP program that enforces the scan rule itself (their
    /// ``ConnectionAttempt/kernelDecision`` is then the decision).
    public let kernelEnforces: Bool
    private let events: any EventSink
    private let detector: any ScanDetector
    private let blocking: BlockController?
    /// Applies block decisions off the capture thread; `nil` applies them inline.
    private let worker: BlockWorker?
    /// When a full block queue was last logged, and how many overflows went unlogged since.
    private var overflowLog: (logged: Int64, unlogged: Int)?
    private let metrics: any MetricsSink
    private let logger: Logger
    private let retransmits: RetransmitFilter
    private let fragments = FragmentedHeaderAssembler()
    /// Scanners a limit refused to block, retried at their later SYNs (user-space blocking only).
    @exclusivity(unchecked) private var refused = RefusedScanners()
    // Updated for every frame from the capture thread only; `@exclusivity(unchecked)` spares the runtime
    // exclusivity bookkeeping of each modification of a class property.
    @exclusivity(unchecked) public private(set) var statistics = Statistics()
    @exclusivity(unchecked) private var unreported = Statistics()
    @exclusivity(unchecked) private var unreportedMalformed: [MalformedReason: Int] = [:]
    /// Malformed frames since the pipeline was made, by reason (their sum is ``Statistics/malformedFrames``).
    @exclusivity(unchecked) public private(set) var malformedByReason: [MalformedReason: Int] = [:]
    private var reportedEvictions = (pairs: 0, connections: 0)
    private var lastSweep: Timestamp?  // nil until the first sweep, which runs at the first end of batch
    @exclusivity(unchecked) private var lastTime = Timestamp(nanoseconds: 0)
    /// Attempts waiting to be processed together (see ``drainQueuedAttempts()``).
    private let queuedAttempts = UnsafeMutablePointer<ConnectionAttempt>.allocate(capacity: queueCapacity)
    @exclusivity(unchecked) private var queuedCount = 0
    private static let queueCapacity = 32
    /// When each kind of refusal (allowlisted, rate_limited, ...) was last logged, and how many went unlogged since.
    private var refusalLog: [BlockRefusal.Kind: (logged: Int64, unlogged: Int)] = [:]
    /// Scanners not blocked are all reported as events and counted, but logged at most once per kind in this many
    /// nanoseconds: a forged storm that the block rate limit refuses would otherwise write a log line per source.
    static let refusalLogInterval: Int64 = 10_000_000_000

    /// Makes a pipeline.
    /// - Parameters:
    ///   - detector: the scan detector; by default a ``SlidingWindowScanDetector`` with the configuration's rule,
    ///     counting sources by `units`.
    ///   - blocking: what to do with scanners; `nil` only detects.
    ///   - units: the units sources are counted as; by default `blocking`'s (the unit counted is the unit
    ///     blocked), or IPv6 /64s with only loopback allowlisted.
    ///   - blockExecution: where `blocking` applies its decisions; inline by default.
    public init(
        configuration: Configuration = Configuration(),
        events: any EventSink,
        detector: (any ScanDetector)? = nil,
        blocking: BlockController? = nil,
        metrics: any MetricsSink = DiscardingMetricsSink(),
        logger: Logger = Logger(label: "conntrackr.pipeline"),
        kernelEnforces: Bool = false,
        units: SourceUnits? = nil,
        blockExecution: BlockExecution = .inline
    ) {
        self.configuration = configuration
        self.kernelEnforces = kernelEnforces
        self.events = events
        self.detector =
            detector
            ?? SlidingWindowScanDetector(rule: configuration.scanRule, units: units ?? blocking?.units ?? SourceUnits())
        self.blocking = blocking
        self.metrics = metrics
        self.logger = logger
        self.retransmits = RetransmitFilter(
            window: configuration.retransmitWindow,
            capacity: configuration.maxTrackedConnections
        )
        var worker: BlockWorker?
        if let blocking, case .dedicatedThread(let queueCapacity) = blockExecution {
            let started = BlockWorker(controller: blocking, capacity: queueCapacity)
            let error = started.start()
            if error == 0 {
                worker = started
            } else {
                logger.error(
                    "no blocking thread: blocks are applied on the capture thread", metadata: ["errno": "\(error)"]
                )
            }
        }
        self.worker = worker
    }

    deinit {
        worker?.stop()
        queuedAttempts.deallocate()
    }

    /// Parses one frame and processes it if it is a connection attempt.
    @inline(__always)
    public func process(frame: UnsafeRawBufferPointer, linkType: LinkType, time: Timestamp) {
        countParsedFrames(1)
        process(FrameParser.classify(frame, linkType: linkType), time: time)
    }

    /// Counts frames parsed elsewhere (``PipelineFeed`` parses on its caller's thread).
    @inline(__always)
    func countParsedFrames(_ count: Int) {
        statistics.frames += count
        unreported.frames += count
    }

    /// What follows parsing: the part of ``process(frame:linkType:time:)`` that does not touch the frame's bytes.
    @inline(__always)
    func process(_ verdict: FrameVerdict, time: Timestamp) {
        switch verdict {
        case .attempt(let source, let sourcePort, let destination, let destinationPort):
            enqueue(
                ConnectionAttempt(
                    time: time,
                    source: source,
                    sourcePort: sourcePort,
                    destination: destination,
                    destinationPort: destinationPort
                )
            )
        case .other:
            break
        case .malformed(let reason):
            statistics.malformedFrames += 1
            unreportedMalformed[reason, default: 0] += 1
            malformedByReason[reason, default: 0] += 1
        case .fragment(let piece):
            if let attempt = fragments.add(piece, at: time) { enqueue(attempt) }
        }
    }

    /// Processes a connection attempt parsed elsewhere (by the XDP program). Its events may wait until the next
    /// ``endOfBatch(now:)``.
    public func process(_ attempt: ConnectionAttempt) {
        enqueue(attempt)
    }

    @inline(__always)
    private func enqueue(_ attempt: ConnectionAttempt) {
        (queuedAttempts + queuedCount).initialize(to: attempt)
        queuedCount += 1
        if queuedCount == Self.queueCapacity { drainQueuedAttempts() }
    }

    /// Processes queued attempts in arrival order. State lookups are random accesses into tables far larger than
    /// the cache; warming the lines for a whole queue first lets the misses overlap instead of serialising.
    private func drainQueuedAttempts() {
        guard queuedCount > 0 else { return }
        let queue = UnsafeBufferPointer(start: queuedAttempts, count: queuedCount)
        retransmits.warm(queue)
        detector.warm(queue)
        for attempt in queue { handle(attempt) }
        queuedCount = 0
    }

    private func handle(_ attempt: ConnectionAttempt) {
        lastTime = max(lastTime, attempt.time)
        statistics.attempts += 1
        if retransmits.isNewConnection(attempt) {
            statistics.newConnections += 1
            unreported.newConnections += 1
            events.emit(.newConnection(attempt))
        }
        guard let scan = detector.observe(attempt) else {
            if let kernel = attempt.kernelDecision {
                handleKernelOnly(kernel, attempt)
            } else if !refused.isEmpty {
                retryRefused(attempt)
            }
            return
        }
        statistics.portScans += 1
        unreported.portScans += 1
        guard let blocking else {
            events.emit(.portScan(scan))
            return
        }
        if let worker, attempt.kernelDecision == nil, !kernelEnforces {
            // Handed over before the event is formatted: every microsecond here is a port the scanner may learn.
            let queued = worker.submit(.scan(scan, retry: false))
            events.emit(.portScan(scan))
            if !queued { overflowed(scan, blocking: blocking) }
            return
        }
        events.emit(.portScan(scan))
        let decision: BlockDecision
        if let kernel = attempt.kernelDecision {
            decision = blocking.adopt(kernel, for: scan)
        } else {
            if kernelEnforces {
                // The program saw no scan here (its pair was evicted, or the pair's SYNs reached us out of order):
                // count it, and block from user space unless the program's block is already in force.
                metrics.increment(.scanRuleDisagreements, by: 1)
                if blocking.isBlocked(blocking.units.unit(of: scan.source)) { return }
            }
            if let worker {
                if !worker.submit(.scan(scan, retry: false)) { overflowed(scan, blocking: blocking) }
                return
            }
            decision = blocking.handle(scan)
            noteRefusal(decision, of: scan, blocking: blocking)
        }
        report(decision, about: scan)
    }

    /// Reports a block decision about `scan`'s source: its event, and a refusal in the log.
    private func report(_ decision: BlockDecision, about scan: PortScan) {
        if case .refused(let refusal) = decision { logRefusal(of: scan.source, refusal, at: scan.time) }
        events.emit(decision.event(about: scan.source, at: scan.time))
    }

    /// Remembers a scanner a limit that may lift refused to block, to retry at its later SYNs.
    private func noteRefusal(_ decision: BlockDecision, of scan: PortScan, blocking: BlockController) {
        if case .refused(let refusal) = decision, refusal.mayLift, !kernelEnforces {
            refused.add(blocking.units.unit(of: scan.source), scan)
        }
    }

    /// A scan the blocking thread had no room for: counted, logged (at most once per ``refusalLogInterval``), and
    /// left to be retried at its source's next SYN, as a refused scan is.
    private func overflowed(_ scan: PortScan, blocking: BlockController) {
        statistics.blockQueueOverflows += 1
        if !kernelEnforces { refused.add(blocking.units.unit(of: scan.source), scan) }
        if let last = overflowLog, scan.time.nanoseconds &- last.logged < Self.refusalLogInterval {
            overflowLog?.unlogged += 1
            return
        }
        var metadata: Logger.Metadata = ["source": "\(scan.source)", "total": "\(statistics.blockQueueOverflows)"]
        if let unlogged = overflowLog?.unlogged, unlogged > 0 { metadata["unlogged_since_last"] = "\(unlogged)" }
        logger.warning("blocking queue full: scanner to be retried at its next SYN", metadata: metadata)
        overflowLog = (scan.time.nanoseconds, 0)
    }

    /// Reports what the blocking thread finished: decisions (with the events and bookkeeping an inline decision
    /// has) and lifted blocks.
    private func takeBlockOutcomes() {
        guard let worker, let blocking else { return }
        for outcome in worker.takeOutcomes() {
            switch outcome {
            case .decided(let scan, let decision, retry: false):
                noteRefusal(decision, of: scan, blocking: blocking)
                report(decision, about: scan)
            case .decided(let scan, let decision, retry: true):
                retried(scan, decision, blocking: blocking)
            case .swept(let lifted):
                for event in lifted { events.emit(event) }
            }
        }
    }

    /// Tries again to block the source of `attempt` if a limit refused it before and it is due: reported with a
    /// `blocked` event once it succeeds, quietly left waiting while the limit holds (its refusal was reported).
    private func retryRefused(_ attempt: ConnectionAttempt) {
        guard let blocking else { return }
        let unit = blocking.units.unit(of: attempt.source)
        guard let earlier = refused.due(unit, at: attempt.time) else { return }
        let scan = PortScan(time: attempt.time, source: attempt.source, destination: earlier.destination, ports: earlier.ports)
        if let worker {
            // A full queue leaves it waiting: it is due again a retry interval later.
            _ = worker.submit(.scan(scan, retry: true))
            return
        }
        retried(scan, blocking.handle(scan), blocking: blocking)
    }

    /// The outcome of a retried block.
    private func retried(_ scan: PortScan, _ decision: BlockDecision, blocking: BlockController) {
        let unit = blocking.units.unit(of: scan.source)
        switch decision {
        case .blocked(let entry):
            refused.remove(unit)
            events.emit(.blocked(entry, at: scan.time))
        case .refused(let refusal) where refusal.mayLift:
            break
        case .refused:
            refused.remove(unit)
        }
    }

    /// A decision of the XDP program at a SYN where the detector found no new scan: a block the program retried
    /// once a limit lifted (the pair was reported, refused, before), or a disagreement, where the kernel's decision
    /// is reported.
    private func handleKernelOnly(_ kernel: KernelDecision, _ attempt: ConnectionAttempt) {
        if kernel != .blockedLater { metrics.increment(.scanRuleDisagreements, by: 1) }
        guard let blocking else { return }
        let scan = PortScan(time: attempt.time, source: attempt.source, destination: attempt.destination, ports: [])
        report(blocking.adopt(kernel, for: scan), about: scan)
    }

    /// Logs a scanner that was not blocked, unless one of the same kind was logged less than
    /// ``refusalLogInterval`` ago; the next line of that kind says how many were left out meanwhile.
    private func logRefusal(of source: IPAddress, _ refusal: BlockRefusal, at time: Timestamp) {
        let kind = refusal.kind
        if let last = refusalLog[kind], time.nanoseconds &- last.logged < Self.refusalLogInterval {
            refusalLog[kind]?.unlogged += 1
            return
        }
        var metadata: Logger.Metadata = ["source": "\(source)", "reason": "\(refusal)"]
        if let unlogged = refusalLog[kind]?.unlogged, unlogged > 0 {
            metadata["unlogged_since_last"] = "\(unlogged)"
        }
        logger.notice("scanner not blocked", metadata: metadata)
        refusalLog[kind] = (time.nanoseconds, 0)
    }

    /// Records frames or records the capture lost before the pipeline saw them.
    public func recordCaptureDrops(_ count: Int, source: CaptureLoss) {
        guard count > 0 else { return }
        drainQueuedAttempts()
        statistics.captureDropped += count
        metrics.increment(.captureDropped(source), by: count)
        logger.warning("capture dropped packets", metadata: ["count": "\(count)", "source": "\(source.rawValue)"])
    }

    /// A thread-safe way in for events decided outside the capture thread (fleet updates, reloads): they are
    /// written, in order, at the next ``endOfBatch(now:)``.
    public var inbox: EventInbox { eventInbox }
    private let eventInbox = EventInbox()

    /// Ends a batch: runs the block expiry sweep (at most once a second), flushes output and reports counts.
    /// - Parameter now: the current time: wall-clock for live capture, the last frame's time in a replay.
    public func endOfBatch(now: Timestamp) {
        drainQueuedAttempts()
        takeBlockOutcomes()
        for event in eventInbox.take() { events.emit(event) }
        lastTime = max(lastTime, now)
        if lastSweep.map({ now.nanoseconds &- $0.nanoseconds >= 1_000_000_000 }) ?? true {
            lastSweep = now
            detector.expire(now: now)
            retransmits.expire(now: now.nanoseconds)
            fragments.expire(now: now)
            if let worker {
                // Its unblocked events come with the outcomes of a later batch; a full queue skips this second.
                _ = worker.submit(.sweep(now))
            } else if let blocking {
                for event in blocking.sweep(now: now) { events.emit(event) }
            }
        }
        events.flush()
        reportMetrics()
    }

    /// Flushes everything at the end of input.
    public func finish() {
        drainQueuedAttempts()
        if let worker {
            // The blocks decided by now are reported before the end.
            worker.waitUntilIdle(limit: .seconds(5))
            takeBlockOutcomes()
        }
        for event in eventInbox.take() { events.emit(event) }
        if let blocking {
            for event in blocking.sweep(now: lastTime) { events.emit(event) }
        }
        events.flush()
        reportMetrics()
    }

    private func reportMetrics() {
        metrics.increment(.framesProcessed, by: unreported.frames)
        metrics.increment(.newConnections, by: unreported.newConnections)
        metrics.increment(.portScans, by: unreported.portScans)
        for (reason, count) in unreportedMalformed { metrics.increment(.malformedFrames(reason), by: count) }
        unreported = Statistics()
        unreportedMalformed.removeAll(keepingCapacity: true)
        let evictedPairs = detector.evictedPairs
        let evictedConnections = retransmits.evictions
        metrics.increment(.trackedPairsEvicted, by: evictedPairs - reportedEvictions.pairs)
        metrics.increment(.trackedConnectionsEvicted, by: evictedConnections - reportedEvictions.connections)
        reportedEvictions = (evictedPairs, evictedConnections)
        metrics.set(.trackedPairs, to: detector.trackedPairs)
        metrics.set(.trackedConnections, to: retransmits.count)
    }
}

/// Confined to its capture thread.
@available(*, unavailable)
extension ConnectionPipeline: Sendable {}

/// Events handed to a pipeline from other threads.
public final class EventInbox: Sendable {
    private let pending = Mutex<[ConnEvent]>([])

    /// Queues events for the pipeline's next batch.
    public func post(_ events: [ConnEvent]) {
        guard !events.isEmpty else { return }
        pending.withLock { $0 += events }
    }

    func take() -> [ConnEvent] {
        pending.withLock { queued in
            defer { queued.removeAll() }
            return queued
        }
    }
}
