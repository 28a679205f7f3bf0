public import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How far a replay has read, reported after each batch of frames.
public struct CaptureReadProgress: Hashable, Sendable {
    /// Bytes of the files consumed (compressed bytes for gzip files).
    public var bytesRead: Int64
    /// Records read.
    public var frames: Int

    public init(bytesRead: Int64, frames: Int) {
        self.bytesRead = bytesRead
        self.frames = frames
    }
}

/// Replays a capture file (pcap or pcapng, plain or gzip-compressed, read by libpcap) through the pipeline with the
/// file's own timestamps.
///
/// Every SYN without ACK in the file counts as an attempt from its source to its destination, whatever the
/// direction. A file that ends in the middle of a record still delivers its complete records first, then throws
/// ``ConntrackrError/Code/truncatedCapture``; so does a gzip stream that is damaged or cut short. A record time
/// outside ``Timestamp/recordTimeRange`` (a pcapng `if_tsoffset` or timestamp can say anything) is clamped to the
/// nearer end of it: the frame still counts, at a time that cannot overflow. Several files make one timeline with
/// ``MergedPcapFileSource``. Frames are read and parsed on the calling thread and the pipeline runs on a second
/// one (``PipelineFeed``); ``run(into:)`` returns once the pipeline has finished, and the pipeline is the caller's
/// again.
public final class PcapFileSource: PacketSource {
    public let path: String
    public var name: String { "pcap-file" }
    private let stopRequested = Atomic<Bool>(false)
    private let progress: (@Sendable (CaptureReadProgress) -> Void)?

    /// Frames handed to the pipeline between two ``ConnectionPipeline/endOfBatch(now:)`` calls.
    static let batchSize = 4096

    /// - Parameters:
    ///   - path: the file; `-` is standard input.
    ///   - progress: called on the thread running ``run(into:)``, which reads and parses, after each batch of frames
    ///     and at the end; the pipeline runs on a thread of a ``PipelineFeed``, and may be a few batches behind.
    public init(path: String, progress: (@Sendable (CaptureReadProgress) -> Void)? = nil) {
        self.path = path
        self.progress = progress
    }

    public func run(into pipeline: ConnectionPipeline) throws {
        let file = try CaptureFile(path: path)
        let linkType = file.linkType
        var inBatch = 0
        var frames = 0
        // Parsing here, the rest of the pipeline on a second thread.
        let feed = PipelineFeed(pipeline: pipeline)
        defer {
            feed.finish()
            progress?(CaptureReadProgress(bytesRead: file.bytesRead, frames: frames + inBatch))
        }
        while !stopRequested.load(ordering: .relaxed) {
            do {
                guard try file.advance() else { return }
            } catch {
                feed.endOfBatch(now: file.time)
                throw error
            }
            feed.process(frame: file.frame, linkType: linkType, time: file.time)
            inBatch += 1
            if inBatch == Self.batchSize {
                feed.endOfBatch(now: file.time)
                frames += inBatch
                inBatch = 0
                progress?(CaptureReadProgress(bytesRead: file.bytesRead, frames: frames))
            }
        }
    }

    public func stop() { stopRequested.store(true, ordering: .relaxed) }

    /// The size on disk of a capture file (`-`: standard input), when it is a regular file rather than a pipe.
    public static func fileSize(of path: String) -> Int64? { CaptureFile.size(of: path) }
}
