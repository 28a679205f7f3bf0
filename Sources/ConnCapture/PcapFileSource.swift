import CPcap
public import ConnCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Replays a capture file (pcap or pcapng, read by libpcap) through the pipeline with the file's own timestamps.
///
/// Every SYN without ACK in the file counts as an attempt from its source to its destination, whatever the
/// direction. A file that ends in the middle of a record still delivers its complete records first, then throws
/// ``ConntrackrError/Code/truncatedCapture``. A record time outside ``Timestamp/recordTimeRange`` (a pcapng
/// `if_tsoffset` or timestamp can say anything) is clamped to the nearer end of it: the frame still counts, at a
/// time that cannot overflow.
public final class PcapFileSource: PacketSource {
    public let path: String
    public var name: String { "pcap-file" }
    private let stopRequested = Atomic<Bool>(false)

    /// Frames handed to the pipeline between two ``ConnectionPipeline/endOfBatch(now:)`` calls.
    static let batchSize = 4096

    public init(path: String) {
        self.path = path
    }

    public func run(into pipeline: ConnectionPipeline) throws {
        let handle = try open()
        let linkType = try handle.linkType(describing: path)
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        var inBatch = 0
        var lastTime = Timestamp(nanoseconds: 0)
        defer { pipeline.finish() }
        while !stopRequested.load(ordering: .relaxed) {
            switch pcap_next_ex(handle.raw, &header, &data) {
            case 1:
                guard let header, let data else { continue }
                lastTime = nanosecondTimestamp(header)
                let frame = UnsafeRawBufferPointer(start: data, count: Int(header.pointee.caplen))
                pipeline.process(frame: frame, linkType: linkType, time: lastTime)
                inBatch += 1
                if inBatch == Self.batchSize {
                    pipeline.endOfBatch(now: lastTime)
                    inBatch = 0
                }
            case PCAP_ERROR_BREAK:  // end of file
                return
            default:
                pipeline.endOfBatch(now: lastTime)
                throw ConntrackrError(.truncatedCapture, "\(path): \(handle.lastError)")
            }
        }
    }

    public func stop() { stopRequested.store(true, ordering: .relaxed) }

    private func open() throws -> PcapHandle {
        // libpcap reads each record with two `fread`s; with stdio's default buffer (one file-system block, 4 KiB)
        // that is a read(2) for every 4 KiB of capture. A 1 MiB buffer cuts the system calls 256-fold.
        // As with tcpdump -r -, "-" is standard input: a duplicate of it, since libpcap closes the file it reads.
        guard let file = path == "-" ? Self.duplicateStandardInput() : fopen(path, "rb") else {
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(String(cString: strerror(errno)))")
        }
        // glibc ignores the size unless it is given the buffer too.
        let readBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.readBufferBytes, alignment: 64)
        setvbuf(file, readBuffer.assumingMemoryBound(to: CChar.self), _IOFBF, Self.readBufferBytes)
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let raw = pcap_fopen_offline_with_tstamp_precision(file, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer)
        else {
            fclose(file)  // libpcap takes the file only when it succeeds
            readBuffer.deallocate()
            let reason = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // libpcap names the file itself in some messages.
            let detail = reason.hasPrefix(path) ? String(reason.dropFirst(path.count).drop { $0 == ":" || $0 == " " }) : reason
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(detail)")
        }
        return PcapHandle(raw, freeingAfterClose: readBuffer)
    }

    private static func duplicateStandardInput() -> UnsafeMutablePointer<FILE>? {
        let descriptor = dup(STDIN_FILENO)
        guard descriptor >= 0 else { return nil }
        guard let file = fdopen(descriptor, "rb") else {
            let saved = errno
            close(descriptor)
            errno = saved
            return nil
        }
        return file
    }

    /// The stdio buffer libpcap reads the capture through.
    static let readBufferBytes = 1 << 20
}
