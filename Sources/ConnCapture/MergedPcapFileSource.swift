public import ConnCore
import Synchronization

/// Replays several capture files as one capture: their records merged in time order (a k-way merge by record
/// time), through one pipeline, so scan and retransmission state runs across files.
///
/// It takes a `tcpdump -G`/`-C` rotation in any order, and captures of several interfaces that overlap in time.
/// Each frame is parsed with its own file's link type. Records of equal time come in the order of their files'
/// first records, then of the arguments, so a capture cut into pieces replays exactly as the whole.
///
/// Memory is bounded: every file is first opened only to read its first record's time, then closed; a file is
/// opened again when the merge reaches that time and closed at its end, so only files that overlap in time are
/// open together, each holding one record (libpcap's) and its read buffer. Standard input (`-`) cannot be read
/// twice and stays open from the start.
///
/// A file that cannot be read, or fails part way (cut inside a record, damaged gzip), is recorded in ``failures``
/// with its one-line reason, after delivering its complete records; the other files are still replayed.
public final class MergedPcapFileSource: PacketSource {
    /// The files, in the order given.
    public let paths: [String]
    public var name: String { "pcap-files" }
    private let stopRequested = Atomic<Bool>(false)
    private let progress: (@Sendable (CaptureReadProgress) -> Void)?
    private let recordedFailures = Mutex<[ConntrackrError]>([])

    /// The files that could not be read, or not to their end, with their reasons, in the order met.
    public var failures: [ConntrackrError] { recordedFailures.withLock { $0 } }

    /// - Parameters:
    ///   - paths: the files; `-` is standard input (at most once).
    ///   - progress: called on the thread running ``run(into:)``, which reads and parses, after each batch of frames
    ///     and at the end; the pipeline runs on a thread of a ``PipelineFeed``, and may be a few batches behind.
    public init(paths: [String], progress: (@Sendable (CaptureReadProgress) -> Void)? = nil) {
        self.paths = paths
        self.progress = progress
    }

    /// A file in the merge: waiting to be opened at its first record's time, or open with a record ready.
    private enum Entry {
        case waiting(file: Int)
        case open(CaptureFile, file: Int)
    }

    /// An entry and where it sorts: its record's time, then its file's rank.
    private struct Head {
        var time: Timestamp
        var rank: Int
        var entry: Entry

        func precedes(_ other: Head) -> Bool { (time, rank) < (other.time, other.rank) }
    }

    public func run(into pipeline: ConnectionPipeline) throws {
        var heap = MinHeap<Head>(by: { $0.precedes($1) })
        var finishedBytes: Int64 = 0
        var frames = 0
        var inBatch = 0
        var lastTime = Timestamp(nanoseconds: 0)
        var openFiles: [Int: CaptureFile] = [:]

        func fail(_ error: ConntrackrError) { recordedFailures.withLock { $0.append(error) } }
        func bytesRead() -> Int64 { openFiles.values.reduce(finishedBytes) { $0 + $1.bytesRead } }
        func close(_ file: Int) {
            if let closed = openFiles.removeValue(forKey: file) { finishedBytes += closed.bytesRead }
        }

        // Ranks: files by the time of their first record, then by argument order.
        var firsts: [(time: Timestamp, file: Int, opened: CaptureFile?)] = []
        for (index, path) in paths.enumerated() {
            do throws(ConntrackrError) {
                let file = try CaptureFile(path: path)
                guard try file.advance() else { continue }  // no records
                // Standard input stays open; a file is closed until its turn comes.
                firsts.append((file.time, index, path == "-" ? file : nil))
            } catch {
                fail(error)
            }
        }
        firsts.sort { ($0.time, $0.file) < ($1.time, $1.file) }
        for (rank, first) in firsts.enumerated() {
            if let opened = first.opened {
                openFiles[first.file] = opened
                heap.push(Head(time: first.time, rank: rank, entry: .open(opened, file: first.file)))
            } else {
                heap.push(Head(time: first.time, rank: rank, entry: .waiting(file: first.file)))
            }
        }

        // Parsing here, the rest of the pipeline on a second thread.
        let feed = PipelineFeed(pipeline: pipeline)
        defer {
            feed.finish()
            progress?(CaptureReadProgress(bytesRead: bytesRead(), frames: frames + inBatch))
        }
        while !stopRequested.load(ordering: .relaxed), var head = heap.popMin() {
            switch head.entry {
            case .waiting(let index):
                do throws(ConntrackrError) {
                    let file = try CaptureFile(path: paths[index])
                    guard try file.advance() else { continue }
                    openFiles[index] = file
                    head.time = file.time
                    head.entry = .open(file, file: index)
                    heap.push(head)
                } catch {
                    fail(error)
                }
            case .open(let file, let index):
                // Deliver this file's records while they come no later than every other file's next one.
                while true {
                    lastTime = file.time
                    feed.process(frame: file.frame, linkType: file.linkType, time: lastTime)
                    inBatch += 1
                    if inBatch == PcapFileSource.batchSize {
                        feed.endOfBatch(now: lastTime)
                        frames += inBatch
                        inBatch = 0
                        progress?(CaptureReadProgress(bytesRead: bytesRead(), frames: frames))
                        if stopRequested.load(ordering: .relaxed) { return }
                    }
                    let more: Bool
                    do throws(ConntrackrError) {
                        more = try file.advance()
                    } catch {
                        feed.endOfBatch(now: lastTime)
                        fail(error)
                        more = false
                    }
                    guard more else {
                        close(index)
                        break
                    }
                    head.time = file.time
                    if let next = heap.min, next.precedes(head) {
                        heap.push(head)
                        break
                    }
                }
            }
        }
    }

    public func stop() { stopRequested.store(true, ordering: .relaxed) }
}

/// A binary min-heap ordered by a given predicate.
struct MinHeap<Element> {
    private var elements: [Element] = []
    private let precedes: (Element, Element) -> Bool

    init(by precedes: @escaping (Element, Element) -> Bool) { self.precedes = precedes }

    var min: Element? { elements.first }
    var isEmpty: Bool { elements.isEmpty }

    mutating func push(_ element: Element) {
        elements.append(element)
        var child = elements.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard precedes(elements[child], elements[parent]) else { break }
            elements.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popMin() -> Element? {
        guard !elements.isEmpty else { return nil }
        elements.swapAt(0, elements.count - 1)
        let top = elements.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < elements.count, precedes(elements[left], elements[smallest]) { smallest = left }
            if right < elements.count, precedes(elements[right], elements[smallest]) { smallest = right }
            guard smallest != parent else { return top }
            elements.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
