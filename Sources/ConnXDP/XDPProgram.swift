import CXDP
public import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// conntrackr's XDP program (`bpf/conntrackr.bpf.c`), loaded into the kernel with its maps pinned under a bpffs
/// directory: the low-level handle under the XDP capture source (`XDPSource`, ConnCapture) and the XDP blocker
/// (`XDPBlocker`, ConnBlock), also used by tests and benchmarks.
///
/// Loading reuses the maps already pinned under ``pinRoot``, so blocks made by an earlier run stay in force. The
/// program is attached through a BPF link: the kernel detaches it when this object is released or the process
/// exits, even by `kill -9`.
///
/// Needs `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_PERFMON` (root has them) and bpffs mounted.
public final class XDPProgram: @unchecked Sendable {
    // @unchecked: every use of the C handle that changes it (attach, detach, poll) holds `state`'s lock; `wake()`,
    // `statistics()` and `testRun` only write an eventfd or use a map or program descriptor, which the kernel
    // serialises, so they are safe from any thread.
    // The handle is freed in deinit, when no other reference can exist.

    /// Where conntrackr pins its maps unless configured otherwise (`/sys/fs/bpf/conntrackr`): the one default of
    /// the agent's `--pin-dir`, the blocklist command's and the embedders'.
    public static let defaultPinRoot = CT_DEFAULT_PIN_ROOT

    /// How the program is attached to an interface.
    public enum AttachMode: String, Hashable, Sendable, CaseIterable {
        /// In the driver, before any socket buffer exists: fastest, where the driver supports it.
        case native
        /// In the kernel's generic receive path: works on every interface, at about half the speed.
        case generic
        /// Native, falling back to generic where the driver refuses native XDP.
        case auto
    }

    /// What the program returned for a frame.
    public enum Verdict: UInt32, Hashable, Sendable {
        case aborted = 0
        case drop = 1
        case pass = 2
        case tx = 3
        case redirect = 4
    }

    /// The bpffs directory holding the pinned maps.
    public let pinRoot: String
    private let handle: OpaquePointer
    private let state: Mutex<State>

    private struct State {
        var batch: UnsafeMutableBufferPointer<ct_event>
        var attachedInterface: String?
    }

    /// Loads the program and creates or reuses the maps pinned under `pinRoot`.
    /// - Parameters:
    ///   - batchSize: the most records one ``poll(timeout:_:)`` delivers.
    ///   - wakeupBytes: how much data waits in the ring buffer before the program wakes the reader; `nil` keeps the
    ///     program's default (256 KiB). Below it, records wait for the next timed poll.
    ///   - enforcement: the scan rule and block policy the program applies itself; `nil` (or a rule it cannot
    ///     hold, see ``KernelEnforcement/init(rule:policy:)``) leaves detection to user space.
    /// - Throws: ``ConntrackrError`` with `.missingPrivilege`, `.kernelUnsupported` (bpffs not mounted) or
    ///   `.bpfFailed`, in one line saying what to do.
    public init(
        pinRoot: String = XDPProgram.defaultPinRoot,
        batchSize: Int = 4096,
        wakeupBytes: Int? = nil,
        enforcement: KernelEnforcement? = nil
    ) throws {
        precondition(batchSize > 0, "batchSize must be positive")
        var raw: OpaquePointer?
        let wakeup = UInt64(max(0, wakeupBytes ?? 0))
        if let enforcement {
            var config = enforcement.config
            let ignored = enforcement.ignoredPortWords
            try ignored.withUnsafeBufferPointer { words in
                _ = try cxdpCall { ct_program_open(pinRoot, wakeup, &config, words.baseAddress, &raw, $0, $1) }
            }
        } else {
            try cxdpCall { ct_program_open(pinRoot, wakeup, nil, nil, &raw, $0, $1) }
        }
        guard let raw else { throw ConntrackrError(.bpfFailed, "loading the XDP program returned no handle") }
        self.pinRoot = pinRoot
        self.handle = raw
        let batch = UnsafeMutableBufferPointer<ct_event>.allocate(capacity: batchSize)
        self.state = Mutex(State(batch: batch, attachedInterface: nil))
    }

    deinit {
        ct_program_close(handle)
        state.withLock { $0.batch.deallocate() }
    }

    /// The interface the program is attached to, if any.
    public var attachedInterface: String? { state.withLock { $0.attachedInterface } }

    /// Attaches the program to `interface`.
    /// - Returns: the mode in use: ``AttachMode/native`` or ``AttachMode/generic``.
    /// - Throws: ``ConntrackrError`` with `.noSuchInterface`, `.alreadyRunning` (another XDP program is attached
    ///   there), `.missingPrivilege` or `.bpfFailed`.
    @discardableResult
    public func attach(to interface: String, mode: AttachMode = .auto) throws -> AttachMode {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw ConntrackrError(.noSuchInterface, "no such interface: \(interface)") }
        let requested: ct_xdp_mode =
            switch mode {
            case .native: CT_XDP_MODE_NATIVE
            case .generic: CT_XDP_MODE_GENERIC
            case .auto: CT_XDP_MODE_AUTO
            }
        return try state.withLock { state in
            var used = CT_XDP_MODE_AUTO
            try cxdpCall { ct_program_attach(handle, Int32(index), requested, &used, $0, $1) }
            state.attachedInterface = interface
            return used == CT_XDP_MODE_NATIVE ? .native : .generic
        }
    }

    /// Detaches the program from its interface; the maps stay pinned.
    public func detach() {
        state.withLock { state in
            ct_program_detach(handle)
            state.attachedInterface = nil
        }
    }

    /// Waits up to `timeout` for records, then hands each waiting record (up to the batch size) to `body`.
    ///
    /// The program wakes the reader only once a good amount of data waits, so a poll usually ends by its timeout
    /// and then reads whatever arrived meanwhile. Records past the batch size stay for the next call: call again
    /// with a zero timeout while the result equals the batch size.
    /// - Returns: the number of records delivered.
    @discardableResult
    public func poll(timeout: Duration, _ body: (XDPRecord) throws -> Void) throws -> Int {
        let milliseconds = Int32(clamping: timeout.nanosecondsClamped / 1_000_000)
        return try state.withLock { state in
            var count = 0
            try cxdpCall {
                ct_program_poll(handle, milliseconds, state.batch.baseAddress, state.batch.count, &count, $0, $1)
            }
            for index in 0..<count {
                try body(XDPRecord(state.batch[index]))
            }
            return count
        }
    }

    /// The scan rule's counters, summed over CPUs (zero while the program does not enforce). Safe from any thread.
    public func scanStatistics() throws -> KernelScanStatistics {
        var stats = ct_scan_stats()
        try cxdpCall { ct_program_read_scan_stats(handle, &stats, $0, $1) }
        return KernelScanStatistics(stats)
    }

    /// Ends a ``poll(timeout:_:)`` that is waiting, and makes every later one return without waiting. For
    /// shutting down; safe from any thread.
    public func wake() {
        ct_program_wake(handle)
    }

    /// The program's counters, summed over CPUs. They live in a pinned map, so they count from the map's creation,
    /// not from this load: compare two readings. Safe from any thread.
    public func statistics() throws -> XDPStatistics {
        var stats = ct_stats()
        try cxdpCall { ct_program_read_stats(handle, &stats, $0, $1) }
        var guards = ct_guard_stats()
        try cxdpCall { ct_program_read_guard_stats(handle, &guards, $0, $1) }
        return XDPStatistics(stats, guards: guards)
    }

    /// Runs the program on `frame` (at least 14 bytes) with `BPF_PROG_TEST_RUN`, as the kernel would for a
    /// received frame: maps are consulted and updated and records written as for real traffic.
    /// - Parameters:
    ///   - ingressInterfaceIndex: the interface the frame pretends to arrive on; 0 is loopback.
    ///   - repeat: how many times the frame is received in a row.
    /// - Returns: the verdict of the last run.
    public func testRun(_ frame: [UInt8], ingressInterfaceIndex: UInt32 = 0, repeat: UInt32 = 1) throws -> Verdict {
        var verdict: UInt32 = 0
        _ = try frame.withUnsafeBytes { bytes in
            try cxdpCall {
                ct_program_test_run(
                    handle,
                    bytes.baseAddress,
                    bytes.count,
                    ingressInterfaceIndex,
                    max(1, `repeat`),
                    &verdict,
                    $0,
                    $1
                )
            }
        }
        guard let known = Verdict(rawValue: verdict) else {
            throw ConntrackrError(.bpfFailed, "the XDP program returned an unknown verdict \(verdict)")
        }
        return known
    }
}

/// One connection attempt as the XDP program reported it.
public struct XDPRecord: Hashable, Sendable {
    /// When the program saw the frame, in CLOCK_BOOTTIME nanoseconds.
    public var bootTime: UInt64
    public var source: IPAddress
    public var sourcePort: UInt16
    public var destination: IPAddress
    public var destinationPort: UInt16
    /// The index of the interface the frame arrived on.
    public var interfaceIndex: UInt32
    /// What the program's own scan rule decided at this SYN, if anything.
    public var kernelDecision: KernelDecision?

    init(_ event: ct_event) {
        self.bootTime = event.time_ns
        self.source = ipAddress(event.saddr)
        self.sourcePort = event.sport
        self.destination = ipAddress(event.daddr)
        self.destinationPort = event.dport
        self.interfaceIndex = event.ifindex
        self.kernelDecision = KernelDecision(rawValue: event.verdict)
    }

    /// The attempt, stamped in wall-clock time with `bootToWall` (wall-clock minus boot-time nanoseconds).
    public func attempt(bootToWall offset: Int64) -> ConnectionAttempt {
        ConnectionAttempt(
            time: Timestamp(nanoseconds: Int64(truncatingIfNeeded: bootTime) &+ offset),
            source: source,
            sourcePort: sourcePort,
            destination: destination,
            destinationPort: destinationPort,
            kernelDecision: kernelDecision
        )
    }
}

/// The XDP program's counters, summed over CPUs.
public struct XDPStatistics: Hashable, Sendable {
    /// Frames the program ran on.
    public var frames: UInt64
    /// SYN-without-ACK segments seen and not dropped.
    public var syns: UInt64
    /// Records written to the ring buffer.
    public var events: UInt64
    /// Records lost because the ring buffer was full.
    public var ringBufferFull: UInt64
    /// Packets dropped because their source is blocked.
    public var dropped: UInt64
    /// Frames judged truncated or malformed (all passed).
    public var malformed: UInt64
    /// Packets from a blocked prefix passed because their source is allowlisted.
    public var allowOverrides: UInt64
    /// Packets from a blocked prefix passed because the block had expired.
    public var expiredHits: UInt64
    /// TCP fragments dropped because they split the header's first 16 bytes (`nmap -f`; RFC 1858).
    public var tinyFragments: UInt64 = 0
    /// IPv6 packets dropped because their extension-header chain is longer than the program follows
    /// (``ConnCore/FrameParser/maxIPv6ExtensionHeaders``).
    public var longHeaderChains: UInt64 = 0

    init(_ stats: ct_stats, guards: ct_guard_stats? = nil) {
        self.tinyFragments = guards?.tiny_fragments ?? 0
        self.longHeaderChains = guards?.long_header_chains ?? 0
        self.frames = stats.frames
        self.syns = stats.syns
        self.events = stats.events
        self.ringBufferFull = stats.ringbuf_full
        self.dropped = stats.dropped
        self.malformed = stats.malformed
        self.allowOverrides = stats.allow_overrides
        self.expiredHits = stats.expired_hits
    }
}
