#if canImport(Glibc)
import Glibc
#endif
public import ConnCore
public import Logging
public import ServiceLifecycle
import Synchronization

/// Runs a ``PacketSource`` on a thread of its own, as a swift-service-lifecycle `Service`.
///
/// Capture loops block in `poll` and must never occupy a Swift concurrency thread, so the source gets a dedicated
/// thread; the service's `run()` waits for it and stops the source on graceful shutdown or cancellation.
public final class CaptureService: Service, Sendable {
    /// Whether the capture loop is running, for health checks.
    public var isRunning: Bool { running.value.load(ordering: .relaxed) }

    private let source: any PacketSource
    private let pipelineBox: Mutex<PipelineBox?>
    private let running = RunningFlag()
    private let logger: Logger

    /// - Parameter pipeline: the pipeline the source feeds; it is used only by the capture thread from now on.
    public init(source: any PacketSource, pipeline: sending ConnectionPipeline, logger: Logger) {
        self.source = source
        self.pipelineBox = Mutex(PipelineBox(pipeline))
        self.logger = logger
    }

    public func run() async throws {
        guard let box = pipelineBox.withLock({ $0.take() }) else {
            throw ConntrackrError(.captureFailed, "a capture service runs only once")
        }
        let source = self.source
        let running = self.running
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let job = CaptureJob(source: source, pipeline: box.pipeline, running: running) { result in
                    continuation.resume(with: result)
                }
                job.start()
            }
        } onCancelOrGracefulShutdown: {
            source.stop()
        }
        logger.info("capture stopped", metadata: ["source": "\(source.name)"])
    }
}

/// Moves the pipeline to the capture thread exactly once.
private struct PipelineBox: @unchecked Sendable {
    // @unchecked: the pipeline is handed over once, from the caller to the capture thread, and never shared.
    let pipeline: ConnectionPipeline
    init(_ pipeline: ConnectionPipeline) { self.pipeline = pipeline }
}

extension Optional where Wrapped == PipelineBox {
    fileprivate mutating func take() -> PipelineBox? {
        defer { self = nil }
        return self
    }
}

/// One run of a source on a POSIX thread, reporting its outcome through a callback.
private final class CaptureJob: @unchecked Sendable {
    // @unchecked: after `start()` only the capture thread touches the pipeline.
    let source: any PacketSource
    let pipeline: ConnectionPipeline
    let running: RunningFlag
    let completion: @Sendable (Result<Void, any Error>) -> Void

    init(
        source: any PacketSource,
        pipeline: ConnectionPipeline,
        running: RunningFlag,
        completion: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        self.source = source
        self.pipeline = pipeline
        self.running = running
        self.completion = completion
    }

    func start() {
        let created = DetachedThread.start { self.execute() }
        if created != 0 {
            completion(.failure(ConntrackrError(.captureFailed, "cannot start the capture thread (error \(created))")))
        }
    }

    private func execute() {
        running.value.store(true, ordering: .relaxed)
        defer { running.value.store(false, ordering: .relaxed) }
        do {
            try source.run(into: pipeline)
            completion(.success(()))
        } catch {
            completion(.failure(error))
        }
    }
}

/// A flag shared between the service and its capture thread.
private final class RunningFlag: Sendable {
    let value = Atomic<Bool>(false)
}
