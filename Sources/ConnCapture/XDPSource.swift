public import ConnCore
public import ConnXDP
public import Logging
import Synchronization

/// Captures connection attempts with conntrackr's XDP program: the kernel parses every frame on the interface
/// before the network stack sees it and writes each SYN without ACK into a ring buffer, which this source drains
/// in batches on the thread that calls ``run(into:)``.
///
/// The same program drops packets from the prefixes in its pinned block maps (see `XDPBlocker` in ConnBlock);
/// dropped packets are not reported. Records the ring buffer had no room for are read from the program's
/// counters and reported to the pipeline as capture drops (`xdp_ringbuf`).
///
/// Needs `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_PERFMON` (or root) and bpffs mounted at the pin root's file system.
/// The program is detached when ``run(into:)`` returns, and by the kernel if the process dies.
public final class XDPSource: PacketSource {
    /// Settings of an XDP capture.
    public struct Configuration: Hashable, Sendable {
        /// The interface to attach to.
        public var interface: String
        /// How to attach. Default: native, falling back to generic.
        public var mode: XDPProgram.AttachMode
        /// The bpffs directory of the pinned maps. Default `/sys/fs/bpf/conntrackr`.
        public var pinRoot: String
        /// Only attempts to these addresses are reported; `nil` reports attempts to any address (XDP sees only
        /// received frames, so every attempt is inbound, but forwarded traffic passes too).
        public var destinations: [IPAddress]?
        /// The longest wait for records before the pipeline's batch ends anyway. Default 100 ms.
        public var pollInterval: Duration
        /// The most records handed over between two ends of batch. Default 4096.
        public var batchSize: Int
        /// The scan rule and block policy the program enforces itself; `nil` leaves them to user space.
        public var enforcement: KernelEnforcement?

        public init(
            interface: String,
            mode: XDPProgram.AttachMode = .auto,
            pinRoot: String = XDPProgram.defaultPinRoot,
            destinations: [IPAddress]? = nil,
            pollInterval: Duration = .milliseconds(100),
            batchSize: Int = 4096,
            enforcement: KernelEnforcement? = nil
        ) {
            self.interface = interface
            self.mode = mode
            self.pinRoot = pinRoot
            self.destinations = destinations
            self.pollInterval = pollInterval
            self.batchSize = batchSize
            self.enforcement = enforcement
        }
    }

    public let configuration: Configuration
    public var name: String { "xdp" }
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    private let pendingDestinations = PendingDestinations()
    private let active = Mutex<Attached?>(nil)

    private struct Attached {
        let program: XDPProgram
        let mode: XDPProgram.AttachMode
    }

    public init(configuration: Configuration, logger: Logger = Logger(label: "conntrackr.xdp")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Loads and attaches the program now, so that start-up errors (privileges, bpffs, interface, another
    /// program) surface before services start; ``run(into:)`` does it otherwise. Does nothing when attached.
    /// - Returns: the mode in use.
    @discardableResult
    public func attach() throws -> XDPProgram.AttachMode {
        try active.withLock { active in
            if let active { return active.mode }
            let program = try XDPProgram(
                pinRoot: configuration.pinRoot, batchSize: configuration.batchSize,
                enforcement: configuration.enforcement
            )
            let mode = try program.attach(to: configuration.interface, mode: configuration.mode)
            active = Attached(program: program, mode: mode)
            logger.info(
                "XDP program attached",
                metadata: ["interface": "\(configuration.interface)", "mode": "\(mode)", "pins": "\(program.pinRoot)"]
            )
            return mode
        }
    }

    /// The mode the program is attached in, `nil` when it is not attached.
    public var attachedMode: XDPProgram.AttachMode? { active.withLock { $0?.mode } }

    /// The program's counters while it is attached (for metrics), `nil` otherwise. Safe from any thread.
    public func statistics() throws -> XDPStatistics? {
        // The program is released only under the lock, so it outlives this read.
        let program = active.withLock { $0?.program }
        return try program?.statistics()
    }

    /// The program's scan-rule counters while it is attached, `nil` otherwise. Safe from any thread.
    public func scanStatistics() throws -> KernelScanStatistics? {
        let program = active.withLock { $0?.program }
        return try program?.scanStatistics()
    }

    public func run(into pipeline: ConnectionPipeline) throws {
        try attach()
        guard let attached = active.withLock({ $0 }) else { return }
        let program = attached.program
        defer {
            active.withLock { $0 = nil }
            pipeline.finish()
        }
        var reportedLosses = try program.statistics().ringBufferFull
        var lastLossCheck = ContinuousClock.now
        var destinations = configuration.destinations.map(Set.init)
        func deliver(_ record: XDPRecord, offset: Int64) {
            if let destinations, !destinations.contains(record.destination) { return }
            pipeline.process(record.attempt(bootToWall: offset))
        }
        func reportLosses() throws {
            let lost = try program.statistics().ringBufferFull
            pipeline.recordCaptureDrops(Int(clamping: lost &- reportedLosses), source: .xdpRingBuffer)
            reportedLosses = lost
        }

        // The wording is what the end-to-end tests wait for, as with the pcap source.
        logger.info(
            "capture started",
            metadata: ["source": "xdp", "interface": "\(configuration.interface)", "mode": "\(attached.mode)"]
        )
        var batchWasFull = false
        while !stopRequested.load(ordering: .relaxed) {
            if let changed = pendingDestinations.take() { destinations = changed.map(Set.init) }
            let offset = bootToWallOffset()
            let count = try program.poll(timeout: batchWasFull ? .zero : configuration.pollInterval) {
                deliver($0, offset: offset)
            }
            batchWasFull = count == configuration.batchSize
            if ContinuousClock.now - lastLossCheck >= .milliseconds(500) {
                lastLossCheck = .now
                try reportLosses()
            }
            pipeline.endOfBatch(now: Timestamp.now())
        }

        // Detach first so that nothing new arrives, then deliver what is still in the ring.
        program.detach()
        logger.info("XDP program detached", metadata: ["interface": "\(configuration.interface)"])
        let offset = bootToWallOffset()
        while try program.poll(timeout: .zero, { deliver($0, offset: offset) }) == configuration.batchSize {}
        try reportLosses()
        pipeline.endOfBatch(now: Timestamp.now())
    }

    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        active.withLock { $0?.program.wake() }
    }

    public func replaceDestinations(_ destinations: [IPAddress]?) {
        pendingDestinations.post(destinations)
    }
}
