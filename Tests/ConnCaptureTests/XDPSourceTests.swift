import ConnCapture
import ConnCore
import ConnTesting
import ConnXDP
import Dispatch
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// XDPSource attached for real, to the loopback interface of a private network namespace that only this test's
/// thread lives in: real SYNs go through the program, the ring buffer and the pipeline, and nothing outside the
/// namespace sees them. (The namespace lab tests with veth pairs and nmap are in Tests/e2e.)
@Suite(.enabled(if: geteuid() == 0, "attaching XDP needs root"))
struct XDPSourceTests {
    static let client = IPAddress("198.51.100.9")!
    static let server = IPAddress("203.0.113.7")!
    static let flood = FrameBuilder.tcp(from: IPAddress("198.51.100.10")!, 1000, to: server, 80)

    @Test func reportsAttemptsAndScansFromTheRingBuffer() throws {
        let root = try TemporaryPinRoot()
        defer { root.remove() }
        let outcome = try PrivateNetworkNamespace.run { () throws -> Outcome in
            try PrivateNetworkNamespace.shell("ip link set lo up")
            try PrivateNetworkNamespace.shell("ip addr add \(Self.server)/32 dev lo")
            try PrivateNetworkNamespace.shell("ip addr add \(Self.client)/32 dev lo")

            let source = XDPSource(configuration: .init(interface: "lo", mode: .auto, pinRoot: root.path))
            let mode = try source.attach()

            // The interface is taken: a second program gets a clear error, not a silent replacement.
            let second = try XDPProgram(pinRoot: root.path)
            var secondError: ConntrackrError?
            do { try second.attach(to: "lo", mode: .generic) } catch let error as ConntrackrError {
                secondError = error
            }

            let before = Timestamp.now()
            for port: UInt16 in [81, 82, 83, 84] {
                try sendSYN(from: Self.client, to: Self.server, port: port)
            }
            let events = CollectingEventSink()
            let metrics = RecordingMetricsSink()
            let pipeline = ConnectionPipeline(events: events, metrics: metrics)
            // Ring buffer losses: the second program shares the pinned statistics but has a ring of its own that
            // nobody reads, so flooding it overflows that ring and moves the counter the source reports from.
            let lossesBefore = try second.statistics().ringBufferFull
            let flood = Self.flood
            // Flood, then stop, from another thread while the source runs; the source reports the losses it
            // sees by its last statistics reading at the latest.
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(300)) {
                _ = try? second.testRun(flood, repeat: 70_000)
                usleep(300_000)
                source.stop()
            }
            let clock = ContinuousClock()
            let started = clock.now
            try source.run(into: pipeline)
            let ranFor = clock.now - started
            let after = Timestamp.now()
            let losses = try second.statistics().ringBufferFull - lossesBefore

            // Detached on return: the interface takes another program again.
            let third = try XDPProgram(pinRoot: root.path)
            let reattached = (try? third.attach(to: "lo", mode: .generic)) != nil
            third.detach()
            return Outcome(
                mode: mode,
                secondError: secondError,
                events: events.events,
                before: before,
                after: after,
                ranFor: ranFor,
                losses: losses,
                reportedLosses: metrics.value(of: .captureDropped(.xdpRingBuffer)),
                reattached: reattached,
                attachedAfterRun: source.attachedMode != nil
            )
        }

        #expect(outcome.mode == .generic, "loopback has no native XDP: auto falls back to generic")
        #expect(outcome.secondError?.code == .alreadyRunning)
        #expect(outcome.secondError?.message.contains("already has an XDP program attached") == true)
        #expect(outcome.reattached)
        #expect(outcome.losses > 0)
        #expect(outcome.reportedLosses == Int(outcome.losses), "ring buffer losses reach the pipeline as capture drops")
        #expect(!outcome.attachedAfterRun)

        let attempts = outcome.events.compactMap { event -> ConnectionAttempt? in
            if case .newConnection(let attempt) = event { return attempt }
            return nil
        }
        #expect(attempts.map(\.destinationPort) == [81, 82, 83, 84])
        #expect(attempts.allSatisfy { $0.source == Self.client && $0.destination == Self.server })
        // Kernel boot-time stamps turned into wall-clock time.
        #expect(attempts.allSatisfy { $0.time >= outcome.before + .milliseconds(-5) && $0.time <= outcome.after })
        let scans = outcome.events.compactMap { event -> PortScan? in
            if case .portScan(let scan) = event { return scan }
            return nil
        }
        #expect(scans.count == 1)
        #expect(scans.first?.source == Self.client)
    }

    struct Outcome: Sendable {
        var mode: XDPProgram.AttachMode
        var secondError: ConntrackrError?
        var events: [ConnEvent]
        var before: Timestamp
        var after: Timestamp
        var ranFor: Duration
        var losses: UInt64
        var reportedLosses: Int
        var reattached: Bool
        var attachedAfterRun: Bool
    }
}

/// Opens a TCP connection without waiting for it: the kernel sends one SYN (and gets a reset back).
private func sendSYN(from source: IPAddress, to destination: IPAddress, port: UInt16) throws {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { throw ConntrackrError(.captureFailed, "socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    func address(_ ip: IPAddress, _ port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = ip.ipv4Value!.bigEndian
        return address
    }
    var local = address(source, 0)
    var remote = address(destination, port)
    let size = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
    }
    guard bound == 0 else { throw ConntrackrError(.captureFailed, "bind: \(String(cString: strerror(errno)))") }
    let connected = withUnsafePointer(to: &remote) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) }
    }
    guard connected == 0 || errno == EINPROGRESS else {
        throw ConntrackrError(.captureFailed, "connect: \(String(cString: strerror(errno)))")
    }
    usleep(20_000)  // let the SYN leave before the socket closes
}

/// Runs code on a thread of its own inside a fresh, empty network namespace, which disappears with the thread.
enum PrivateNetworkNamespace {
    private final class Job: @unchecked Sendable {
        // @unchecked: `failure` is written by the job's thread before pthread_join returns, and read after.
        let body: () throws -> Void
        var failure: (any Error)?
        init(_ body: @escaping () throws -> Void) { self.body = body }
    }

    /// Runs `body` and returns what it returns, or throws what it throws.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        try runOnThread {
            let value = try body()
            box.value.withLock { $0 = value }
        }
        return box.value.withLock { $0! }
    }

    private final class ResultBox<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
    }

    private static func runOnThread(_ body: @escaping () throws -> Void) throws {
        let job = Job(body)
        var thread = pthread_t()
        let created = pthread_create(
            &thread,
            nil,
            { raw in
                let job = Unmanaged<Job>.fromOpaque(raw!).takeUnretainedValue()
                do {
                    try PrivateNetworkNamespace.enterNew()
                    try job.body()
                } catch {
                    job.failure = error
                }
                return nil
            },
            Unmanaged.passUnretained(job).toOpaque()
        )
        guard created == 0 else { throw ConntrackrError(.captureFailed, "pthread_create failed: \(created)") }
        pthread_join(thread, nil)
        if let failure = job.failure { throw failure }
    }

    /// unshare(CLONE_NEWNET) for the calling thread only. Glibc declares `unshare` only under _GNU_SOURCE, which
    /// Swift's Glibc module does not set, so it is looked up by name.
    private static func enterNew() throws {
        typealias Unshare = @convention(c) (Int32) -> Int32
        let newNetworkNamespace: Int32 = 0x4000_0000  // CLONE_NEWNET
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "unshare") else {
            throw ConntrackrError(.kernelUnsupported, "unshare not found")
        }
        guard unsafeBitCast(symbol, to: Unshare.self)(newNetworkNamespace) == 0 else {
            throw ConntrackrError(.kernelUnsupported, "unshare(CLONE_NEWNET): \(String(cString: strerror(errno)))")
        }
    }

    /// Runs a command (split on spaces) in the calling thread's namespace and waits for it, at most 10 seconds.
    static func shell(_ command: String) throws {
        let arguments = ["timeout", "10"] + command.split(separator: " ").map(String.init)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawnp(&pid, "timeout", nil, nil, &argv, environ)
        guard spawned == 0 else {
            throw ConntrackrError(.captureFailed, "\(command): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        guard status == 0 else { throw ConntrackrError(.captureFailed, "\(command) failed with status \(status)") }
    }
}
