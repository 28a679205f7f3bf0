import ConnCore

#if canImport(Glibc)
import Glibc
#endif

/// Reads the records of a plain classic pcap file straight from its descriptor into one buffer, and hands them out
/// in place: what libpcap's `pcap_next_ex` gives for the same file, without its two `fread`s and its copy of every
/// record (half of a replay's reading thread went there).
///
/// Only the common case takes this path: a classic pcap file (not pcapng) in this machine's byte order, version
/// 2.4, with microsecond or nanosecond timestamps, read from a regular file (``FileHeader``); everything else stays
/// with libpcap, which has also checked the file header by the time this reader starts after it. A record is checked as
/// libpcap 1.10 checks it, with its error texts: a capture length over 262,144 bytes (libpcap's maximum for every
/// link type a replay takes) is an error, one over the file's snapshot length is cut to it, and a file that ends
/// inside a record fails. A differential test holds it to libpcap on captures, truncations and odd headers.
final class ClassicPcapRecords {
    /// What ``next()`` found.
    enum Next {
        /// A record: its time (nanoseconds may be negative or past a second, as in the file) and its bytes, valid
        /// until the next call.
        case record(seconds: Int64, nanoseconds: Int64, bytes: UnsafeRawBufferPointer)
        case end
        /// The file cannot be read past here; libpcap's text for the same failure.
        case failure(String)
    }

    /// libpcap's largest capture length for the link types a replay takes (`MAXIMUM_SNAPLEN`).
    static let maximumCaptureLength = 262_144
    static let fileHeaderBytes = 24
    static let recordHeaderBytes = 16
    /// Holds the largest record whole with room to read ahead.
    static let bufferBytes = 1 << 20

    private let descriptor: Int32
    private let snapshotLength: Int
    private let nanosecondFile: Bool
    private let buffer: UnsafeMutableRawPointer
    /// The unread bytes are `buffer[start..<end]`; `fileOffset` is where the next read starts.
    private var start = 0
    private var end = 0
    private var fileOffset: Int64
    private var atEndOfFile = false
    private var readError: Int32?

    /// What the header of a file this reader takes says of its records.
    struct FileHeader {
        /// Whether record times count nanoseconds past the second (otherwise microseconds).
        let nanosecondTimes: Bool

        /// `nil` unless `bytes`, a file's first bytes, start a classic pcap file in this machine's byte order,
        /// version 2.4: a byte-swapped file shows the swapped magic, and goes to libpcap like every other file.
        init?(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count >= ClassicPcapRecords.fileHeaderBytes else { return nil }
            let magic = bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
            let major = bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
            let minor = bytes.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
            guard magic == 0xA1B2_C3D4 || magic == 0xA1B2_3C4D, major == 2, minor == 4 else { return nil }
            nanosecondTimes = magic == 0xA1B2_3C4D
        }
    }

    /// A reader for the file open on `descriptor` whose capture, starting with `header`, starts at `offset`
    /// (standard input may be open past the start of its file); `nil` when libpcap should read it after all.
    /// `snapshotLength` is libpcap's (`pcap_snapshot`), which it adjusts from the header's.
    init?(descriptor: Int32, at offset: Int64, header: FileHeader, snapshotLength: Int32) {
        guard snapshotLength > 0, Int(snapshotLength) <= Self.maximumCaptureLength else { return nil }
        self.descriptor = descriptor
        self.snapshotLength = Int(snapshotLength)
        nanosecondFile = header.nanosecondTimes
        fileOffset = offset + Int64(Self.fileHeaderBytes)
        buffer = .allocate(byteCount: Self.bufferBytes, alignment: 64)
    }

    deinit { buffer.deallocate() }

    /// The file's offset up to which records are consumed, as `ftello` gives it for libpcap's stream.
    var bytesRead: Int64 { fileOffset - Int64(end - start) }

    /// The next record, the end of the file, or why the file cannot be read further.
    @inline(__always)
    func next() -> Next {
        guard fill(Self.recordHeaderBytes) else {
            let available = end - start
            if let readError { return .failure(Self.readFailure(readError)) }
            if available == 0 { return .end }
            return .failure("truncated dump file; tried to read 16 header bytes, only got \(available)")
        }
        let header = UnsafeRawPointer(buffer + start)
        let seconds = Int64(header.loadUnaligned(fromByteOffset: 0, as: Int32.self))
        let fraction = Int64(header.loadUnaligned(fromByteOffset: 4, as: Int32.self))
        let captured = header.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        guard Int(captured) <= Self.maximumCaptureLength else {
            return .failure(
                Int(captured) > snapshotLength
                    ? "invalid packet capture length \(captured), bigger than snaplen of \(snapshotLength)"
                    : "invalid packet capture length \(captured), bigger than maximum of \(Self.maximumCaptureLength)"
            )
        }
        // libpcap keeps the first snapshot-length bytes of a longer record and skips the rest.
        let kept = min(Int(captured), snapshotLength)
        guard fill(Self.recordHeaderBytes + Int(captured)) else {
            if let readError { return .failure(Self.readFailure(readError)) }
            let got = end - start - Self.recordHeaderBytes
            let wanted = got < kept ? kept : Int(captured)
            return .failure("truncated dump file; tried to read \(wanted) captured bytes, only got \(got)")
        }
        let bytes = UnsafeRawBufferPointer(start: buffer + start + Self.recordHeaderBytes, count: kept)
        start += Self.recordHeaderBytes + Int(captured)
        return .record(seconds: seconds, nanoseconds: nanosecondFile ? fraction : fraction &* 1000, bytes: bytes)
    }

    /// Makes at least `count` bytes (at most a record's worth) available from `start`, reading as needed; `false`
    /// when the file ends first or a read fails.
    @inline(__always)
    private func fill(_ count: Int) -> Bool {
        end - start >= count || read(count)
    }

    /// The slow side of ``fill(_:)``: reads until `count` bytes are buffered, the file ends or a read fails.
    private func read(_ count: Int) -> Bool {
        if start + count > Self.bufferBytes {
            // Move the partial record to the front.
            buffer.copyMemory(from: buffer + start, byteCount: end - start)
            end -= start
            start = 0
        }
        while end - start < count && !atEndOfFile && readError == nil {
            let got = pread(descriptor, buffer + end, Self.bufferBytes - end, off_t(fileOffset))
            if got > 0 {
                end += got
                fileOffset += Int64(got)
            } else if got == 0 {
                atEndOfFile = true
            } else if errno != EINTR {
                readError = errno
            }
        }
        return end - start >= count
    }

    private static func readFailure(_ code: Int32) -> String {
        "error reading dump file: \(String(cString: strerror(code)))"
    }
}

/// Used by the one thread that reads its file.
@available(*, unavailable)
extension ClassicPcapRecords: Sendable {}
