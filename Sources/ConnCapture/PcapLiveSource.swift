import CPcap
#if canImport(Glibc)
import Glibc
#endif
public import ConnCore
public import Logging
import Synchronization

/// Captures connection attempts live with libpcap: immediate mode, a kernel BPF filter that passes only SYNs
/// without ACK (IPv4, IPv6, VLAN-tagged), inbound direction only.
///
/// Needs `CAP_NET_RAW` and `CAP_NET_ADMIN` (or root). Drops reported by the kernel are counted and logged.
public final class PcapLiveSource: PacketSource {
    /// Settings of a live capture.
    public struct Configuration: Hashable, Sendable {
        /// The interface to watch (`any` for all).
        public var interface: String
        /// Only attempts to these addresses are captured; `nil` captures attempts to any address.
        public var destinations: [IPAddress]?
        /// The kernel buffer in bytes. Default 16 MiB.
        public var bufferSize: Int32
        /// Bytes kept of each frame: enough for the deepest header chain the parser follows.
        public var snapLength: Int32

        public init(
            interface: String,
            destinations: [IPAddress]? = nil,
            bufferSize: Int32 = 16 << 20,
            snapLength: Int32 = Int32(FrameParser.longestHeaders)
        ) {
            self.interface = interface
            self.destinations = destinations
            self.bufferSize = bufferSize
            self.snapLength = snapLength
        }
    }

    public let configuration: Configuration
    public var name: String { "pcap" }
    /// How often an idle capture still ends a batch (expiry sweep, output flush, drop statistics).
    static let idleWakeupMilliseconds: Int32 = 200
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    private let pendingDestinations = PendingDestinations()
    private let activeHandle = Mutex<PcapHandle?>(nil)

    public init(configuration: Configuration, logger: Logger = Logger(label: "conntrackr.pcap")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Opens the capture and installs the filter now, so that start-up errors (privileges, interface) surface
    /// before services start and the privileges it needs can be dropped afterwards; ``run(into:)`` does it
    /// otherwise. Does nothing when already open.
    public func open() throws {
        try activeHandle.withLock { active in
            guard active == nil else { return }
            let handle = try activate()
            try installFilter(on: handle, destinations: configuration.destinations)
            active = handle
        }
    }

    public func run(into pipeline: ConnectionPipeline) throws {
        try open()
        guard let handle = activeHandle.withLock({ $0 }) else { return }
        defer {
            activeHandle.withLock { $0 = nil }
            pipeline.finish()
        }
        let linkType = try handle.linkType(describing: configuration.interface)
        logger.info(
            "capture started",
            metadata: ["source": "pcap", "interface": "\(configuration.interface)", "link": "\(linkType)"]
        )
        var context = DispatchContext(pipeline: pipeline, linkType: linkType)
        var reportedDrops: UInt32 = 0
        var lastStats = Timestamp.now()
        // In immediate mode libpcap may wait for packets without end; waiting ourselves, with a timeout, keeps the
        // expiry sweep and output moving on a quiet interface.
        var readiness = pollfd(fd: pcap_get_selectable_fd(handle.raw), events: Int16(POLLIN), revents: 0)
        while !stopRequested.load(ordering: .relaxed) {
            let ready = poll(&readiness, 1, Self.idleWakeupMilliseconds)
            if ready < 0 && errno != EINTR {
                throw ConntrackrError(.captureFailed, "capture on \(configuration.interface) failed: poll: errno \(errno)")
            }
            let result = withUnsafeMutablePointer(to: &context) { contextPointer in
                pcap_dispatch(
                    handle.raw, -1,
                    { user, header, bytes in
                        guard let user, let header, let bytes else { return }
                        let context = user.withMemoryRebound(to: DispatchContext.self, capacity: 1) { $0 }
                        let frame = UnsafeRawBufferPointer(start: bytes, count: Int(header.pointee.caplen))
                        context.pointee.pipeline.process(
                            frame: frame, linkType: context.pointee.linkType, time: nanosecondTimestamp(header)
                        )
                    },
                    UnsafeMutableRawPointer(contextPointer).assumingMemoryBound(to: UInt8.self)
                )
            }
            if result == PCAP_ERROR_BREAK { break }
            if result < 0 {
                throw ConntrackrError(.captureFailed, "capture on \(configuration.interface) failed: \(handle.lastError)")
            }
            let now = Timestamp.now()
            pipeline.endOfBatch(now: now)
            if let changed = pendingDestinations.take() {
                try installFilter(on: handle, destinations: changed)
                logger.info("capture filter updated", metadata: ["destinations": "\(changed?.count ?? -1)"])
            }
            if now.nanoseconds - lastStats.nanoseconds >= 1_000_000_000 {
                lastStats = now
                var stats = pcap_stat()
                if pcap_stats(handle.raw, &stats) == 0 {
                    let dropped = stats.ps_drop &+ stats.ps_ifdrop
                    pipeline.recordCaptureDrops(Int(dropped &- reportedDrops), source: .pcap)
                    reportedDrops = dropped
                }
            }
        }
    }

    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        activeHandle.withLock { $0?.breakLoop() }
    }

    public func replaceDestinations(_ destinations: [IPAddress]?) {
        pendingDestinations.post(destinations)
    }

    private func activate() throws -> PcapHandle {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let raw = pcap_create(configuration.interface, &errorBuffer) else {
            throw ConntrackrError(.captureFailed, "cannot capture on \(configuration.interface): \(text(errorBuffer))")
        }
        let handle = PcapHandle(raw)
        pcap_set_snaplen(raw, configuration.snapLength)
        pcap_set_promisc(raw, 0)
        pcap_set_immediate_mode(raw, 1)
        pcap_set_timeout(raw, 100)
        pcap_set_buffer_size(raw, configuration.bufferSize)
        pcap_set_tstamp_precision(raw, Int32(PCAP_TSTAMP_PRECISION_NANO))
        let status = pcap_activate(raw)
        switch status {
        case 0, PCAP_WARNING, PCAP_WARNING_TSTAMP_TYPE_NOTSUP:
            break
        case PCAP_WARNING_PROMISC_NOTSUP:
            break
        case PCAP_ERROR_NO_SUCH_DEVICE:
            throw ConntrackrError(.noSuchInterface, "no such interface: \(configuration.interface)")
        case PCAP_ERROR_PERM_DENIED:
            throw ConntrackrError(
                .missingPrivilege,
                "capture on \(configuration.interface) needs CAP_NET_RAW and CAP_NET_ADMIN (run as root): "
                    + handle.lastError
            )
        default:
            throw ConntrackrError(.captureFailed, "cannot capture on \(configuration.interface): \(handle.lastError)")
        }
        // Outbound SYNs are this host's own connections, not attempts against it.
        _ = pcap_setdirection(raw, PCAP_D_IN)
        // Dispatch returns at once when nothing is buffered; the capture loop waits in poll(2) instead.
        guard pcap_setnonblock(raw, 1, &errorBuffer) == 0 else {
            throw ConntrackrError(.captureFailed, "cannot capture on \(configuration.interface): \(text(errorBuffer))")
        }
        return handle
    }

    private func installFilter(on handle: PcapHandle, destinations: [IPAddress]?) throws {
        let expression = SYNFilter.expression(destinations: destinations)
        var program = bpf_program()
        guard pcap_compile(handle.raw, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw ConntrackrError(.captureFailed, "cannot compile capture filter: \(handle.lastError)")
        }
        defer { pcap_freecode(&program) }
        guard pcap_setfilter(handle.raw, &program) == 0 else {
            throw ConntrackrError(.captureFailed, "cannot install capture filter: \(handle.lastError)")
        }
        logger.debug("capture filter installed", metadata: ["filter": "\(expression)"])
    }

    private func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// What the libpcap callback needs, passed through its `user` pointer.
private struct DispatchContext {
    let pipeline: ConnectionPipeline
    let linkType: LinkType
}
