import CPcap
public import ConnCore
import Synchronization

/// Replays a capture file (pcap or pcapng, read by libpcap) through the pipeline with the file's own timestamps.
///
/// Every SYN without ACK in the file counts as an attempt from its source to its destination, whatever the
/// direction. A file that ends in the middle of a record still delivers its complete records first, then throws
/// ``ConntrackrError/Code/truncatedCapture``.
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
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard
            let raw = pcap_open_offline_with_tstamp_precision(
                path, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer
            )
        else {
            let reason = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // libpcap names the file itself in some messages.
            let detail = reason.hasPrefix(path) ? String(reason.dropFirst(path.count).drop { $0 == ":" || $0 == " " }) : reason
            throw ConntrackrError(.unreadableCapture, "cannot read capture \(path): \(detail)")
        }
        return PcapHandle(raw)
    }
}
